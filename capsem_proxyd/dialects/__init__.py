"""Provider API dialects: one module per API, no I/O and no policy logic."""
