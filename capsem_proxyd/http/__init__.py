"""The HTTP edge: one data plane for every proxied route, the Quart-Trio control plane around it."""
