"""The order of CAPSEM verdicts, written once: the engine combines by it and OpenTelemetry reports by it."""
