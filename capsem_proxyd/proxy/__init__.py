"""One proxied request: the pipeline, the stream pump, the upstream client and the limits."""
