"""Persisted and wire models of the engine: commands, tasks, mutable state (msgspec structs)."""
