"""Masking what a policy finds, byte-exactly, in the body the proxy forwards (no I/O here)."""
