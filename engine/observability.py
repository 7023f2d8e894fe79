"""Logging setup (structlog), configured once by the CLI: console for dev, JSON for serve."""

from __future__ import annotations

import logging
import os

import structlog


def configure_logging(json: bool = False) -> None:
    level = getattr(logging, os.environ.get("CADENZA_LOG_LEVEL", "INFO").upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    # The drivers narrate every connection and group join at INFO; their warnings still show.
    for noisy in ("aiokafka", "cassandra", "kafka"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
