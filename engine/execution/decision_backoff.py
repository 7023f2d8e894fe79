"""Backoff for a decision that keeps failing: when its retry is dispatched, and what is kept.

Cadence retries a failed or timed-out decision at once as a transient decision (attempt 1,
2, ...). A decider that fails every time (a bad deployment, a non-deterministic change, an
unregistered workflow type) then loops as fast as a worker can poll and fail: 1,866 attempts
in 42 s for one run, each a poll, two commands and a durable timer row (cadence-workflow/cadence
issue 1065 asks for a backoff). Here the retry keeps Cadence's semantics (the same events,
attempt numbers and timeout lengthening) but, after a few consecutive failures of the same
run, it is dispatched only when a DECISION_BACKOFF timer fires.

The curve, after the n-th consecutive failure (`retry_delay_s`):

- n <= IMMEDIATE_RETRIES: no delay. One failure is often a glitch of one worker (a deploy
  half rolled out, a bad cache): the retry goes to the next poller and heals at once.
- then INITIAL_DELAY_S x 2^(n - IMMEDIATE_RETRIES - 1), at most MAX_DELAY_S, less up to
  JITTER of it so the runs of a fleet-wide failure do not retry in lockstep: 1 s, 2 s, 4 s,
  ... 32 s, then 60 s. A broken run costs about ten attempts in its first two minutes and one
  a minute after that, instead of tens a second; a run whose deployment is fixed resumes
  within a minute (a longer cap saves little more load and delays every recovery).

"Consecutive" counts failures and timeouts since the run's last completed decision
(`MutableState.decision_failures`); a new event does not reset it. A new event during a
backoff does not cut it short either: it turns the transient decision into a normal one, as
in Cadence, but that decision is dispatched when the backoff ends. A new event does not
fix a failing decider, and letting each one dispatch at once would let any stream of signals,
timers or activity results drive the loop again, each failure then writing three events.
Terminate closes the run (the timer then finds nothing to do); signals, cancel requests and
queries are accepted as always.

The last failure's cause and details stay in mutable state (`last_decision_failure`) for
describe and diagnose; once a run backs off, each failure is noted on the mutation
(`RunMutation.decision_backoff`) for the shard to log one line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cadence.api.v1 import workflow_pb2

from engine.execution.mutation import RunMutation
from engine.model.state import EMPTY_EVENT_ID, DecisionFailureInfo, DecisionInfo
from engine.model.tasks import TimerKind, TimerTask

# Consecutive failures retried at once (the attempts after the 1st, 2nd and 3rd failure).
IMMEDIATE_RETRIES = 3
# The delay after the first failure that backs off; it doubles with each further failure.
INITIAL_DELAY_S = 1.0
# The longest delay between two attempts.
MAX_DELAY_S = 60.0
# Each delay is shortened by a random fraction up to this (never lengthened: the cap holds).
JITTER = 0.2
# Bytes of the failure details kept in mutable state (a stack trace's head is enough).
MAX_FAILURE_DETAILS = 4096

TIMEOUT_CAUSE = workflow_pb2.DecisionTaskTimedOutCause.Name(
    workflow_pb2.DECISION_TASK_TIMED_OUT_CAUSE_TIMEOUT
)


@dataclass(frozen=True)
class DecisionBackoff:
    """A failed decision whose retry waits: what the shard logs about it."""

    failures: int
    attempt: int
    cause: str
    delay_s: float
    due_ns: int


def retry_delay_s(failures: int) -> float:
    """The nominal delay (before jitter) of the retry after `failures` consecutive failures."""
    if failures <= IMMEDIATE_RETRIES:
        return 0.0
    # The exponent is bounded so a very long failing run cannot overflow the float.
    exponent = min(failures - IMMEDIATE_RETRIES - 1, 30)
    return min(INITIAL_DELAY_S * 2.0**exponent, MAX_DELAY_S)


def cause_name(cause: int) -> str:
    """A DecisionTaskFailedCause's name; a worker may send a value this API does not know."""
    try:
        return workflow_pb2.DecisionTaskFailedCause.Name(cause)
    except ValueError:
        return str(cause)


def record_failure(
    m: RunMutation, d: DecisionInfo, cause: str, details: bytes, identity: str
) -> None:
    """Count the failure of decision `d`, keep its cause, and start a backoff when due.

    Called before the retry is scheduled, so `RunMutation.schedule_decision` sees the backoff
    and holds the retry's dispatch until the DECISION_BACKOFF timer fires.
    """
    st = m.state
    st.decision_failures += 1
    st.last_decision_failure = DecisionFailureInfo(
        cause=cause,
        details=details[:MAX_FAILURE_DETAILS],
        identity=identity,
        attempt=d.attempt,
        time_ns=m.now_ns,
    )
    delay_s = retry_delay_s(st.decision_failures)
    if delay_s <= 0:
        return
    delay_s *= 1.0 - JITTER * random.random()
    m.timer_task(TimerKind.DECISION_BACKOFF, delay_s)
    # The timer's due time names this backoff, so a stale or repeated timer is ignored.
    due_ns = m.timers[-1].fire_ns
    st.decision_backoff_ns = due_ns
    m.decision_backoff = DecisionBackoff(
        failures=st.decision_failures,
        attempt=d.attempt,
        cause=cause,
        delay_s=delay_s,
        due_ns=due_ns,
    )


def reset(m: RunMutation) -> None:
    """A decision completed: the next failure starts the curve again."""
    m.state.decision_failures = 0


def on_backoff_timer(m: RunMutation, task: TimerTask) -> None:
    """The backoff is over: dispatch the pending decision (transient or, after a new event,
    normal), scheduled as of now."""
    st = m.state
    if not st.is_open or st.decision_backoff_ns == 0 or task.fire_ns != st.decision_backoff_ns:
        return
    st.decision_backoff_ns = 0
    d = st.decision
    if d is None or d.started_id != EMPTY_EVENT_ID:
        # Nothing waits (the backoff always holds a scheduled decision; kept defensive).
        return
    d.scheduled_ns = m.now_ns
    m.dispatch_decision(d)
