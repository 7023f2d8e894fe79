"""Cadenza: a Cadence-compatible durable workflow engine.

The public surface is small: the embedded cluster for `cadenza dev` and tests, and the config.
"""
