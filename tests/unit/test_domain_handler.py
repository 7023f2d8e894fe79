"""`DomainHandler` against the real SQLite store: DomainAPI semantics, updates, the cache.

The servicer methods are called through `__wrapped__` (the function under `@rpc`) so the
tests see the engine's own errors; the gRPC mapping is covered by test_domain_grpc.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cadence.api.v1 import domain_pb2, service_domain_pb2
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from engine.clock import ManualClock
from engine.errors import (
    BadRequestError,
    ConditionFailedError,
    DomainAlreadyExistsError,
    EntityNotExistsError,
    ServiceBusyError,
)
from engine.frontend.domain import DomainHandler
from engine.persistence.protocols import DomainRecord
from engine.persistence.sqlite.store import SqliteStore

DAY = 86_400


class CountingStore(SqliteStore):
    """The real store, counting reads and optionally losing update races on purpose."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gets = 0
        # Each entry runs (and is consumed) just before one update_domain call.
        self.before_update: list[Any] = []

    async def get_domain(self, *, name: str = "", domain_id: str = "") -> DomainRecord | None:
        self.gets += 1
        return await super().get_domain(name=name, domain_id=domain_id)

    async def update_domain(self, record: DomainRecord, expected_version: int) -> None:
        if self.before_update:
            await self.before_update.pop(0)()
        await super().update_domain(record, expected_version)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(str(tmp_path / "domains.db"))
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def handler(store: CountingStore, clock: ManualClock) -> DomainHandler:
    return DomainHandler(store, clock=clock, cache_ttl_seconds=5)


async def call(handler: DomainHandler, method: str, request: Any) -> Any:
    return await getattr(type(handler), method).__wrapped__(handler, request, None)


async def register(handler: DomainHandler, name: str = "orders", **fields: Any) -> None:
    await call(
        handler, "RegisterDomain", service_domain_pb2.RegisterDomainRequest(name=name, **fields)
    )


async def describe(handler: DomainHandler, name: str = "", id: str = "") -> domain_pb2.Domain:
    req = service_domain_pb2.DescribeDomainRequest(id=id) if id else None
    req = req or service_domain_pb2.DescribeDomainRequest(name=name)
    resp: service_domain_pb2.DescribeDomainResponse = await call(handler, "DescribeDomain", req)
    return resp.domain


async def update(
    handler: DomainHandler, paths: list[str], name: str = "orders", **fields: Any
) -> domain_pb2.Domain:
    req = service_domain_pb2.UpdateDomainRequest(
        name=name, update_mask=field_mask_pb2.FieldMask(paths=paths), **fields
    )
    resp: service_domain_pb2.UpdateDomainResponse = await call(handler, "UpdateDomain", req)
    return resp.domain


def days(n: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(n * DAY))


# --- RegisterDomain / DescribeDomain --------------------------------------------------------


async def test_register_applies_defaults(handler: DomainHandler) -> None:
    await register(handler, description="the orders", owner_email="a@b.c", data={"team": "x"})
    d = await describe(handler, "orders")
    assert uuid.UUID(d.id)
    assert d.name == "orders"
    assert d.status == domain_pb2.DOMAIN_STATUS_REGISTERED
    assert (d.description, d.owner_email, dict(d.data)) == ("the orders", "a@b.c", {"team": "x"})
    assert d.workflow_execution_retention_period.seconds == 3 * DAY
    assert d.failover_version == -24
    assert d.is_global_domain is False
    assert d.active_cluster_name == "cadenza"
    assert [c.cluster_name for c in d.clusters] == ["cadenza"]
    assert d.history_archival_status == domain_pb2.ARCHIVAL_STATUS_DISABLED
    assert d.visibility_archival_status == domain_pb2.ARCHIVAL_STATUS_DISABLED
    assert await describe(handler, id=d.id) == d


async def test_register_keeps_requested_retention_and_archival(handler: DomainHandler) -> None:
    await register(
        handler,
        workflow_execution_retention_period=days(7.9),
        history_archival_status=domain_pb2.ARCHIVAL_STATUS_ENABLED,
        history_archival_uri="file:///tmp/h",
    )
    d = await describe(handler, "orders")
    assert d.workflow_execution_retention_period.seconds == 7 * DAY  # whole days
    assert d.history_archival_status == domain_pb2.ARCHIVAL_STATUS_ENABLED
    assert d.history_archival_uri == "file:///tmp/h"


async def test_register_uses_configured_cluster_name(store: CountingStore) -> None:
    handler = DomainHandler(store, cluster_name="east")
    await register(handler)
    d = await describe(handler, "orders")
    assert d.active_cluster_name == "east"
    assert [c.cluster_name for c in d.clusters] == ["east"]


async def test_register_duplicate_name(handler: DomainHandler) -> None:
    await register(handler)
    with pytest.raises(DomainAlreadyExistsError, match="Domain already exists"):
        await register(handler)


async def test_register_race_lost_in_store_is_already_exists(
    handler: DomainHandler, store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name check passes, but a concurrent register wins the insert.
    original = store.create_domain

    async def racing_create(record: DomainRecord) -> None:
        await original(DomainRecord(id=str(uuid.uuid4()), name=record.name, info=record.info))
        await original(record)

    monkeypatch.setattr(store, "create_domain", racing_create)
    with pytest.raises(DomainAlreadyExistsError):
        await register(handler)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"name": ""}, "Domain not set"),
        ({"name": "bad_name"}, "alphanumeric and dash"),
        ({"workflow_execution_retention_period": days(0.5)}, "valid retention period"),
        ({"workflow_execution_retention_period": days(31)}, "RetentionDays is invalid"),
        ({"active_cluster_name": "west"}, "Invalid active cluster name: west"),
        (
            {"clusters": [domain_pb2.ClusterReplicationConfiguration(cluster_name="west")]},
            "Invalid cluster name: west",
        ),
        ({"active_clusters": domain_pb2.ActiveClusters()}, "Active-active"),
    ],
)
async def test_register_rejects(
    handler: DomainHandler, fields: dict[str, Any], fragment: str
) -> None:
    fields.setdefault("name", "orders")
    with pytest.raises(BadRequestError, match=fragment):
        await call(handler, "RegisterDomain", service_domain_pb2.RegisterDomainRequest(**fields))
    with pytest.raises(EntityNotExistsError):
        await describe(handler, "orders")


async def test_register_global_domain_on_the_single_cluster(handler: DomainHandler) -> None:
    # The Cadence CLI registers global domains by default; one cluster is fine.
    await register(
        handler,
        is_global_domain=True,
        active_cluster_name="cadenza",
        clusters=[domain_pb2.ClusterReplicationConfiguration(cluster_name="cadenza")],
    )
    d = await describe(handler, "orders")
    assert d.is_global_domain is True
    assert d.failover_version == 0
    assert d.active_cluster_name == "cadenza"


async def test_describe_unknown_and_empty(handler: DomainHandler) -> None:
    with pytest.raises(EntityNotExistsError, match=r"^Domain: nope does not exist\.$"):
        await describe(handler, "nope")
    with pytest.raises(EntityNotExistsError, match="Domain ID"):
        await describe(handler, id=str(uuid.uuid4()))
    with pytest.raises(BadRequestError, match="Domain not set"):
        await call(handler, "DescribeDomain", service_domain_pb2.DescribeDomainRequest())


# --- ListDomains ----------------------------------------------------------------------------


async def test_list_domains_pages_by_name(handler: DomainHandler) -> None:
    names = ["d-c", "d-a", "d-e", "d-b", "d-d"]
    for name in names:
        await register(handler, name)
    seen: list[str] = []
    token = b""
    pages = 0
    while True:
        resp = await call(
            handler,
            "ListDomains",
            service_domain_pb2.ListDomainsRequest(page_size=2, next_page_token=token),
        )
        pages += 1
        assert len(resp.domains) <= 2
        seen += [d.name for d in resp.domains]
        token = resp.next_page_token
        if not token:
            break
    assert seen == sorted(names)
    assert pages == 3
    everything = await call(handler, "ListDomains", service_domain_pb2.ListDomainsRequest())
    assert [d.name for d in everything.domains] == sorted(names)
    assert everything.next_page_token == b""


async def test_list_domains_rejects_bad_input(handler: DomainHandler) -> None:
    with pytest.raises(BadRequestError, match="PageSize"):
        await call(handler, "ListDomains", service_domain_pb2.ListDomainsRequest(page_size=-1))
    with pytest.raises(BadRequestError):
        await call(
            handler,
            "ListDomains",
            service_domain_pb2.ListDomainsRequest(next_page_token=b"garbage"),
        )


# --- UpdateDomain ---------------------------------------------------------------------------


async def test_update_applies_only_masked_fields(
    handler: DomainHandler, store: CountingStore
) -> None:
    await register(handler, description="old", owner_email="old@x", data={"a": "1", "b": "2"})
    before = await store.get_domain(name="orders")
    assert before is not None
    d = await update(
        handler,
        ["description", "data", "workflow_execution_retention_period"],
        description="new",
        owner_email="ignored@x",  # not in the mask
        data={"b": "20", "c": "3"},
        workflow_execution_retention_period=days(10),
    )
    assert d.description == "new"
    assert d.owner_email == "old@x"
    assert dict(d.data) == {"a": "1", "b": "20", "c": "3"}  # merged
    assert d.workflow_execution_retention_period.seconds == 10 * DAY
    assert await describe(handler, "orders") == d
    after = await store.get_domain(name="orders")
    assert after is not None
    assert after.notification_version == before.notification_version + 1


async def test_update_with_empty_mask_changes_nothing(handler: DomainHandler) -> None:
    await register(handler, description="same")
    before = await describe(handler, "orders")
    assert await update(handler, [], description="other") == before


async def test_update_owner_email_and_archival(handler: DomainHandler) -> None:
    await register(handler)
    d = await update(
        handler,
        ["owner_email", "visibility_archival_status", "visibility_archival_uri"],
        owner_email="ops@x",
        visibility_archival_status=domain_pb2.ARCHIVAL_STATUS_ENABLED,
        visibility_archival_uri="s3://bucket",
    )
    assert d.owner_email == "ops@x"
    assert d.visibility_archival_status == domain_pb2.ARCHIVAL_STATUS_ENABLED
    assert d.visibility_archival_uri == "s3://bucket"


async def test_update_bad_binaries_merge_and_delete(
    handler: DomainHandler, clock: ManualClock
) -> None:
    await register(handler)
    first = domain_pb2.BadBinaries(binaries={"sum-1": domain_pb2.BadBinaryInfo(reason="crash")})
    d = await update(handler, ["bad_binaries"], bad_binaries=first)
    assert d.bad_binaries.binaries["sum-1"].reason == "crash"
    # The server stamps entries that come without a creation time.
    assert d.bad_binaries.binaries["sum-1"].created_time.seconds == clock.now_ns() // 10**9
    second = domain_pb2.BadBinaries(
        binaries={
            "sum-2": domain_pb2.BadBinaryInfo(
                reason="leak", operator="me", created_time=timestamp_pb2.Timestamp(seconds=5)
            )
        }
    )
    d = await update(handler, ["bad_binaries"], bad_binaries=second)
    assert set(d.bad_binaries.binaries) == {"sum-1", "sum-2"}
    assert d.bad_binaries.binaries["sum-2"].created_time.seconds == 5
    d = await update(handler, ["delete_bad_binary"], delete_bad_binary="sum-1")
    assert set(d.bad_binaries.binaries) == {"sum-2"}
    with pytest.raises(BadRequestError, match="Bad binary checksum sum-1 doesn't exists"):
        await update(handler, ["delete_bad_binary"], delete_bad_binary="sum-1")


async def test_update_bad_binaries_keeps_the_newest_ten(handler: DomainHandler) -> None:
    await register(handler)
    binaries = {
        f"sum-{i:02d}": domain_pb2.BadBinaryInfo(created_time=timestamp_pb2.Timestamp(seconds=i))
        for i in range(12)
    }
    d = await update(
        handler, ["bad_binaries"], bad_binaries=domain_pb2.BadBinaries(binaries=binaries)
    )
    assert sorted(d.bad_binaries.binaries) == [f"sum-{i:02d}" for i in range(2, 12)]


@pytest.mark.parametrize(
    ("paths", "fields", "fragment"),
    [
        (["nonsense"], {}, "Invalid update mask path: nonsense."),
        (["active_cluster_name"], {"active_cluster_name": "west"}, "Invalid active cluster"),
        (
            ["clusters"],
            {"clusters": [domain_pb2.ClusterReplicationConfiguration(cluster_name="west")]},
            "Invalid cluster name: west",
        ),
        (["clusters"], {"clusters": []}, "must include the active cluster"),
        (["failover_timeout"], {"failover_timeout": duration_pb2.Duration(seconds=5)}, "failover"),
        (["active_clusters"], {}, "Active-active"),
        (["workflow_execution_retention_period"], {}, "valid retention period"),
        (
            ["workflow_execution_retention_period"],
            {"workflow_execution_retention_period": days(90)},
            "RetentionDays is invalid",
        ),
        (["history_archival_status"], {"history_archival_status": 7}, "Invalid"),
    ],
)
async def test_update_rejects(
    handler: DomainHandler, paths: list[str], fields: dict[str, Any], fragment: str
) -> None:
    await register(handler, description="unchanged")
    with pytest.raises(BadRequestError, match=fragment):
        await update(handler, [*paths, "description"], description="changed", **fields)
    # Nothing of a rejected update is applied.
    assert (await describe(handler, "orders")).description == "unchanged"


async def test_update_accepts_noop_replication_values(handler: DomainHandler) -> None:
    await register(handler)
    d = await update(
        handler,
        ["active_cluster_name", "clusters"],
        active_cluster_name="cadenza",
        clusters=[domain_pb2.ClusterReplicationConfiguration(cluster_name="cadenza")],
    )
    assert d.active_cluster_name == "cadenza"


async def test_update_unknown_domain(handler: DomainHandler) -> None:
    with pytest.raises(EntityNotExistsError, match="Domain: ghost does not exist"):
        await update(handler, ["description"], name="ghost", description="x")
    with pytest.raises(BadRequestError, match="Domain not set"):
        await update(handler, ["description"], name="")


async def test_update_retries_after_losing_a_race(
    handler: DomainHandler, store: CountingStore
) -> None:
    await register(handler, data={"k": "v"})

    async def concurrent_update() -> None:
        # Another frontend updates the domain between our read and our write.
        record = await SqliteStore.get_domain(store, name="orders")
        assert record is not None
        d = domain_pb2.Domain.FromString(record.info)
        d.data["theirs"] = "1"
        await SqliteStore.update_domain(
            store,
            DomainRecord(
                record.id, record.name, d.SerializeToString(), record.notification_version + 1
            ),
            record.notification_version,
        )

    store.before_update.append(concurrent_update)
    d = await update(handler, ["data"], data={"ours": "2"})
    # Both writers' changes survive: ours was re-applied on top of theirs.
    assert dict(d.data) == {"k": "v", "theirs": "1", "ours": "2"}
    assert dict((await describe(handler, "orders")).data) == dict(d.data)


async def test_update_gives_up_when_always_conflicting(
    handler: DomainHandler, store: CountingStore
) -> None:
    await register(handler)

    async def conflict() -> None:
        raise ConditionFailedError("lost again")

    store.before_update.extend([conflict] * 10)
    with pytest.raises(ServiceBusyError, match="Domain update too frequent"):
        await update(handler, ["description"], description="x")
    assert len(store.before_update) == 5  # 5 attempts were made


# --- DeprecateDomain and the rest -----------------------------------------------------------


async def test_deprecate_blocks_starts_only(handler: DomainHandler) -> None:
    await register(handler)
    await call(handler, "DeprecateDomain", service_domain_pb2.DeprecateDomainRequest(name="orders"))
    d = await describe(handler, "orders")
    assert d.status == domain_pb2.DOMAIN_STATUS_DEPRECATED
    assert (await handler.resolve("orders")).status == domain_pb2.DOMAIN_STATUS_DEPRECATED
    with pytest.raises(BadRequestError, match=r"^Domain is deprecated\.$"):
        await handler.resolve("orders", for_start=True)
    # Deprecating again is harmless.
    await call(handler, "DeprecateDomain", service_domain_pb2.DeprecateDomainRequest(name="orders"))
    with pytest.raises(EntityNotExistsError):
        await call(
            handler, "DeprecateDomain", service_domain_pb2.DeprecateDomainRequest(name="ghost")
        )


async def test_delete_and_failover_are_refused_history_is_empty(handler: DomainHandler) -> None:
    await register(handler)
    with pytest.raises(BadRequestError, match="not supported"):
        await call(handler, "DeleteDomain", service_domain_pb2.DeleteDomainRequest(name="orders"))
    with pytest.raises(BadRequestError, match="single cluster"):
        await call(
            handler,
            "FailoverDomain",
            service_domain_pb2.FailoverDomainRequest(
                domain_name="orders", domain_active_cluster_name="west"
            ),
        )
    with pytest.raises(EntityNotExistsError):
        await call(
            handler, "FailoverDomain", service_domain_pb2.FailoverDomainRequest(domain_name="x")
        )
    resp = await call(
        handler, "ListFailoverHistory", service_domain_pb2.ListFailoverHistoryRequest()
    )
    assert list(resp.failover_events) == []


# --- resolve and the cache ------------------------------------------------------------------


async def test_resolve_unknown_and_empty(handler: DomainHandler) -> None:
    with pytest.raises(EntityNotExistsError, match="Domain: nope does not exist"):
        await handler.resolve("nope")
    with pytest.raises(BadRequestError):
        await handler.resolve("")
    with pytest.raises(EntityNotExistsError):
        await handler.resolve_id(str(uuid.uuid4()))


async def test_resolve_is_cached_for_the_ttl(
    handler: DomainHandler, store: CountingStore, clock: ManualClock
) -> None:
    await register(handler)
    store.gets = 0
    first = await handler.resolve("orders")
    for _ in range(10):
        assert await handler.resolve("orders") == first
    assert (await handler.resolve_id(first.id)).name == "orders"
    assert store.gets == 0  # registering filled the cache

    # Another frontend changes the domain behind our back: we see it once the TTL passes.
    record = await SqliteStore.get_domain(store, name="orders")
    assert record is not None
    changed = domain_pb2.Domain.FromString(record.info)
    changed.description = "changed elsewhere"
    await SqliteStore.update_domain(
        store,
        DomainRecord(
            record.id, record.name, changed.SerializeToString(), record.notification_version + 1
        ),
        record.notification_version,
    )
    clock.advance(4)
    assert (await handler.resolve("orders")).description == ""
    clock.advance(2)
    assert (await handler.resolve("orders")).description == "changed elsewhere"
    assert store.gets == 1


async def test_unknown_names_are_not_cached(handler: DomainHandler, store: CountingStore) -> None:
    with pytest.raises(EntityNotExistsError):
        await handler.resolve("late")
    # Registered through another frontend (a second handler on the same store).
    await register(DomainHandler(store), "late")
    assert (await handler.resolve("late")).name == "late"


async def test_local_updates_are_visible_at_once(handler: DomainHandler) -> None:
    await register(handler)
    assert (await handler.resolve("orders")).description == ""
    await update(handler, ["description"], description="fresh")
    assert (await handler.resolve("orders")).description == "fresh"
    d = await handler.resolve("orders")
    assert (await handler.resolve_id(d.id)).description == "fresh"


async def test_resolve_returns_private_copies(handler: DomainHandler) -> None:
    await register(handler)
    mine = await handler.resolve("orders")
    mine.description = "scribbled"
    mine.data["x"] = "y"
    again = await handler.resolve("orders")
    assert again.description == ""
    assert dict(again.data) == {}


async def test_invalidate_forces_a_store_read(handler: DomainHandler, store: CountingStore) -> None:
    await register(handler)
    d = await handler.resolve("orders")
    store.gets = 0
    handler.invalidate(domain_id=d.id)
    await handler.resolve("orders")
    assert store.gets == 1


async def test_ensure_domain_is_idempotent(handler: DomainHandler) -> None:
    first = await handler.ensure_domain("dev", retention_days=1)
    second = await handler.ensure_domain("dev", retention_days=5)
    assert first == second
    assert first.workflow_execution_retention_period.seconds == DAY
