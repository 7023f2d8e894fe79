"""Scenario logic without a server: payload codec, protocol deciders, history analyses."""

from __future__ import annotations

from typing import Any

import pytest
from cadence.api.v1 import common_pb2, history_pb2
from cadence.data_converter import DefaultDataConverter
from google.protobuf import duration_pb2, timestamp_pb2

from load import codec
from load.config import RunConfig, ScenarioParams
from load.result import Execution
from load.runner import Run
from load.scenarios import SCENARIOS
from load.scenarios.base import DecisionTask, kind
from load.scenarios.signals import _processed

# -- codec -------------------------------------------------------------------------------------


def test_codec_matches_the_official_clients_default_converter() -> None:
    args: list[Any] = ["m1", 3, [1, 2], {"k": 1.5}]
    assert codec.decode(DefaultDataConverter().to_data(args).data) == args
    assert (
        DefaultDataConverter().from_data(
            common_pb2.Payload(data=codec.encode(args)), [str, int, list, dict]
        )
        == args
    )
    assert codec.decode(b"") == []


# -- history builders --------------------------------------------------------------------------

T0 = 1_700_000_000.0


def ev(event_id: int, at: float, **attrs: Any) -> history_pb2.HistoryEvent:
    e = history_pb2.HistoryEvent(event_id=event_id, **attrs)
    e.event_time.CopyFrom(timestamp_pb2.Timestamp(seconds=int(at), nanos=round(at % 1 * 1e9)))
    return e


def started(args: list[Any]) -> history_pb2.HistoryEvent:
    return ev(
        1,
        T0,
        workflow_execution_started_event_attributes=history_pb2.WorkflowExecutionStartedEventAttributes(
            input=common_pb2.Payload(data=codec.encode(args))
        ),
    )


def decision(event_id: int, at: float, what: str) -> history_pb2.HistoryEvent:
    attrs = {
        "scheduled": history_pb2.DecisionTaskScheduledEventAttributes(),
        "started": history_pb2.DecisionTaskStartedEventAttributes(),
        "completed": history_pb2.DecisionTaskCompletedEventAttributes(),
        "failed": history_pb2.DecisionTaskFailedEventAttributes(),
    }[what]
    return ev(event_id, at, **{f"decision_task_{what}_event_attributes": attrs})


def signaled(event_id: int, at: float, sent_at: float) -> history_pb2.HistoryEvent:
    return ev(
        event_id,
        at,
        workflow_execution_signaled_event_attributes=history_pb2.WorkflowExecutionSignaledEventAttributes(
            signal_name="tick", input=common_pb2.Payload(data=codec.encode([sent_at]))
        ),
    )


def scenario(name: str, **params: int) -> Any:
    return SCENARIOS[name](RunConfig(scenario=name, workflows=3, params=ScenarioParams(**params)))


def task(name: str, events: list[history_pb2.HistoryEvent], wf_type: str = "") -> DecisionTask:
    s = SCENARIOS[name]
    return DecisionTask(
        workflow_type=wf_type or s.workflow_type,
        workflow_id="wf",
        task_list="tl",
        args=codec.decode(events[0].workflow_execution_started_event_attributes.input.data),
        events=events,
    )


# -- protocol deciders -------------------------------------------------------------------------


def test_w1_decider_schedules_the_echo_then_completes_with_its_result() -> None:
    w1 = scenario("w1")
    history = [started(["m7"]), decision(2, T0, "scheduled"), decision(3, T0, "started")]
    [first] = w1.decide(task("w1", history))
    attrs = first.schedule_activity_task_decision_attributes
    assert (attrs.activity_type.name, attrs.task_list.name, attrs.input.data) == (
        "w1_echo",
        "tl",
        b'"m7"',
    )
    done = ev(
        7,
        T0,
        activity_task_completed_event_attributes=history_pb2.ActivityTaskCompletedEventAttributes(
            result=common_pb2.Payload(data=b'"m7"'), scheduled_event_id=5
        ),
    )
    [last] = w1.decide(task("w1", [*history, done]))
    assert last.complete_workflow_execution_decision_attributes.result.data == b'"m7"'


def test_w4_decider_schedules_all_at_once_then_waits_then_completes() -> None:
    w4 = scenario("w4", activities=3)
    history = [started([3])]
    decisions = w4.decide(task("w4", history))
    assert [d.schedule_activity_task_decision_attributes.activity_id for d in decisions] == [
        "a0",
        "a1",
        "a2",
    ]
    scheduled = [
        ev(
            5 + i,
            T0,
            activity_task_scheduled_event_attributes=history_pb2.ActivityTaskScheduledEventAttributes(),
        )
        for i in range(3)
    ]
    completed = [
        ev(
            8 + i,
            T0,
            activity_task_completed_event_attributes=history_pb2.ActivityTaskCompletedEventAttributes(
                scheduled_event_id=5 + i
            ),
        )
        for i in range(3)
    ]
    assert w4.decide(task("w4", [*history, *scheduled, *completed[:2]])) == []
    [last] = w4.decide(task("w4", [*history, *scheduled, *completed]))
    assert last.complete_workflow_execution_decision_attributes.result.data == b"3"


def test_w5_decider_starts_children_under_the_parents_prefix() -> None:
    w5 = scenario("w5", children=2)
    decisions = w5.decide(task("w5", [started([2, "parent-9"])]))
    children = [d.start_child_workflow_execution_decision_attributes for d in decisions]
    assert [(c.workflow_id, c.workflow_type.name) for c in children] == [
        ("parent-9-c0", "W5Child"),
        ("parent-9-c1", "W5Child"),
    ]
    [child_done] = w5.decide(task("w5", [started([1])], wf_type="W5Child"))
    assert child_done.complete_workflow_execution_decision_attributes.result.data == b"1"


def test_w3_decider_completes_once_its_share_arrived() -> None:
    w3 = scenario("w3")
    history = [started([2]), signaled(2, T0, T0)]
    assert w3.decide(task("w3", history)) == []
    [last] = w3.decide(task("w3", [*history, signaled(3, T0, T0)]))
    assert last.complete_workflow_execution_decision_attributes.result.data == b"2"


def test_w3_shares_add_up_to_the_signals_sent() -> None:
    w3 = scenario("w3", signals=10)  # 3 workflows
    assert [w3.share(i) for i in range(3)] == [4, 3, 3]


def test_w2_timers_are_drawn_from_the_seed_within_bounds() -> None:
    a, b = (
        scenario("w2", timer_min_s=2, timer_max_s=4),
        scenario("w2", timer_min_s=2, timer_max_s=4),
    )
    assert a.durations == b.durations
    assert all(2 <= d <= 4 for d in a.durations)
    [d] = a.decide(task("w2", [started([3])]))
    assert d.start_timer_decision_attributes.start_to_fire_timeout.seconds == 3


# -- analyses ----------------------------------------------------------------------------------


def _run(name: str) -> Run:
    s = scenario(name)
    run = Run(s.config, s, driver=None, task_list="tl", board=None)  # type: ignore[arg-type]
    run.elapsed_s = 10.0
    return run


def test_w2_lateness_is_fire_time_minus_due_time() -> None:
    history = [
        started([2]),
        ev(
            5,
            T0 + 0.1,
            timer_started_event_attributes=history_pb2.TimerStartedEventAttributes(
                timer_id="sleep", start_to_fire_timeout=duration_pb2.Duration(seconds=2)
            ),
        ),
        ev(6, T0 + 2.125, timer_fired_event_attributes=history_pb2.TimerFiredEventAttributes()),
        decision(7, T0 + 2.13, "scheduled"),
        decision(8, T0 + 2.2, "started"),
    ]
    run = _run("w2")
    analysis = run.scenario.analyze([history], run)
    assert analysis.counts == {"timers fired": 1}
    assert analysis.latencies_ms["timer fired late"] == [pytest.approx(25.0, abs=0.01)]
    assert analysis.latencies_ms["decision after fire late"] == [pytest.approx(100.0, abs=0.01)]
    assert analysis.event_times["timers fired"] == [pytest.approx(T0 + 2.125)]


def test_signal_is_processed_by_the_first_decision_started_after_it() -> None:
    history = [
        started([3]),
        decision(2, T0, "scheduled"),
        signaled(3, T0 + 1.0, sent_at=T0 + 0.9),
        decision(4, T0 + 1.1, "started"),  # takes signal 3
        signaled(5, T0 + 1.2, sent_at=T0 + 1.15),  # arrives during the task: next one's
        decision(6, T0 + 1.3, "completed"),
        decision(7, T0 + 1.3, "scheduled"),
        decision(8, T0 + 1.4, "started"),  # takes signal 5 ...
        decision(9, T0 + 1.5, "failed"),  # ... but fails: it goes back
        signaled(10, T0 + 1.6, sent_at=T0 + 1.55),
        decision(11, T0 + 1.7, "scheduled"),
        decision(12, T0 + 1.8, "started"),
        decision(13, T0 + 2.0, "completed"),
    ]
    pairs = _processed(history)
    assert [(round(s - T0, 2), round(d - T0, 2)) for s, d in pairs] == [
        (0.9, 1.3),
        (1.15, 2.0),
        (1.55, 2.0),
    ]
    run = _run("w3")
    run.sent_signals = 3
    run.marks = {"signals begin": T0 + 0.9, "signals sent": T0 + 1.6}
    analysis = run.scenario.analyze([history], run)
    assert analysis.counts == {"signals sent": 3, "signals received": 3, "signals processed": 3}
    assert analysis.rates["signals sent"] == pytest.approx(3 / 0.7)
    assert analysis.rates["signals processed"] == pytest.approx(3 / 1.1)
    assert sorted(round(v) for v in analysis.latencies_ms["signal sent→processed"]) == [
        400,
        450,
        850,
    ]


def test_w5_lists_children_for_checking_and_times_them() -> None:
    w5 = scenario("w5")
    initiated = ev(
        5,
        T0 + 0.1,
        start_child_workflow_execution_initiated_event_attributes=(
            history_pb2.StartChildWorkflowExecutionInitiatedEventAttributes(workflow_id="p-c0")
        ),
    )
    child = common_pb2.WorkflowExecution(workflow_id="p-c0", run_id="r0")
    history = [
        started([1, "p"]),
        initiated,
        ev(
            6,
            T0 + 0.2,
            child_workflow_execution_started_event_attributes=(
                history_pb2.ChildWorkflowExecutionStartedEventAttributes(
                    workflow_execution=child, initiated_event_id=5
                )
            ),
        ),
        ev(
            9,
            T0 + 0.35,
            child_workflow_execution_completed_event_attributes=(
                history_pb2.ChildWorkflowExecutionCompletedEventAttributes(
                    workflow_execution=child, initiated_event_id=5
                )
            ),
        ),
    ]
    assert w5.related(history) == [Execution("p-c0", "r0")]
    run = _run("w5")
    analysis = w5.analyze([history], run)
    assert analysis.counts == {"children completed": 1}
    assert analysis.latencies_ms["child initiated→completed"] == [pytest.approx(250.0, abs=0.01)]
    assert analysis.rates == {"children": 0.1}
    assert kind(history[-1]) == "child_workflow_execution_completed_event_attributes"
