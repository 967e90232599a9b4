"""Allow ``python -m capsem_proxyd``."""

from capsem_proxyd.daemon.cli import main

if __name__ == "__main__":
    main()
