"""Range checks on every number, time and enum value of a request, driven by its descriptor.

`validation.py` checks what Cadence checks, field by field, in Cadence's words. What a list of
fields cannot keep up with is the rest of each class: a Duration whose nanos have the wrong
sign, a Timestamp in year 10000, a NaN or an infinity in any float, an enum number the server
does not know, a negative count. `check_values` walks a whole request (nested messages,
repeated fields, maps) and refuses the first such value with BadRequestError naming its path,
e.g. `decisions[2].start_child_workflow_execution_decision_attributes.parent_close_policy`.
The validators call it last, so a value Cadence itself checks gets Cadence's message first.

It also clamps. A Duration longer than MAX_DURATION_SECONDS (2**31 - 1 s, about 68 years,
the widest value Cadence's int32-second fields hold) is shortened to that, in place, before
the request is recorded: a 1,000-year timeout means "practically never", and what the engine
derives from it (deadlines in int64 nanoseconds, history events other clients read as int32
seconds) stays representable. Temporal caps timers at 100 years for the same reason, and
clamps rather than refuses so that workflows using such values keep running.

Which fields may be negative at all is decided here once: no Duration, count, rate or
coefficient of the API is meaningfully negative; `failover_version` (a cluster version number)
is the one integer exempt.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from engine.errors import BadRequestError, quote
from engine.execution.protos import MAX_DURATION_SECONDS, NS

__all__ = ["check_values"]

# The Duration and Timestamp ranges google.protobuf defines (duration.proto, timestamp.proto):
# +-10,000 years, and 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_DURATION_MAX_SECONDS: Final = 315_576_000_000
_TIMESTAMP_MIN_SECONDS: Final = -62_135_596_800
_TIMESTAMP_MAX_SECONDS: Final = 253_402_300_799

# Integer fields that may legitimately hold negative values.
_SIGNED_INTS: Final = frozenset({"failover_version"})

# A map key or anything else user-supplied shown in a path is cut to this many characters.
_KEY_SHOWN: Final = 40

_F = FieldDescriptor
_INTS: Final = frozenset(
    {
        _F.TYPE_INT32,
        _F.TYPE_INT64,
        _F.TYPE_SINT32,
        _F.TYPE_SINT64,
        _F.TYPE_SFIXED32,
        _F.TYPE_SFIXED64,
    }
)
_FLOATS: Final = frozenset({_F.TYPE_DOUBLE, _F.TYPE_FLOAT})
_DURATION: Final = duration_pb2.Duration.DESCRIPTOR.full_name
_TIMESTAMP: Final = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
# google.protobuf.DoubleValue and friends: shown by their field's name, without ".value".
_WRAPPER_PREFIX: Final = "google.protobuf."


@dataclass(frozen=True, slots=True)
class _Field:
    """How one field of a message type is checked."""

    name: str
    check: str  # duration | timestamp | float | int | enum | message
    repeated: bool
    is_map: bool
    enum_numbers: frozenset[int] = frozenset()
    # For message fields (and map values): the field type's descriptor.
    message: Descriptor | None = None
    signed: bool = False
    wrapper: bool = False


def _field_check(fd: FieldDescriptor) -> _Field | None:
    repeated = fd.is_repeated
    if fd.message_type is not None:
        mt = fd.message_type
        if mt.GetOptions().map_entry:
            value_fd = mt.fields_by_name["value"]
            inner = _field_check(value_fd)
            if inner is None:
                return None
            return _Field(
                fd.name,
                inner.check,
                repeated=False,
                is_map=True,
                enum_numbers=inner.enum_numbers,
                message=inner.message,
            )
        if mt.full_name == _DURATION:
            return _Field(fd.name, "duration", repeated, False)
        if mt.full_name == _TIMESTAMP:
            return _Field(fd.name, "timestamp", repeated, False)
        # A type met again while its own plan is being made (a recursive message) is walked
        # lazily; any other type is walked only if it leads to a value with a range.
        if mt.full_name not in _planning and not _plan(mt):
            return None
        wrapper = mt.full_name.startswith(_WRAPPER_PREFIX) and mt.full_name.endswith("Value")
        return _Field(fd.name, "message", repeated, False, message=mt, wrapper=wrapper)
    if fd.enum_type is not None:
        numbers = frozenset(v.number for v in fd.enum_type.values)
        return _Field(fd.name, "enum", repeated, False, enum_numbers=numbers)
    if fd.type in _FLOATS:
        return _Field(fd.name, "float", repeated, False)
    if fd.type in _INTS:
        return _Field(fd.name, "int", repeated, False, signed=fd.name in _SIGNED_INTS)
    return None


_planning: set[str] = set()


@functools.cache
def _plan(desc: Descriptor) -> dict[str, _Field]:
    """The fields of `desc` that hold (or lead to) a value with a range."""
    _planning.add(desc.full_name)
    try:
        plan: dict[str, _Field] = {}
        for fd in desc.fields:
            check = _field_check(fd)
            if check is not None:
                plan[fd.name] = check
        return plan
    finally:
        _planning.discard(desc.full_name)


class _Walker:
    def __init__(self, negatives: bool) -> None:
        self.negatives = negatives

    def message(self, msg: Message, path: str, wrapper: bool = False) -> None:
        plan = _plan(msg.DESCRIPTOR)
        if not plan:
            return
        for fd, value in msg.ListFields():
            spec = plan.get(fd.name)
            if spec is None:
                continue
            # A wrapper's value is named by the wrapper's field (`max_tasks_per_second`).
            where = path if wrapper else f"{path}.{fd.name}" if path else fd.name
            if spec.is_map:
                for key in value:
                    self.one(spec, value[key], f"{where}[{quote(repr(key), _KEY_SHOWN)}]")
            elif spec.repeated:
                for i, item in enumerate(value):
                    self.one(spec, item, f"{where}[{i}]")
            else:
                self.one(spec, value, where)

    # Any: a field's value as ListFields gives it, of the kind `spec.check` names.
    def one(self, spec: _Field, value: Any, where: str) -> None:
        check = spec.check
        if check == "message":
            self.message(value, where, spec.wrapper)
        elif check == "duration":
            self.duration(value, where)
        elif check == "timestamp":
            _timestamp(value, where)
        elif check == "enum":
            if value not in spec.enum_numbers:
                raise BadRequestError(f"Invalid {where}: {value} is not a known value.")
        elif check == "float":
            if not math.isfinite(value):
                raise BadRequestError(f"{where} must be a finite number.")
            if value < 0 and self.negatives:
                raise BadRequestError(f"{where} cannot be negative.")
        elif check == "int" and value < 0 and self.negatives and not spec.signed:
            raise BadRequestError(f"{where} cannot be negative.")

    def duration(self, d: duration_pb2.Duration, where: str) -> None:
        seconds, nanos = d.seconds, d.nanos
        if (
            abs(seconds) > _DURATION_MAX_SECONDS
            or not -NS < nanos < NS
            or (seconds > 0 and nanos < 0)
            or (seconds < 0 and nanos > 0)
        ):
            raise BadRequestError(f"{where} is not a valid duration.")
        if seconds < 0 or nanos < 0:
            if self.negatives:
                raise BadRequestError(f"{where} cannot be negative.")
            return
        if seconds >= MAX_DURATION_SECONDS:
            d.seconds = MAX_DURATION_SECONDS
            d.nanos = 0


def _timestamp(t: timestamp_pb2.Timestamp, where: str) -> None:
    if not _TIMESTAMP_MIN_SECONDS <= t.seconds <= _TIMESTAMP_MAX_SECONDS or not 0 <= t.nanos < NS:
        raise BadRequestError(
            f"{where} is not a valid timestamp (years 1 to 9999, nanos 0 to 999999999)."
        )


def check_values(request: Message, *, negatives: bool = True) -> None:
    """Refuse the first out-of-range value in `request` (see the module doc); clamp Durations
    longer than MAX_DURATION_SECONDS in place.

    `negatives=False` lets negative Durations and numbers through: the decisions of
    RespondDecisionTaskCompleted are checked by the history service, which fails the decision
    task with the decision's cause, as Cadence does, instead of refusing the call.
    """
    _Walker(negatives).message(request, "")
