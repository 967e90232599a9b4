"""What the proxy tells operators: logs, metrics, the audit log, and the recorders that feed them."""
