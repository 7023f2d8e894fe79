"""The pure state machine of a run: apply one command to mutable state, producing history
events and transfer/timer tasks. No I/O happens here; `engine.history` loads and stores."""
