"""Mutable state and timer tasks written before the decision backoff still decode and run.

The literals were encoded by the code of main at 18538b8 (before `decision_failures`,
`decision_backoff_ns`, `last_decision_failure` and TimerKind.DECISION_BACKOFF existed): a run
whose transient decision (attempt 2) is scheduled, and that decision's timeout timer. A store
upgraded in place holds such rows.
"""

from __future__ import annotations

import base64

from cadence.api.v1 import common_pb2, service_worker_pb2, workflow_pb2

from engine.execution import decisions
from engine.execution.mutation import RunMutation
from engine.model.state import EMPTY_EVENT_ID, decode_state, encode_state
from engine.model.tasks import TimerKind, decode_timer

OLD_STATE = base64.b64decode(
    "3gArqWRvbWFpbl9pZKJkMatkb21haW5fbmFtZaNkb22rd29ya2Zsb3dfaWSid2amcnVuX2lkonIxtmZpcnN0X2V4ZW"
    "N1dGlvbl9ydW5faWSicjGtd29ya2Zsb3dfdHlwZaFUqXRhc2tfbGlzdKJ0bLNleGVjdXRpb25fdGltZW91dF9zPK50"
    "YXNrX3RpbWVvdXRfcwqxY3JlYXRlX3JlcXVlc3RfaWSjcmVxqHN0YXJ0X25zzxeXnP42KgAArGV4ZWN1dGlvbl9uc8"
    "8Xl5z+NioAAKVpbnB1dMCmaGVhZGVyxACkbWVtb8QAsXNlYXJjaF9hdHRyaWJ1dGVzgKZwYXJlbnTArGNsb3NlX3N0"
    "YXR1cwCoY2xvc2VfbnMArmNsb3NlX2V2ZW50X2lkAKtjbG9zZV9ldmVudMQAsGNvbnRpbnVlZF9ydW5faWSgrW5leH"
    "RfZXZlbnRfaWQFtGxhc3RfcHJvY2Vzc2VkX2V2ZW506adhdHRlbXB0AKVyZXRyecCtZXhwaXJhdGlvbl9ucwCtY3Jv"
    "bl9zY2hlZHVsZaCsY3Jvbl9vdmVybGFwALZsYXN0X2NvbXBsZXRpb25fcmVzdWx0wLBhd2FpdGluZ19iYWNrb2ZmwqxzaW"
    "duYWxfY291bnQAsnNpZ25hbF9yZXF1ZXN0X2lkc5CwY2FuY2VsX3JlcXVlc3RlZMKxY2FuY2VsX3JlcXVlc3RfaWSgqGRl"
    "Y2lzaW9uiqtzY2hlZHVsZV9pZAWpdGFza19saXN0onRsqXRpbWVvdXRfcwqsc2NoZWR1bGVkX25zzxeXnP5xxMoAtW9yaW"
    "dpbmFsX3NjaGVkdWxlZF9uc88Xl5z+ccTKAKdhdHRlbXB0AqpzdGFydGVkX2lk6apzdGFydGVkX25zAKpyZXF1ZXN0X2lk"
    "oKhpZGVudGl0eaCqYWN0aXZpdGllc4CmdGltZXJzgKhjaGlsZHJlboCvcmVxdWVzdF9jYW5jZWxzgKtzaWduYWxzX291dI"
    "CoYnVmZmVyZWSQs2NvbXBsZXRlZF9kZWNpc2lvbnMA"
)
OLD_DECISION_TIMEOUT = base64.b64decode(
    "iad0YXNrX2lkB6RraW5kAKdmaXJlX25zzxeXnQDF0K4AqWRvbWFpbl9pZKJkMat3b3JrZmxvd19pZKJ3ZqZydW5faW"
    "SicjGoZXZlbnRfaWQFp2F0dGVtcHQCrHRpbWVvdXRfdHlwZQE="
)
NOW = 1_700_000_002 * 10**9


def test_old_mutable_state_decodes_with_no_failures_and_no_backoff() -> None:
    st = decode_state(OLD_STATE)
    assert (st.workflow_id, st.run_id, st.next_event_id) == ("wf", "r1", 5)
    assert st.decision is not None
    assert (st.decision.schedule_id, st.decision.attempt) == (5, 2)
    assert (st.decision_failures, st.decision_backoff_ns, st.last_decision_failure) == (0, 0, None)
    assert decode_state(encode_state(st)) == st


def test_old_timer_task_decodes() -> None:
    task = decode_timer(OLD_DECISION_TIMEOUT)
    assert task.kind == TimerKind.DECISION_TIMEOUT
    assert (task.event_id, task.attempt, task.timeout_type) == (5, 2, 1)


def test_an_old_run_carries_on_under_the_new_code() -> None:
    """The old run's transient decision starts, times out on its old timer, and fails: the
    failures are counted from there, with nothing held back yet."""
    ids = iter(range(100, 200))
    m = RunMutation(decode_state(OLD_STATE), NOW, lambda: next(ids))
    d = decisions.record_started(m, 5, 2, "req-1", "worker-1")
    assert d.started_id == 6
    timer = decode_timer(OLD_DECISION_TIMEOUT)
    decisions.on_timeout_timer(m, timer)
    st = m.state
    assert st.decision is not None
    assert st.decision.attempt == 3
    assert st.decision.started_id == EMPTY_EVENT_ID
    assert (st.decision_failures, st.decision_backoff_ns) == (1, 0)
    assert st.last_decision_failure is not None
    assert st.last_decision_failure.identity == "worker-1"
    decisions.record_started(m, 5, 3, "req-2", "worker-2")
    decisions.respond_failed(
        m,
        5,
        3,
        service_worker_pb2.RespondDecisionTaskFailedRequest(
            cause=workflow_pb2.DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION,
            details=common_pb2.Payload(data=b"boom"),
        ),
    )
    assert st.decision_failures == 2
    assert m.events == []  # transient attempts write nothing, as before
