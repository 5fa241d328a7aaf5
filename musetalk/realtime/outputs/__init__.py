"""Outputs: what carries a session's frames to a viewer or a file. They depend on the engine, never the
other way."""
