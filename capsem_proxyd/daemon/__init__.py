"""The process: command line, launcher, worker processes, the Hypercorn server and systemd notify."""
