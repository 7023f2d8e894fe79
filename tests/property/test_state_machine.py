"""Property tests of the mutable-state machine, driven through the real shard engine.

Hypothesis draws random command streams, built the way the frontend and the workers build
them (starts, signals, cancels, terminations, decision and activity polls and responses with
random, sometimes invalid decisions, timer firings in any order and at any time, stale and
duplicate ones, duplicate deliveries, shard restarts), and feeds them to a `ShardEngine` on a
SQLite store in random group-commit batches (tests/property/driver.py). After every batch each
run is read back and must be a legal history (`check_history`) whose mutable state agrees with
it, and every reply must agree with what the runs recorded.

Also: the shard hash is stable and matches Cadence's test vectors, commands, tasks and mutable
state round-trip through their msgspec codecs, and replaying a record stream on a fresh store
gives the same histories, states and replies (determinism).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
    workflow_pb2,
)
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from engine.frontend.tokens import TaskToken, encode_task_token
from engine.ids import shard_for
from engine.model.commands import (
    Command,
    CommandKind,
    Reply,
    decode_command,
    decode_reply,
    encode_command,
    encode_reply,
)
from engine.model.state import (
    EMPTY_EVENT_ID,
    ActivityInfo,
    DecisionFailureInfo,
    DecisionInfo,
    ExternalRequestInfo,
    MutableState,
    ParentInfo,
    RetryPolicyState,
    TimerInfo,
    decode_state,
    encode_state,
)
from engine.model.tasks import (
    DispatchTask,
    TimerKind,
    TimerTask,
    TransferKind,
    TransferTask,
    decode_dispatch,
    decode_timer,
    decode_transfer,
    encode_dispatch,
    encode_task,
)
from tests.property.driver import (
    DOMAIN,
    DOMAIN_ID,
    SHARD_ID,
    TASK_LIST,
    ShardDriver,
    Step,
    check_shard,
    read_runs,
    regroup,
    replay,
    uuid_for,
)

WORKFLOW_IDS = ["wf-a", "wf-b", "wf-c"]
# Unset (the default) most often; TERMINATE_IF_RUNNING rarely, it cuts runs short.
REUSE_POLICIES: list[Any] = [
    0,
    0,
    0,
    workflow_pb2.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
    workflow_pb2.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
    workflow_pb2.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
    workflow_pb2.WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING,
]
# Children are started by decisions only; they live in the same shard (one engine here).
CHILD_IDS = ["child-x", "child-y"]
ALL_IDS = WORKFLOW_IDS + CHILD_IDS
ACTIVITY_IDS = ["a0", "a1", "a2"]
TIMER_IDS = ["t0", "t1", "t2"]

STATE_MACHINE = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def dur(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


def execution(workflow_id: str, run_id: str = "") -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=workflow_id, run_id=run_id)


# -- decisions: valid and invalid ----------------------------------------------------------------

# (decision, statically invalid): an invalid decision must fail the whole decision task.
DecisionCase = tuple[decision_pb2.Decision, bool]

RETRY_POLICIES = st.sampled_from(
    [
        None,
        common_pb2.RetryPolicy(
            initial_interval=dur(1),
            backoff_coefficient=2.0,
            maximum_attempts=3,
            non_retryable_error_reasons=["fatal"],
        ),
        common_pb2.RetryPolicy(
            initial_interval=dur(1),
            backoff_coefficient=2.0,
            maximum_attempts=3,
            non_retryable_error_reasons=["fatal"],
        ),
        common_pb2.RetryPolicy(
            initial_interval=dur(2), backoff_coefficient=1.5, expiration_interval=dur(20)
        ),
    ]
)
INVALID_RETRY = common_pb2.RetryPolicy(initial_interval=dur(0), maximum_attempts=3)


# About one decision in eight is broken on purpose, in one field.
BROKEN = st.integers(0, 7).map(lambda n: n == 0)


@st.composite
def schedule_activity(draw: st.DrawFn) -> DecisionCase:
    broken = draw(BROKEN)
    flaw = draw(st.sampled_from(["id", "type", "timeouts", "retry"])) if broken else ""
    s2c, s2s, st2c = (
        (0, draw(st.sampled_from([0, 5])), 0)
        if flaw == "timeouts"
        else draw(st.sampled_from([(20, 0, 0), (0, 5, 10), (30, 3, 5), (10, 10, 10), (3, 1, 1)]))
    )
    a = decision_pb2.ScheduleActivityTaskDecisionAttributes(
        activity_id="" if flaw == "id" else draw(st.sampled_from(ACTIVITY_IDS)),
        activity_type=common_pb2.ActivityType(name="" if flaw == "type" else "act"),
        task_list=tasklist_pb2.TaskList(name=TASK_LIST),
        input=common_pb2.Payload(data=b"in"),
        schedule_to_close_timeout=dur(s2c),
        schedule_to_start_timeout=dur(s2s),
        start_to_close_timeout=dur(st2c),
        heartbeat_timeout=dur(draw(st.sampled_from([0, 0, 2]))),
        retry_policy=INVALID_RETRY if flaw == "retry" else draw(RETRY_POLICIES),
    )
    return decision_pb2.Decision(schedule_activity_task_decision_attributes=a), broken


def _case(invalid: bool = False, **attrs: Any) -> DecisionCase:
    return decision_pb2.Decision(**attrs), invalid


@st.composite
def start_timer(draw: st.DrawFn) -> DecisionCase:
    broken = draw(BROKEN)
    timer_id = draw(st.sampled_from(TIMER_IDS))
    fire_s = draw(st.sampled_from([1, 4, 30]))
    if broken:
        timer_id, fire_s = draw(st.sampled_from([("", fire_s), (timer_id, 0)]))
    a = decision_pb2.StartTimerDecisionAttributes(
        timer_id=timer_id, start_to_fire_timeout=dur(fire_s)
    )
    return _case(broken, start_timer_decision_attributes=a)


@st.composite
def other_workflow(draw: st.DrawFn) -> DecisionCase:
    """Signal or cancel another workflow (results are simulated from the transfer tasks)."""
    broken = draw(BROKEN)
    wf = "" if broken else draw(st.sampled_from(WORKFLOW_IDS))
    if draw(st.booleans()):
        a = decision_pb2.SignalExternalWorkflowExecutionDecisionAttributes(
            domain=DOMAIN, workflow_execution=execution(wf), signal_name="sig"
        )
        return _case(broken, signal_external_workflow_execution_decision_attributes=a)
    c = decision_pb2.RequestCancelExternalWorkflowExecutionDecisionAttributes(
        domain=DOMAIN, workflow_execution=execution(wf)
    )
    return _case(broken, request_cancel_external_workflow_execution_decision_attributes=c)


PARENT_CLOSE_POLICIES: st.SearchStrategy[Any] = st.sampled_from(
    list(workflow_pb2.ParentClosePolicy.values())
)


@st.composite
def start_child(draw: st.DrawFn) -> DecisionCase:
    broken = draw(BROKEN)
    a = decision_pb2.StartChildWorkflowExecutionDecisionAttributes(
        domain=DOMAIN,
        workflow_id="" if broken else draw(st.sampled_from(CHILD_IDS)),
        workflow_type=common_pb2.WorkflowType(name="child"),
        task_list=tasklist_pb2.TaskList(name=TASK_LIST),
        input=common_pb2.Payload(data=b"c"),
        parent_close_policy=draw(PARENT_CLOSE_POLICIES),
        workflow_id_reuse_policy=draw(st.sampled_from(REUSE_POLICIES)),
    )
    return _case(broken, start_child_workflow_execution_decision_attributes=a)


CLOSE_DECISIONS: st.SearchStrategy[DecisionCase] = st.sampled_from(
    [
        _case(
            complete_workflow_execution_decision_attributes=(
                decision_pb2.CompleteWorkflowExecutionDecisionAttributes(
                    result=common_pb2.Payload(data=b"done")
                )
            )
        ),
        *(
            _case(
                fail_workflow_execution_decision_attributes=(
                    decision_pb2.FailWorkflowExecutionDecisionAttributes(
                        failure=common_pb2.Failure(reason=reason, details=b"d")
                    )
                )
            )
            for reason in ("boom", "fatal")
        ),
        _case(
            cancel_workflow_execution_decision_attributes=(
                decision_pb2.CancelWorkflowExecutionDecisionAttributes(
                    details=common_pb2.Payload(data=b"c")
                )
            )
        ),
        *(
            _case(
                continue_as_new_workflow_execution_decision_attributes=(
                    decision_pb2.ContinueAsNewWorkflowExecutionDecisionAttributes(
                        workflow_type=common_pb2.WorkflowType(name="wt"),
                        task_list=tasklist_pb2.TaskList(name=TASK_LIST),
                        input=common_pb2.Payload(data=b"again"),
                        backoff_start_interval=dur(backoff),
                    )
                )
            )
            for backoff in (0, 3)
        ),
    ]
)

DECISIONS: st.SearchStrategy[DecisionCase] = st.one_of(
    schedule_activity(),
    schedule_activity(),
    schedule_activity(),
    schedule_activity(),
    schedule_activity(),
    start_timer(),
    start_timer(),
    st.sampled_from(ACTIVITY_IDS).map(
        lambda i: _case(
            request_cancel_activity_task_decision_attributes=(
                decision_pb2.RequestCancelActivityTaskDecisionAttributes(activity_id=i)
            )
        )
    ),
    st.sampled_from(TIMER_IDS).map(
        lambda i: _case(
            cancel_timer_decision_attributes=decision_pb2.CancelTimerDecisionAttributes(timer_id=i)
        )
    ),
    st.tuples(BROKEN, st.sampled_from(["CustomKeywordField", "CustomIntField"])).map(
        lambda t: _case(
            t[0],
            upsert_workflow_search_attributes_decision_attributes=(
                decision_pb2.UpsertWorkflowSearchAttributesDecisionAttributes(
                    search_attributes=common_pb2.SearchAttributes(
                        indexed_fields={
                            "NotAllowedKey" if t[0] else t[1]: common_pb2.Payload(data=b"1")
                        }
                    )
                )
            ),
        )
    ),
    st.sampled_from(["marker", "marker", "marker", "", None]).map(
        lambda name: (
            _case(True)  # a decision without attributes
            if name is None
            else _case(
                not name,
                record_marker_decision_attributes=decision_pb2.RecordMarkerDecisionAttributes(
                    marker_name=name, details=common_pb2.Payload(data=b"m")
                ),
            )
        )
    ),
    other_workflow(),
    start_child(),
    CLOSE_DECISIONS,
)


def _is_close(decision: decision_pb2.Decision) -> bool:
    return decision.WhichOneof("attributes") in (
        "complete_workflow_execution_decision_attributes",
        "fail_workflow_execution_decision_attributes",
        "cancel_workflow_execution_decision_attributes",
        "continue_as_new_workflow_execution_decision_attributes",
    )


# -- the client side: commands built the way the frontend builds them ----------------------------


class Scenario:
    """A random client, workers and timer processor in front of one shard engine.

    Ids, tokens and tasks come from what the shard answered and produced, as they would reach
    real clients through replies, matching and the timer topic; many are stale on purpose.
    """

    def __init__(
        self, driver: ShardDriver, data: st.DataObject, broken_decider: bool | None = None
    ) -> None:
        self.d = driver
        self.data = data
        self.n_requests = 0
        self.seen = 0
        self.starts: list[bytes] = []
        self.signal_requests: list[str] = []
        self.cancel_requests: list[str] = []
        self.runs: list[tuple[str, str]] = []
        self.decision_tokens: list[TaskToken] = []
        self.decision_polls: list[bytes] = []
        self.activity_tokens: list[TaskToken] = []
        self.activity_polls: list[bytes] = []
        # Tasks handed to a poller and tokens answered (see `pick`).
        self.used: set[Any] = set()
        self.live: dict[str, list[Any]] = {}
        # Sometimes the decider is broken until the wind-down: runs fail decisions in a row
        # into a decision backoff (engine/execution/decision_backoff.py).
        self.broken_decider: bool = (
            self.draw(st.booleans(), "broken decider") if broken_decider is None else broken_decider
        )

    def draw(self, strategy: st.SearchStrategy[Any], label: str) -> Any:
        return self.data.draw(strategy, label=label)

    def request_id(self) -> str:
        self.n_requests += 1
        return uuid_for(self.n_requests, tag=0xC)

    def identity(self) -> str:
        return f"rec-{self.d.next_offset}"

    async def survey(self) -> None:
        """What the shard would accept now, from its stored state: matching drops most stale
        tasks, and workers mostly answer live tokens (see `pick`)."""
        states: dict[tuple[str, str], MutableState | None] = {}
        self.live = {}
        for label, items in (
            ("decision-task", self.d.decision_tasks),
            ("decision-token", self.decision_tokens),
            ("activity-task", self.d.activity_tasks),
            ("activity-token", self.activity_tokens),
            ("timer", self.d.timers),
        ):
            live = []
            for item in items:
                run = (item.workflow_id, item.run_id)
                if run not in states:
                    snap = await self.d.store.get_run(SHARD_ID, DOMAIN_ID, *run)
                    states[run] = None if snap is None else decode_state(snap.state)
                if _key(item) not in self.used and _is_live(item, states[run]):
                    live.append(item)
            self.live[label] = live

    def weight(self, label: str, items: list[Any], weight: int) -> int:
        return weight if self.live[label] else min(1, len(items))

    def pick(self, items: list[Any], label: str, *, use: bool = True) -> Any:
        """Mostly a live, unused item (matching hands a task out once, a worker answers its
        token once), sometimes any: a duplicate or a stale one."""
        live = self.live[label]
        if live and self.draw(st.integers(0, 5), f"{label}-any") > 0:
            # Now and then children first, so that some finish while their parent runs.
            children = [item for item in live if item.workflow_id in CHILD_IDS]
            if children and self.draw(st.integers(0, 2), f"{label}-child") == 0:
                live = children
            item = self.draw(st.sampled_from(live), label)
            if use:
                self.used.add(_key(item))
            return item
        return self.draw(st.sampled_from(items), label)

    def target(self) -> tuple[str, str]:
        if self.runs and self.draw(st.integers(0, 2), "by-run-id") == 0:
            wf, run_id = self.draw(st.sampled_from(self.runs), "run")
            return wf, run_id
        return self.draw(st.sampled_from(WORKFLOW_IDS), "workflow"), ""

    def submit(self, cmd: Command, **meta: Any) -> int:
        offset = self.d.submit(cmd, **meta)
        note(f"{offset}: {cmd.kind} {cmd.workflow_id}/{cmd.run_id} {cmd.args or ''} {meta}")
        return offset

    # -- what the replies taught the clients -------------------------------------------------

    def learn(self) -> None:
        for offset in self.d.reply_order[self.seen :]:
            reply = self.d.replies[offset]
            cmd = self.d.command(offset)
            if cmd.kind == CommandKind.START_CHILD:
                self.child_started(cmd, reply)
            if not reply.ok:
                continue
            v = reply.values
            if cmd.kind in (
                CommandKind.START,
                CommandKind.SIGNAL_WITH_START,
                CommandKind.START_CHILD,
            ):
                self.runs.append((cmd.workflow_id, v["run_id"]))
            elif cmd.kind == CommandKind.RECORD_DECISION_STARTED:
                self.decision_tokens.append(
                    TaskToken(
                        DOMAIN_ID, cmd.workflow_id, v["run_id"], v["schedule_id"], v["attempt"]
                    )
                )
            elif cmd.kind == CommandKind.RECORD_ACTIVITY_STARTED:
                self.activity_tokens.append(
                    TaskToken(
                        DOMAIN_ID,
                        cmd.workflow_id,
                        v["run_id"],
                        v["schedule_id"],
                        v["attempt"],
                        activity_id=v["activity_id"],
                    )
                )
        self.seen = len(self.d.reply_order)

    # -- actions -------------------------------------------------------------------------------

    def actions(self) -> list[Callable[[], Awaitable[object]]]:
        """The actions possible now, repeated by weight: workers make progress, clients and
        the shard owner's crashes disturb them."""
        d = self.d
        acts: list[tuple[int, Callable[[], Awaitable[object]]]] = [
            (2, self.start),
            (1, self.signal_with_start),
            (2, self.signal),
            (1, self.request_cancel),
            (1, self.terminate),
            (1, self.advance),
            (8 if d.position < len(d.log) else 0, self.deliver),
            (1 if self.starts else 0, self.retry_start),
            (1 if self.runs else 0, self.refresh),
            (self.weight("decision-task", d.decision_tasks, 3), self.poll_decision),
            (5 if self.live["decision-task"] and not self.broken_decider else 0, self.decide_now),
            (8 if self.live["decision-task"] and self.broken_decider else 0, self.fail_now),
            (4 if self.live["activity-task"] else 0, self.work_now),
            (1 if self.decision_polls else 0, self.repoll_decision),
            (
                self.weight(
                    "decision-token", self.decision_tokens, 1 if self.broken_decider else 4
                ),
                self.complete_decision,
            ),
            (1 if self.decision_tokens else 0, self.fail_decision),
            (self.weight("activity-task", d.activity_tasks, 2), self.poll_activity),
            (1 if self.activity_polls else 0, self.repoll_activity),
            (self.weight("activity-token", self.activity_tokens, 3), self.respond_activity),
            (self.weight("timer", d.timers, 3), self.fire_timer),
            (2 if any(t.kind in _EXTERNAL for t in d.other_transfer) else 0, self.external_result),
            (3 if _has(d.other_transfer, TransferKind.START_CHILD) else 0, self.start_child_task),
            (2 if _has(d.other_transfer, TransferKind.CLOSE_EXECUTION) else 0, self.close_task),
            (1 if d.log else 0, self.restart),
        ]
        return [act for weight, act in acts for _ in range(weight)]

    async def step(self) -> None:
        await self.survey()
        action = self.draw(st.sampled_from(self.actions()), "action")
        await action()

    def start_request(self) -> service_workflow_pb2.StartWorkflowExecutionRequest:
        wf = self.draw(st.sampled_from(WORKFLOW_IDS), "workflow")
        return service_workflow_pb2.StartWorkflowExecutionRequest(
            domain=DOMAIN,
            workflow_id=wf,
            workflow_type=common_pb2.WorkflowType(name="wt"),
            task_list=tasklist_pb2.TaskList(name=TASK_LIST),
            input=common_pb2.Payload(data=b"input"),
            execution_start_to_close_timeout=dur(
                self.draw(st.sampled_from([5, 3600, 3600, 3600]), "execution-timeout")
            ),
            task_start_to_close_timeout=dur(
                self.draw(st.sampled_from([1, 10, 10]), "task-timeout")
            ),
            identity=self.identity(),
            request_id=self.request_id(),
            workflow_id_reuse_policy=self.draw(st.sampled_from(REUSE_POLICIES), "reuse"),
            retry_policy=self.draw(RETRY_POLICIES, "workflow-retry"),
            cron_schedule=self.draw(st.sampled_from(["", "", "", "*/2 * * * *"]), "cron"),
            delay_start=dur(self.draw(st.sampled_from([0, 0, 0, 5]), "delay")),
        )

    async def start(self) -> None:
        req = self.start_request()
        self.starts.append(req.SerializeToString())
        self.submit(
            Command(
                kind=CommandKind.START,
                domain_id=DOMAIN_ID,
                workflow_id=req.workflow_id,
                request=req.SerializeToString(),
            )
        )

    async def retry_start(self) -> None:
        """A client retry: the same request (same request id) again; only the identity tells
        the records apart."""
        raw = self.draw(st.sampled_from(self.starts), "start")
        req = service_workflow_pb2.StartWorkflowExecutionRequest.FromString(raw)
        req.identity = self.identity()
        self.submit(
            Command(
                kind=CommandKind.START,
                domain_id=DOMAIN_ID,
                workflow_id=req.workflow_id,
                request=req.SerializeToString(),
            )
        )

    async def signal_with_start(self) -> None:
        start = self.start_request()
        req = service_workflow_pb2.SignalWithStartWorkflowExecutionRequest(
            start_request=start,
            signal_name="sws",
            signal_input=common_pb2.Payload(data=b"s"),
        )
        self.submit(
            Command(
                kind=CommandKind.SIGNAL_WITH_START,
                domain_id=DOMAIN_ID,
                workflow_id=start.workflow_id,
                request=req.SerializeToString(),
            )
        )

    async def signal(self) -> None:
        wf, run_id = self.target()
        fresh = not self.signal_requests or self.draw(st.integers(0, 3), "fresh-signal") > 0
        request_id = (
            self.request_id() if fresh else self.draw(st.sampled_from(self.signal_requests), "rid")
        )
        if fresh:
            self.signal_requests.append(request_id)
        req = service_workflow_pb2.SignalWorkflowExecutionRequest(
            domain=DOMAIN,
            workflow_execution=execution(wf, run_id),
            signal_name="sig",
            signal_input=common_pb2.Payload(data=b"x"),
            identity=self.identity(),
            request_id=request_id,
        )
        self.submit(
            Command(
                kind=CommandKind.SIGNAL,
                domain_id=DOMAIN_ID,
                workflow_id=wf,
                run_id=run_id,
                request=req.SerializeToString(),
            ),
            fresh_request=fresh,
        )

    async def request_cancel(self) -> None:
        wf, run_id = self.target()
        fresh = not self.cancel_requests or self.draw(st.booleans(), "fresh-cancel")
        request_id = (
            self.request_id() if fresh else self.draw(st.sampled_from(self.cancel_requests), "rid")
        )
        self.cancel_requests.append(request_id)
        first = ""
        if self.runs and self.draw(st.integers(0, 4), "scoped") == 0:
            first = self.draw(st.sampled_from(self.runs), "first-run")[1]
        req = service_workflow_pb2.RequestCancelWorkflowExecutionRequest(
            domain=DOMAIN,
            workflow_execution=execution(wf, run_id),
            identity=self.identity(),
            request_id=request_id,
            cause="prop",
            first_execution_run_id=first,
        )
        self.submit(
            Command(
                kind=CommandKind.REQUEST_CANCEL,
                domain_id=DOMAIN_ID,
                workflow_id=wf,
                run_id=run_id,
                request=req.SerializeToString(),
            )
        )

    async def terminate(self) -> None:
        wf, run_id = self.target()
        req = service_workflow_pb2.TerminateWorkflowExecutionRequest(
            domain=DOMAIN,
            workflow_execution=execution(wf, run_id),
            reason="prop",
            details=common_pb2.Payload(data=b"t"),
            identity=self.identity(),
        )
        self.submit(
            Command(
                kind=CommandKind.TERMINATE,
                domain_id=DOMAIN_ID,
                workflow_id=wf,
                run_id=run_id,
                request=req.SerializeToString(),
            )
        )

    async def refresh(self) -> None:
        wf, run_id = self.draw(st.sampled_from(self.runs), "run")
        self.submit(
            Command(
                kind=CommandKind.REFRESH_TASKS, domain_id=DOMAIN_ID, workflow_id=wf, run_id=run_id
            )
        )

    # -- quick workers: poll, wait for the start to be recorded, answer ------------------------

    async def _started(self, offset: int) -> TaskToken | None:
        """Deliver everything up to the poll's record; the token if its start was recorded."""
        await self.d.deliver(offset + 1 - self.d.position)
        self.learn()
        await check_shard(self.d, ALL_IDS)
        reply = self.d.replies.get(offset)
        if reply is None or not reply.ok:
            return None
        token = self.decision_tokens[-1] if reply.values.get("activity_id") is None else None
        return token or self.activity_tokens[-1]

    async def decide_now(self) -> None:
        token = await self._started(await self.poll_decision())
        if token is not None:
            self.used.add(_key(token))
            await self.complete_decision(token)

    async def fail_now(self) -> None:
        token = await self._started(await self.poll_decision())
        if token is not None:
            self.used.add(_key(token))
            await self.fail_decision(token)

    async def work_now(self) -> None:
        token = await self._started(await self.poll_activity())
        if token is not None:
            await self.respond_activity(token)

    # -- decision tasks -----------------------------------------------------------------------

    async def poll_decision(self) -> int:
        task: TransferTask = self.pick(self.d.decision_tasks, "decision-task")
        cmd = Command(
            kind=CommandKind.RECORD_DECISION_STARTED,
            domain_id=task.domain_id,
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            args={
                "schedule_id": task.event_id,
                "attempt": task.attempt,
                "request_id": self.request_id(),
                "identity": "decider",
            },
        )
        self.decision_polls.append(encode_command(cmd))
        return self.submit(cmd)

    async def repoll_decision(self) -> None:
        """The same RecordDecisionTaskStarted again (the poller's call was retried)."""
        self.submit(decode_command(self.draw(st.sampled_from(self.decision_polls), "poll")))

    def _token_command(self, kind: CommandKind, token: TaskToken, request: Any) -> Command:
        return Command(
            kind=kind,
            domain_id=token.domain_id,
            workflow_id=token.workflow_id,
            run_id=token.run_id,
            request=request.SerializeToString(),
            args={"schedule_id": token.schedule_id, "attempt": token.attempt},
        )

    async def complete_decision(self, token: TaskToken | None = None) -> None:
        if token is None:
            token = self.pick(self.decision_tokens, "decision-token")
        cases: list[DecisionCase] = self.draw(st.lists(DECISIONS, max_size=3), "decisions")
        req = service_worker_pb2.RespondDecisionTaskCompletedRequest(
            task_token=encode_task_token(token),
            decisions=[d for d, _ in cases],
            identity="decider",
            force_create_new_decision_task=self.draw(
                st.sampled_from([False, False, False, True]), "force"
            ),
        )
        closes = [_is_close(d) for d, _ in cases]
        # An invalid decision, or anything but another close after a close, fails the task.
        expect_failure = any(invalid for _, invalid in cases) or any(
            closes[i] and not all(closes[i:]) for i in range(len(closes))
        )
        self.submit(
            self._token_command(CommandKind.DECISION_COMPLETED, token, req),
            expect_failure=expect_failure,
        )

    async def fail_decision(self, token: TaskToken | None = None) -> None:
        if token is None:
            token = self.pick(self.decision_tokens, "decision-token")
        req = service_worker_pb2.RespondDecisionTaskFailedRequest(
            task_token=encode_task_token(token),
            cause=self.draw(
                st.sampled_from(
                    [
                        workflow_pb2.DECISION_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE,
                        workflow_pb2.DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION,
                    ]
                ),
                "cause",
            ),
            details=common_pb2.Payload(data=b"panic"),
            identity="decider",
        )
        self.submit(self._token_command(CommandKind.DECISION_FAILED, token, req))

    # -- activity tasks ------------------------------------------------------------------------

    async def poll_activity(self) -> int:
        task: TransferTask = self.pick(self.d.activity_tasks, "activity-task")
        cmd = Command(
            kind=CommandKind.RECORD_ACTIVITY_STARTED,
            domain_id=task.domain_id,
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            args={
                "schedule_id": task.event_id,
                "attempt": task.attempt,
                "request_id": self.request_id(),
                "identity": "worker",
            },
        )
        self.activity_polls.append(encode_command(cmd))
        return self.submit(cmd)

    async def repoll_activity(self) -> None:
        self.submit(decode_command(self.draw(st.sampled_from(self.activity_polls), "poll")))

    async def respond_activity(self, token: TaskToken | None = None) -> None:
        how = self.draw(st.sampled_from(["completed", "failed", "canceled", "heartbeat"]), "how")
        if token is None:
            token = self.pick(self.activity_tokens, "activity-token", use=how != "heartbeat")
        by_id = self.draw(st.integers(0, 4), "by-id") == 0
        payload = common_pb2.Payload(data=b"r")
        failure = common_pb2.Failure(
            reason=self.draw(st.sampled_from(["boom", "boom", "fatal"]), "reason"), details=b"why"
        )
        kind, by_token, by_activity_id = _ACTIVITY_RESPONSES[how]
        req: Any = by_activity_id() if by_id else by_token()
        if by_id:
            req.domain = DOMAIN
            req.workflow_execution.CopyFrom(execution(token.workflow_id, token.run_id))
            req.activity_id = token.activity_id
        else:
            req.task_token = encode_task_token(token)
        req.identity = "worker"
        if how == "completed":
            req.result.CopyFrom(payload)
        elif how == "failed":
            req.failure.CopyFrom(failure)
        else:
            req.details.CopyFrom(payload)
        if not by_id:
            self.submit(self._token_command(kind, token, req))
            return
        self.submit(
            Command(
                kind=kind,
                domain_id=DOMAIN_ID,
                workflow_id=token.workflow_id,
                run_id=token.run_id,
                request=req.SerializeToString(),
                args={"activity_id": token.activity_id},
            )
        )

    # -- timers, external results, time ---------------------------------------------------------

    async def fire_timer(self) -> None:
        """The timer processor fires a timer once it is due (any order, maybe again)."""
        # Mostly one of the earliest live timers (a far workflow timeout waits, or runs would
        # rarely get old); sometimes any timer: a stale one, or one fired again.
        horizon = self.d.clock.now_ns() + 60 * 10**9
        pending = sorted(
            (
                t
                for t in self.live["timer"]
                if t.kind != TimerKind.WORKFLOW_TIMEOUT or t.fire_ns <= horizon
            ),
            key=lambda t: (t.fire_ns, t.task_id),
        )
        task: TimerTask
        if pending and self.draw(st.integers(0, 3), "timer-in-order"):
            task = self.draw(st.sampled_from(pending[:3]), "timer")
        else:
            task = self.draw(st.sampled_from(self.d.timers), "timer")
        self.used.add(_key(task))
        late_s = self.draw(st.sampled_from([0, 0, 1, 7]), "late")
        due = task.fire_ns + late_s * 10**9
        now = self.d.clock.now_ns()
        if due > now:
            self.d.advance((due - now) / 10**9)
        self.submit(
            Command(
                kind=CommandKind.TIMER_FIRED,
                domain_id=task.domain_id,
                workflow_id=task.workflow_id,
                run_id=task.run_id,
                args={"task": encode_task(task)},
            )
        )

    async def external_result(self) -> None:
        tasks = [t for t in self.d.other_transfer if t.kind in _EXTERNAL]
        task: TransferTask = self.draw(st.sampled_from(tasks), "external-task")
        ok = self.draw(st.booleans(), "external-ok")
        kind, cause = _EXTERNAL[task.kind][0 if ok else 1]
        args: dict[str, Any] = {"initiated_id": task.event_id}
        if not ok:
            args["cause"] = cause
        self.submit(
            Command(
                kind=kind,
                domain_id=task.domain_id,
                workflow_id=task.workflow_id,
                run_id=task.run_id,
                args=args,
            )
        )

    # -- the transfer executor's cross-run work (engine/transfer/executor.py) ---------------------

    async def _transfer_task(self, kind: TransferKind) -> tuple[TransferTask, MutableState | None]:
        """A transfer task of this kind (mostly a new one; at least once: maybe again), and the
        state of its run as the executor re-reads it."""
        tasks = [t for t in self.d.other_transfer if t.kind == kind]
        fresh = [t for t in tasks if _key(t) not in self.used]
        # Children's closes first: they carry the cross-run protocol.
        fresh = [t for t in fresh if t.workflow_id in CHILD_IDS] or fresh
        pool = fresh if fresh and self.draw(st.integers(0, 4), "transfer-again") else tasks
        task: TransferTask = self.draw(st.sampled_from(pool), "transfer-task")
        self.used.add(_key(task))
        snap = await self.d.store.get_run(SHARD_ID, task.domain_id, task.workflow_id, task.run_id)
        return task, None if snap is None else decode_state(snap.state)

    async def start_child_task(self) -> None:
        task, parent = await self._transfer_task(TransferKind.START_CHILD)
        if parent is None or not parent.is_open:
            return
        child = parent.children.get(task.event_id)
        if child is None or child.run_id:
            return
        self.submit(
            Command(
                kind=CommandKind.START_CHILD,
                domain_id=DOMAIN_ID,
                workflow_id=child.workflow_id,
                request=child.initiated,
                args={
                    "request_id": child.create_request_id,
                    "parent_domain_id": parent.domain_id,
                    "parent_domain_name": parent.domain_name,
                    "parent_workflow_id": parent.workflow_id,
                    "parent_run_id": parent.run_id,
                    "initiated_id": task.event_id,
                },
            )
        )

    def child_started(self, cmd: Command, reply: Reply) -> None:
        """The executor tells the parent how the child's start went."""
        a = cmd.args
        parent = {"domain_id": DOMAIN_ID, "workflow_id": a["parent_workflow_id"]}
        if reply.ok:
            self.submit(
                Command(
                    kind=CommandKind.CHILD_STARTED,
                    run_id=a["parent_run_id"],
                    args={"initiated_id": a["initiated_id"], "run_id": reply.values["run_id"]},
                    **parent,
                )
            )
        elif reply.error_kind == "WorkflowExecutionAlreadyStartedError":
            self.submit(
                Command(
                    kind=CommandKind.CHILD_START_FAILED,
                    run_id=a["parent_run_id"],
                    args={
                        "initiated_id": a["initiated_id"],
                        "cause": (
                            workflow_pb2.CHILD_WORKFLOW_EXECUTION_FAILED_CAUSE_WORKFLOW_ALREADY_RUNNING
                        ),
                    },
                    **parent,
                )
            )

    async def close_task(self) -> None:
        """A run closed: tell its parent, and apply the parent close policy to its children."""
        _, st_ = await self._transfer_task(TransferKind.CLOSE_EXECUTION)
        if st_ is None or st_.is_open:
            return
        can = st_.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CONTINUED_AS_NEW
        if st_.parent is not None and not can:
            p = st_.parent
            self.submit(
                Command(
                    kind=CommandKind.CHILD_COMPLETED,
                    domain_id=p.domain_id,
                    workflow_id=p.workflow_id,
                    run_id=p.run_id,
                    args={
                        "initiated_id": p.initiated_id,
                        "run_id": st_.run_id,
                        "close_event": st_.close_event,
                    },
                )
            )
        if can:
            return
        for child in st_.children.values():
            ex = execution(child.workflow_id, child.run_id)
            req: Any
            if not child.run_id:
                continue
            if child.parent_close_policy == workflow_pb2.PARENT_CLOSE_POLICY_TERMINATE:
                kind = CommandKind.TERMINATE
                req = service_workflow_pb2.TerminateWorkflowExecutionRequest(
                    domain=DOMAIN, workflow_execution=ex, reason="by parent close policy"
                )
            elif child.parent_close_policy == workflow_pb2.PARENT_CLOSE_POLICY_REQUEST_CANCEL:
                kind = CommandKind.REQUEST_CANCEL
                req = service_workflow_pb2.RequestCancelWorkflowExecutionRequest(
                    domain=DOMAIN,
                    workflow_execution=ex,
                    request_id=f"{st_.run_id}:close:{child.initiated_id}",
                    cause="by parent close policy",
                )
            else:
                continue
            self.submit(
                Command(
                    kind=kind,
                    domain_id=DOMAIN_ID,
                    workflow_id=child.workflow_id,
                    run_id=child.run_id,
                    request=req.SerializeToString(),
                )
            )

    async def advance(self) -> None:
        self.d.advance(self.draw(st.sampled_from([1, 2, 10]), "advance-s"))

    # -- the shard ---------------------------------------------------------------------------

    async def deliver(self) -> None:
        count = self.draw(st.integers(1, 8), "batch-size")
        rewind = self.draw(st.sampled_from([0, 0, 0, 0, 1, 4]), "rewind")
        await self.d.deliver(count, rewind)
        self.learn()
        await check_shard(self.d, ALL_IDS)

    async def restart(self) -> None:
        await self.d.restart()
        rewind = self.draw(st.integers(0, 6), "restart-rewind")
        self.d.position = max(0, self.d.position - rewind)

    async def drain(self) -> None:
        while self.d.position < len(self.d.log):
            await self.deliver()

    async def wind_down(self, steps: int) -> None:
        """No more clients or crashes: workers, timers and the transfer executor carry the
        runs on (children finish, parents hear of it), up to `steps` actions."""
        for _ in range(steps):
            await self.survey()
            d = self.d
            acts = [
                act
                for ok, act in (
                    (d.position < len(d.log), self.deliver),
                    (bool(self.live["decision-task"]), self.decide_now),
                    (bool(self.live["activity-task"]), self.work_now),
                    (bool(self.live["timer"]), self.fire_timer),
                    (_has(d.other_transfer, TransferKind.START_CHILD), self.start_child_task),
                    (_has(d.other_transfer, TransferKind.CLOSE_EXECUTION), self.close_task),
                )
                if ok
            ]
            if not acts:
                break
            await self.draw(st.sampled_from(acts), "wind-down")()


def _is_live(item: TransferTask | TaskToken | TimerTask, st_: MutableState | None) -> bool:
    """Whether the shard would act on this task (poll, timer) or token (response) now."""
    if st_ is None or not st_.is_open:
        return False
    if isinstance(item, TimerTask):
        return _timer_is_live(item, st_)
    if isinstance(item, TransferTask):
        schedule_id, attempt, want_started = item.event_id, item.attempt, False
        is_activity = item.kind == TransferKind.ACTIVITY_TASK
    else:
        schedule_id, attempt, want_started = item.schedule_id, item.attempt, True
        is_activity = bool(item.activity_id)
    if is_activity:
        info = st_.activities.get(schedule_id)
        return info is not None and info.attempt == attempt and info.is_started == want_started
    d = st_.decision
    return (
        d is not None
        and (d.schedule_id, d.attempt) == (schedule_id, attempt)
        and (d.started_id != EMPTY_EVENT_ID) == want_started
    )


def _timer_is_live(task: TimerTask, st_: MutableState) -> bool:
    if task.kind == TimerKind.USER_TIMER:
        timer = st_.timers.get(task.timer_id)
        return timer is not None and timer.started_id == task.event_id
    if task.kind in (TimerKind.ACTIVITY_TIMEOUT, TimerKind.ACTIVITY_RETRY):
        info = st_.activities.get(task.event_id)
        return info is not None and info.attempt == task.attempt
    if task.kind == TimerKind.DECISION_TIMEOUT:
        d = st_.decision
        return d is not None and (d.schedule_id, d.attempt) == (task.event_id, task.attempt)
    if task.kind == TimerKind.WORKFLOW_BACKOFF:
        return st_.awaiting_backoff
    if task.kind == TimerKind.DECISION_BACKOFF:
        return st_.decision_backoff_ns == task.fire_ns
    return True


# Per response: the command, the request by task token, the request by activity id.
_ACTIVITY_RESPONSES: dict[str, tuple[CommandKind, Any, Any]] = {
    "completed": (
        CommandKind.ACTIVITY_COMPLETED,
        service_worker_pb2.RespondActivityTaskCompletedRequest,
        service_worker_pb2.RespondActivityTaskCompletedByIDRequest,
    ),
    "failed": (
        CommandKind.ACTIVITY_FAILED,
        service_worker_pb2.RespondActivityTaskFailedRequest,
        service_worker_pb2.RespondActivityTaskFailedByIDRequest,
    ),
    "canceled": (
        CommandKind.ACTIVITY_CANCELED,
        service_worker_pb2.RespondActivityTaskCanceledRequest,
        service_worker_pb2.RespondActivityTaskCanceledByIDRequest,
    ),
    "heartbeat": (
        CommandKind.ACTIVITY_HEARTBEAT,
        service_worker_pb2.RecordActivityTaskHeartbeatRequest,
        service_worker_pb2.RecordActivityTaskHeartbeatByIDRequest,
    ),
}


def _has(tasks: list[TransferTask], kind: TransferKind) -> bool:
    return any(t.kind == kind for t in tasks)


def _key(item: TransferTask | TaskToken | TimerTask) -> tuple[Any, ...]:
    if isinstance(item, TimerTask):
        return ("timer", item.task_id)
    if isinstance(item, TransferTask):
        return ("task", item.task_id)
    return ("token", item.run_id, item.schedule_id, item.attempt)


_EXTERNAL: dict[TransferKind, tuple[tuple[CommandKind, int], tuple[CommandKind, int]]] = {
    TransferKind.SIGNAL_EXECUTION: (
        (CommandKind.EXTERNAL_SIGNALED, 0),
        (
            CommandKind.EXTERNAL_SIGNAL_FAILED,
            workflow_pb2.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION,
        ),
    ),
    TransferKind.CANCEL_EXECUTION: (
        (CommandKind.EXTERNAL_CANCEL_REQUESTED, 0),
        (
            CommandKind.EXTERNAL_CANCEL_FAILED,
            workflow_pb2.CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION,
        ),
    ),
}


async def run_scenario(
    data: st.DataObject, path: Path, max_steps: int = 60, broken_decider: bool | None = None
) -> ShardDriver:
    """Draw and apply a random command stream; returns the (still open) driver."""
    driver = ShardDriver(path)
    await driver.__aenter__()
    try:
        sc = Scenario(driver, data, broken_decider)
        for _ in range(data.draw(st.integers(1, max_steps), label="steps")):
            await sc.step()
        await sc.wind_down(data.draw(st.integers(0, max_steps // 2), label="wind-down steps"))
        await sc.drain()
        await check_shard(driver, ALL_IDS)
    except BaseException:
        await driver.__aexit__(None, None, None)
        raise
    return driver


_db_counter = iter(range(1 << 62))


def fresh_db(tmp: Path) -> Path:
    return tmp / f"shard-{next(_db_counter)}.db"


@STATE_MACHINE
@given(data=st.data())
def test_random_command_streams_give_legal_histories(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    tmp = tmp_path_factory.mktemp("sm")

    async def main() -> None:
        driver = await run_scenario(data, fresh_db(tmp))
        await driver.__aexit__(None, None, None)

    asyncio.run(main())


@settings(STATE_MACHINE, max_examples=40)
@given(data=st.data())
def test_failing_deciders_back_off_with_legal_histories(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A decider that fails (almost) every task, among signals, cancels, terminations, timers
    fired in any order, duplicates and restarts: runs go into decision backoffs, and their
    histories and states stay legal (check_shard checks the backoff's invariants too)."""
    tmp = tmp_path_factory.mktemp("backoff")

    async def main() -> None:
        driver = await run_scenario(data, fresh_db(tmp), max_steps=120, broken_decider=True)
        await driver.__aexit__(None, None, None)

    asyncio.run(main())


async def snapshot(driver: ShardDriver) -> dict[str, Any]:
    """Everything a record stream produced: histories, states, replies, tasks."""
    runs = await read_runs(driver, ALL_IDS)
    return {
        "runs": {
            (r.workflow_id, r.run_id): ([e.SerializeToString() for e in r.events], r.state)
            for r in runs
        },
        "replies": [(o, driver.replies[o]) for o in driver.reply_order],
        "timers": driver.timers,
        "tasks": driver.decision_tasks + driver.activity_tasks + driver.other_transfer,
    }


def assert_same(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    assert got["runs"].keys() == want["runs"].keys(), what
    for key, (events, state) in want["runs"].items():
        assert got["runs"][key][0] == events, f"{what}: history of {key} differs"
        assert got["runs"][key][1] == state, f"{what}: state of {key} differs"
    for part in ("replies", "timers", "tasks"):
        assert got[part] == want[part], f"{what}: {part} differ"


@settings(STATE_MACHINE, max_examples=25)
@given(
    data=st.data(),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8),
    rewinds=st.lists(st.sampled_from([0, 0, 0, 2]), min_size=1, max_size=4),
)
def test_replaying_a_record_stream_gives_the_same_histories(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    sizes: list[int],
    rewinds: list[int],
) -> None:
    """Determinism: the same records on a fresh store give byte-identical histories, states,
    replies and tasks; so do the same records in other group-commit batches (each record
    still applied at the same time), with other duplicate deliveries."""
    tmp = tmp_path_factory.mktemp("replay")

    async def replayed(script: list[Step]) -> dict[str, Any]:
        driver = await replay(script, fresh_db(tmp))
        try:
            await check_shard(driver, ALL_IDS)
            return await snapshot(driver)
        finally:
            await driver.__aexit__(None, None, None)

    async def main() -> None:
        first = await run_scenario(data, fresh_db(tmp), max_steps=60)
        try:
            want = await snapshot(first)
        finally:
            await first.__aexit__(None, None, None)
        assert_same(await replayed(first.script), want, "replay")
        regrouped = regroup(first.script, itertools.cycle(sizes), itertools.cycle(rewinds))
        assert_same(await replayed(regrouped), want, "regrouped replay")

    asyncio.run(main())


# -- the parent/child protocol, step by step ------------------------------------------------------

CHILD_OUTCOMES = {
    "complete": "child_workflow_execution_completed_event_attributes",
    "fail": "child_workflow_execution_failed_event_attributes",
    "cancel": "child_workflow_execution_canceled_event_attributes",
    "terminate": "child_workflow_execution_terminated_event_attributes",
    "timeout": "child_workflow_execution_timed_out_event_attributes",
}


@settings(max_examples=25, deadline=None)
@given(
    outcome=st.sampled_from(sorted(CHILD_OUTCOMES)),
    started_first=st.booleans(),
    batch=st.integers(1, 3),
    rewind=st.sampled_from([0, 2]),
)
def test_a_child_close_reaches_its_parent(
    tmp_path_factory: pytest.TempPathFactory,
    outcome: str,
    started_first: bool,
    batch: int,
    rewind: int,
) -> None:
    """Start a child from a decision, close it in one of five ways, and tell the parent the
    way the transfer executor does (the close may overtake the started notice): the parent
    records ChildWorkflowExecutionStarted and the matching Child* event exactly once."""
    tmp = tmp_path_factory.mktemp("child")

    async def main() -> None:
        async with ShardDriver(fresh_db(tmp)) as d:

            async def flush() -> None:
                while d.position < len(d.log):
                    await d.deliver(batch, rewind)
                await check_shard(d, ALL_IDS)

            async def decide(wf: str, run_id: str, *decisions: decision_pb2.Decision) -> None:
                poll = d.submit(
                    Command(
                        kind=CommandKind.RECORD_DECISION_STARTED,
                        domain_id=DOMAIN_ID,
                        workflow_id=wf,
                        run_id=run_id,
                        args={"schedule_id": 2, "attempt": 0, "request_id": uuid_for(len(d.log))},
                    )
                )
                await flush()
                assert d.replies[poll].ok, d.replies[poll]
                req = service_worker_pb2.RespondDecisionTaskCompletedRequest(decisions=decisions)
                d.submit(
                    Command(
                        kind=CommandKind.DECISION_COMPLETED,
                        domain_id=DOMAIN_ID,
                        workflow_id=wf,
                        run_id=run_id,
                        request=req.SerializeToString(),
                        args={"schedule_id": 2, "attempt": 0},
                    )
                )
                await flush()

            start = service_workflow_pb2.StartWorkflowExecutionRequest(
                domain=DOMAIN,
                workflow_id="wf-a",
                workflow_type=common_pb2.WorkflowType(name="wt"),
                task_list=tasklist_pb2.TaskList(name=TASK_LIST),
                execution_start_to_close_timeout=dur(3600),
                task_start_to_close_timeout=dur(10),
                request_id=uuid_for(0),
            )
            first = d.submit(
                Command(
                    kind=CommandKind.START,
                    domain_id=DOMAIN_ID,
                    workflow_id="wf-a",
                    request=start.SerializeToString(),
                )
            )
            await flush()
            parent_run = d.replies[first].values["run_id"]
            child_decision = decision_pb2.Decision(
                start_child_workflow_execution_decision_attributes=(
                    decision_pb2.StartChildWorkflowExecutionDecisionAttributes(
                        domain=DOMAIN,
                        workflow_id="child-x",
                        workflow_type=common_pb2.WorkflowType(name="child"),
                        execution_start_to_close_timeout=dur(60),
                    )
                )
            )
            await decide("wf-a", parent_run, child_decision)
            (parent,) = [r for r in await read_runs(d, ["wf-a"]) if r.run_id == parent_run]
            ((initiated_id, child),) = parent.state.children.items()
            started = d.submit(
                Command(
                    kind=CommandKind.START_CHILD,
                    domain_id=DOMAIN_ID,
                    workflow_id="child-x",
                    request=child.initiated,
                    args={
                        "request_id": child.create_request_id,
                        "parent_domain_id": DOMAIN_ID,
                        "parent_domain_name": DOMAIN,
                        "parent_workflow_id": "wf-a",
                        "parent_run_id": parent_run,
                        "initiated_id": initiated_id,
                    },
                )
            )
            await flush()
            child_run = d.replies[started].values["run_id"]
            notice = Command(
                kind=CommandKind.CHILD_STARTED,
                domain_id=DOMAIN_ID,
                workflow_id="wf-a",
                run_id=parent_run,
                args={"initiated_id": initiated_id, "run_id": child_run},
            )
            if started_first:
                d.submit(notice)
                await flush()

            if outcome == "terminate":
                req = service_workflow_pb2.TerminateWorkflowExecutionRequest(
                    domain=DOMAIN, workflow_execution=execution("child-x", child_run)
                )
                d.submit(
                    Command(
                        kind=CommandKind.TERMINATE,
                        domain_id=DOMAIN_ID,
                        workflow_id="child-x",
                        run_id=child_run,
                        request=req.SerializeToString(),
                    )
                )
                await flush()
            elif outcome == "timeout":
                (timeout,) = [
                    t
                    for t in d.timers
                    if t.run_id == child_run and t.kind == TimerKind.WORKFLOW_TIMEOUT
                ]
                d.advance(60)
                d.submit(
                    Command(
                        kind=CommandKind.TIMER_FIRED,
                        domain_id=DOMAIN_ID,
                        workflow_id="child-x",
                        run_id=child_run,
                        args={"task": encode_task(timeout)},
                    )
                )
                await flush()
            else:
                close = {
                    "complete": "complete_workflow_execution_decision_attributes",
                    "fail": "fail_workflow_execution_decision_attributes",
                    "cancel": "cancel_workflow_execution_decision_attributes",
                }[outcome]
                await decide("child-x", child_run, decision_pb2.Decision(**{close: {}}))

            (closed,) = [r for r in await read_runs(d, ["child-x"]) if r.run_id == child_run]
            assert not closed.state.is_open
            completion = Command(
                kind=CommandKind.CHILD_COMPLETED,
                domain_id=DOMAIN_ID,
                workflow_id="wf-a",
                run_id=parent_run,
                args={
                    "initiated_id": initiated_id,
                    "run_id": child_run,
                    "close_event": closed.state.close_event,
                },
            )
            # At least once: the executor may deliver its notices twice.
            d.submit(completion)
            d.submit(completion)
            if not started_first:
                d.submit(notice)
            await flush()

            runs = await check_shard(d, ALL_IDS)
            fields = [e.WhichOneof("attributes") for e in runs[parent_run].events]
            assert fields.count("child_workflow_execution_started_event_attributes") == 1
            assert fields.count(CHILD_OUTCOMES[outcome]) == 1
            assert fields.index("child_workflow_execution_started_event_attributes") < (
                fields.index(CHILD_OUTCOMES[outcome])
            )
            assert not runs[parent_run].state.children

    asyncio.run(main())


# -- shard placement ------------------------------------------------------------------------------


def test_shard_for_matches_cadence_test_vectors() -> None:
    assert shard_for("", 1000) == 242
    assert shard_for("workflowId", 1000) == 580


@settings(max_examples=300, deadline=None)
@given(workflow_id=st.text(max_size=60), num_shards=st.integers(1, 16384), k=st.integers(1, 64))
def test_shard_for_is_stable_and_in_range(workflow_id: str, num_shards: int, k: int) -> None:
    shard = shard_for(workflow_id, num_shards)
    assert 0 <= shard < num_shards
    assert shard_for(workflow_id, num_shards) == shard
    # One fingerprint for every shard count: placement is the hash modulo the count.
    assert shard_for(workflow_id, num_shards * k) % num_shards == shard


def test_shard_for_does_not_depend_on_the_process() -> None:
    """Placement must survive restarts: no per-process hash() randomisation."""
    ids = ["", "workflowId", "wf-a", "order-42", "ünïcødé", "x" * 1000]
    here = [shard_for(w, 4096) for w in ids]
    code = f"from engine.ids import shard_for; print([shard_for(w, 4096) for w in {ids!r}])"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=Path(__file__).resolve().parents[2],
        )
        assert out.stdout.strip() == str(here)


# -- codecs ------------------------------------------------------------------------------------

IDS = st.text(max_size=12)
INTS = st.integers(-(2**63), 2**63 - 1)
SMALL = st.integers(-1000, 10**6)
BLOBS = st.binary(max_size=24)
OPT_BLOBS = st.none() | BLOBS
ARG_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | st.text(max_size=8) | BLOBS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)

COMMANDS = st.builds(
    Command,
    kind=st.sampled_from(CommandKind),
    domain_id=IDS,
    workflow_id=IDS,
    run_id=IDS,
    request=BLOBS,
    args=st.dictionaries(st.text(max_size=10), ARG_VALUES, max_size=4),
    reply_to=IDS,
    reply_key=IDS,
)
REPLIES = st.builds(
    Reply,
    key=IDS,
    ok=st.booleans(),
    payload=BLOBS,
    values=st.dictionaries(st.text(max_size=10), ARG_VALUES, max_size=4),
    error_kind=IDS,
    error_message=st.text(max_size=20),
    error_fields=st.dictionaries(IDS, IDS, max_size=3),
)
TRANSFER_TASKS = st.builds(
    TransferTask,
    task_id=INTS,
    kind=st.sampled_from(TransferKind),
    domain_id=IDS,
    workflow_id=IDS,
    run_id=IDS,
    event_id=SMALL,
    attempt=SMALL,
    task_list=IDS,
    schedule_to_start_s=SMALL,
)
TIMER_TASKS = st.builds(
    TimerTask,
    task_id=INTS,
    kind=st.sampled_from(TimerKind),
    fire_ns=INTS,
    domain_id=IDS,
    workflow_id=IDS,
    run_id=IDS,
    event_id=SMALL,
    attempt=SMALL,
    timer_id=IDS,
    timeout_type=SMALL,
)
RETRY_STATES = st.builds(
    RetryPolicyState,
    initial_interval_s=SMALL,
    backoff_coefficient=st.floats(allow_nan=False),
    maximum_interval_s=SMALL,
    maximum_attempts=SMALL,
    non_retryable_reasons=st.lists(IDS, max_size=3),
    expiration_s=SMALL,
)
DECISION_INFOS = st.builds(
    DecisionInfo,
    schedule_id=SMALL,
    task_list=IDS,
    timeout_s=SMALL,
    scheduled_ns=INTS,
    original_scheduled_ns=INTS,
    attempt=SMALL,
    started_id=SMALL,
    started_ns=INTS,
    request_id=IDS,
    identity=IDS,
)
ACTIVITY_INFOS = st.builds(
    ActivityInfo,
    schedule_id=SMALL,
    activity_id=IDS,
    activity_type=IDS,
    task_list=IDS,
    input=OPT_BLOBS,
    header=BLOBS,
    scheduled_ns=INTS,
    first_scheduled_ns=INTS,
    schedule_to_start_s=SMALL,
    schedule_to_close_s=SMALL,
    start_to_close_s=SMALL,
    heartbeat_s=SMALL,
    started_id=SMALL,
    attempt=SMALL,
    retry=st.none() | RETRY_STATES,
    heartbeat_details=OPT_BLOBS,
    cancel_requested=st.booleans(),
    last_failure_reason=IDS,
    last_failure_details=OPT_BLOBS,
)
EXTERNAL_INFOS = st.builds(
    ExternalRequestInfo,
    initiated_id=SMALL,
    domain_name=IDS,
    workflow_id=IDS,
    run_id=IDS,
    request_id=IDS,
    child_workflow_only=st.booleans(),
    signal_name=IDS,
    input=OPT_BLOBS,
    control=BLOBS,
)
STATES = st.builds(
    MutableState,
    domain_id=IDS,
    domain_name=IDS,
    workflow_id=IDS,
    run_id=IDS,
    first_execution_run_id=IDS,
    workflow_type=IDS,
    task_list=IDS,
    execution_timeout_s=SMALL,
    task_timeout_s=SMALL,
    create_request_id=IDS,
    start_ns=INTS,
    execution_ns=INTS,
    input=OPT_BLOBS,
    search_attributes=st.dictionaries(IDS, BLOBS, max_size=3),
    parent=st.none() | st.builds(ParentInfo, IDS, IDS, IDS, IDS, SMALL),
    close_status=st.integers(0, 6),
    next_event_id=SMALL,
    retry=st.none() | RETRY_STATES,
    last_completion_result=OPT_BLOBS,
    awaiting_backoff=st.booleans(),
    signal_request_ids=st.lists(IDS, max_size=3),
    cancel_requested=st.booleans(),
    decision=st.none() | DECISION_INFOS,
    activities=st.dictionaries(SMALL, ACTIVITY_INFOS, max_size=3),
    timers=st.dictionaries(IDS, st.builds(TimerInfo, IDS, SMALL, INTS), max_size=3),
    request_cancels=st.dictionaries(SMALL, EXTERNAL_INFOS, max_size=2),
    signals_out=st.dictionaries(SMALL, EXTERNAL_INFOS, max_size=2),
    buffered=st.lists(BLOBS, max_size=3),
    decision_failures=SMALL,
    decision_backoff_ns=INTS,
    last_decision_failure=st.none() | st.builds(DecisionFailureInfo, IDS, BLOBS, IDS, SMALL, INTS),
)


@settings(max_examples=150, deadline=None)
@given(cmd=COMMANDS, reply=REPLIES)
def test_commands_and_replies_round_trip(cmd: Command, reply: Reply) -> None:
    assert decode_command(encode_command(cmd)) == cmd
    assert decode_reply(encode_reply(reply)) == reply


@settings(max_examples=150, deadline=None)
@given(
    transfer=TRANSFER_TASKS,
    timer=TIMER_TASKS,
    dispatch=st.builds(DispatchTask, IDS, IDS, IDS, SMALL, SMALL),
)
def test_tasks_round_trip(transfer: TransferTask, timer: TimerTask, dispatch: DispatchTask) -> None:
    assert decode_transfer(encode_task(transfer)) == transfer
    assert decode_timer(encode_task(timer)) == timer
    assert decode_dispatch(encode_dispatch(dispatch)) == dispatch


@settings(max_examples=150, deadline=None)
@given(state=STATES)
def test_mutable_state_round_trips(state: MutableState) -> None:
    raw = encode_state(state)
    assert decode_state(raw) == state
    assert encode_state(decode_state(raw)) == raw
