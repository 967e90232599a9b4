"""The process: command line, launcher, worker processes, the Hypercorn server and systemd notify."""

from capsem_proxyd._compat.httpx_cli import skip_command_line

skip_command_line()  # before any module of the daemon imports httpx (see _compat/httpx_cli.py)
