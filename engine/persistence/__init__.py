"""State of record: store protocols, their records, and the backend factory."""
