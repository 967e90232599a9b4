"""How a proxied request or stream ended: one closed set of names, shared by the pump, the request log and the metrics."""
