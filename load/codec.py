"""Payload encoding shared by the raw-protocol driver and the history analyses.

The official client's default data converter writes each argument as JSON and separates
them with a space. The protocol driver writes the same format, so a history looks alike
whichever driver produced it and one decoder reads the inputs of both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_DECODER = json.JSONDecoder()


def encode(args: Sequence[Any]) -> bytes:
    """Arguments as space-separated JSON values (the Cadence client's default format)."""
    return " ".join(json.dumps(a, separators=(",", ":")) for a in args).encode()


def decode(data: bytes) -> list[Any]:
    """Every JSON value in `data`, in order; an empty payload has none."""
    text = data.decode()
    values: list[Any] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        value, pos = _DECODER.raw_decode(text, pos)
        values.append(value)
    return values
