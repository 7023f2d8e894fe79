"""Drivers: who plays the worker and the caller in a run (see `load.drivers.base`)."""

from __future__ import annotations

from load.config import RunConfig
from load.drivers.base import Driver


def make_driver(config: RunConfig) -> Driver:
    """The driver `config.driver` names, connected to `config.target`."""
    if config.driver == "client":
        from load.drivers.client import ClientDriver

        return ClientDriver(config)
    from load.drivers.protocol import ProtocolDriver

    return ProtocolDriver(config)


__all__ = ["Driver", "make_driver"]
