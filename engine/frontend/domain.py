"""DomainAPI: register, describe, list, update and deprecate domains; resolve names fast.

`DomainHandler` is the `uber.cadence.api.v1.DomainAPI` servicer (grpc.aio) and the domain
cache every other frontend handler resolves names through (`resolve`, `resolve_id`).

Storage: one `DomainRecord` per domain in a `DomainStore`, whose `info` is a serialized
`uber.cadence.api.v1.Domain`. Every update is a read-modify-write made conditional on the
record's `notification_version`, which this module bumps (the store keeps what it is given);
a lost race re-reads and re-applies the update a few times before giving up with
ServiceBusyError, as Cadence's frontend does.

Cadenza is a single cluster (`cluster_name`, "cadenza" by default), so every domain is
active there and can never fail over. Registration accepts `is_global_domain` (the Cadence
CLI sends true by default) but only with that one cluster.

Caching: the hot path resolves a domain on every call, so domains are cached by name and by
id for `cache_ttl_seconds` (default 5 s). Updates made through this handler replace the
cached copy at once; updates made through another frontend show up within the TTL, as with
Cadence's own domain cache. Unknown names are not cached, so a domain registered elsewhere
is usable at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import grpc
import structlog
from cadence.api.v1 import domain_pb2, service_domain_pb2, service_domain_pb2_grpc

from engine.clock import Clock, SystemClock
from engine.errors import (
    BadRequestError,
    ConditionFailedError,
    DomainAlreadyExistsError,
    EntityNotExistsError,
    ServiceBusyError,
    quote,
)
from engine.frontend import validation as v
from engine.frontend.errors import CLUSTER_NAME, rpc
from engine.frontend.values import check_values
from engine.persistence.protocols import DomainRecord, DomainStore

__all__ = ["DomainHandler"]

log = structlog.get_logger(__name__)

# Cadence's "empty version": the failover version of a local domain.
LOCAL_FAILOVER_VERSION: Final = -24
# The initial failover version of the (only) cluster, used by global domains.
GLOBAL_FAILOVER_VERSION: Final = 0
DEFAULT_PAGE_SIZE: Final = 100
# MaxBadBinaryCount: the oldest entries are dropped beyond it.
MAX_BAD_BINARIES: Final = 10
# Conditional-update attempts before answering ServiceBusy.
UPDATE_ATTEMPTS: Final = 5

_NS: Final = 1_000_000_000

# Update-mask paths (Cadence's proto mapper names) that this server applies.
_CONFIG_PATHS: Final = frozenset(
    {
        "description",
        "owner_email",
        "data",
        "workflow_execution_retention_period",
        "bad_binaries",
        "delete_bad_binary",
        "history_archival_status",
        "history_archival_uri",
        "visibility_archival_status",
        "visibility_archival_uri",
    }
)
# Replication and failover paths: only a no-op value is accepted on a single cluster.
_REPLICATION_PATHS: Final = frozenset(
    {"active_cluster_name", "clusters", "failover_timeout", "active_clusters"}
)


@dataclass(slots=True)
class _Cached:
    domain: domain_pb2.Domain
    expires_ns: int


def _copy(domain: domain_pb2.Domain) -> domain_pb2.Domain:
    # Callers get their own copy: a caller mutating a cached proto would corrupt the cache.
    out = domain_pb2.Domain()
    out.CopyFrom(domain)
    return out


def _decode(record: DomainRecord) -> domain_pb2.Domain:
    domain = domain_pb2.Domain()
    domain.ParseFromString(record.info)
    return domain


def _not_found(name: str) -> EntityNotExistsError:
    return EntityNotExistsError(f"Domain: {quote(name)} does not exist.")


class DomainHandler(service_domain_pb2_grpc.DomainAPIServicer):
    """The DomainAPI servicer and the frontend's domain cache.

    Args:
        store: where domains live.
        cluster_name: the single cluster every domain is active in.
        cache_ttl_seconds: how long a resolved domain is served from memory.
        default_retention_days: retention when RegisterDomain leaves it unset.
        min_retention_days, max_retention_days: the accepted retention range.
        clock: time source for cache expiry and bad-binary timestamps.
    """

    def __init__(
        self,
        store: DomainStore,
        *,
        cluster_name: str = CLUSTER_NAME,
        cache_ttl_seconds: float = 5.0,
        default_retention_days: int = v.DEFAULT_RETENTION_DAYS,
        min_retention_days: int = v.MIN_RETENTION_DAYS,
        max_retention_days: int = v.MAX_RETENTION_DAYS,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self.cluster_name = cluster_name
        self._ttl_ns = int(cache_ttl_seconds * _NS)
        self._default_retention_days = default_retention_days
        self._min_retention_days = min_retention_days
        self._max_retention_days = max_retention_days
        self._clock: Clock = clock or SystemClock()
        self._by_name: dict[str, _Cached] = {}
        self._by_id: dict[str, _Cached] = {}

    # --- cache / resolution -----------------------------------------------------------------

    def _remember(self, domain: domain_pb2.Domain) -> None:
        entry = _Cached(_copy(domain), self._clock.now_ns() + self._ttl_ns)
        self._by_name[domain.name] = entry
        self._by_id[domain.id] = entry

    def _cached(self, table: dict[str, _Cached], key: str) -> domain_pb2.Domain | None:
        entry = table.get(key)
        if entry is None:
            return None
        if self._clock.now_ns() >= entry.expires_ns:
            del table[key]
            return None
        return entry.domain

    def invalidate(self, name: str = "", domain_id: str = "") -> None:
        """Forget a cached domain (by name, id or both); the next resolve reads the store."""
        for table, key in ((self._by_name, name), (self._by_id, domain_id)):
            entry = table.pop(key, None) if key else None
            if entry is not None:
                self._by_name.pop(entry.domain.name, None)
                self._by_id.pop(entry.domain.id, None)

    async def resolve(self, name: str, for_start: bool = False) -> domain_pb2.Domain:
        """The domain called `name` (a private copy), from the cache when fresh.

        Raises:
            BadRequestError: `name` is empty, or `for_start` and the domain is deprecated
                (Cadence refuses new runs in a deprecated domain but serves everything else).
            EntityNotExistsError: no such domain.
        """
        if not name:
            raise BadRequestError("Domain not set on request.")
        domain = self._cached(self._by_name, name)
        if domain is None:
            record = await self._store.get_domain(name=name)
            if record is None:
                raise _not_found(name)
            domain = _decode(record)
            self._remember(domain)
        if for_start and domain.status == domain_pb2.DOMAIN_STATUS_DEPRECATED:
            raise BadRequestError("Domain is deprecated.")
        return _copy(domain)

    async def resolve_id(self, domain_id: str) -> domain_pb2.Domain:
        """The domain with id `domain_id` (a private copy), from the cache when fresh."""
        domain = self._cached(self._by_id, domain_id)
        if domain is None:
            record = await self._store.get_domain(domain_id=domain_id) if domain_id else None
            if record is None:
                raise EntityNotExistsError(f"Domain ID: {quote(domain_id)} does not exist.")
            domain = _decode(record)
            self._remember(domain)
        return _copy(domain)

    async def ensure_domain(
        self, name: str, *, retention_days: int | None = None
    ) -> domain_pb2.Domain:
        """Register `name` as a local domain unless it exists; return it either way.

        For `cadenza dev --domain X` and tests: idempotent and safe to race.
        """
        request = service_domain_pb2.RegisterDomainRequest(name=name)
        if retention_days is not None:
            request.workflow_execution_retention_period.seconds = retention_days * 86_400
        try:
            await self._register(request)
        except DomainAlreadyExistsError:
            pass
        return await self.resolve(name)

    # --- DomainAPI --------------------------------------------------------------------------

    @rpc
    async def RegisterDomain(
        self, request: service_domain_pb2.RegisterDomainRequest, context: grpc.aio.ServicerContext
    ) -> service_domain_pb2.RegisterDomainResponse:
        await self._register(request)
        return service_domain_pb2.RegisterDomainResponse()

    @rpc
    async def DescribeDomain(
        self, request: service_domain_pb2.DescribeDomainRequest, context: grpc.aio.ServicerContext
    ) -> service_domain_pb2.DescribeDomainResponse:
        v.validate_describe_domain_request(request)
        # Describe always reads the store: it is rare, and its caller expects fresh data.
        if request.WhichOneof("describe_by") == "id":
            record = await self._store.get_domain(domain_id=request.id)
            if record is None:
                raise EntityNotExistsError(f"Domain ID: {quote(request.id)} does not exist.")
        else:
            record = await self._store.get_domain(name=request.name)
            if record is None:
                raise _not_found(request.name)
        domain = _decode(record)
        self._remember(domain)
        return service_domain_pb2.DescribeDomainResponse(domain=domain)

    @rpc
    async def ListDomains(
        self, request: service_domain_pb2.ListDomainsRequest, context: grpc.aio.ServicerContext
    ) -> service_domain_pb2.ListDomainsResponse:
        v.validate_list_domains_request(request)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        records, token = await self._store.list_domains(page_size, request.next_page_token)
        return service_domain_pb2.ListDomainsResponse(
            domains=[_decode(r) for r in records], next_page_token=token
        )

    @rpc
    async def UpdateDomain(
        self, request: service_domain_pb2.UpdateDomainRequest, context: grpc.aio.ServicerContext
    ) -> service_domain_pb2.UpdateDomainResponse:
        v.validate_update_domain_request(request)
        paths = list(request.update_mask.paths)
        for path in paths:
            if path not in _CONFIG_PATHS and path not in _REPLICATION_PATHS:
                raise BadRequestError(f"Invalid update mask path: {quote(path)}.")
        domain = await self._update(request.name, lambda d: self._apply_update(d, request, paths))
        return service_domain_pb2.UpdateDomainResponse(domain=domain)

    @rpc
    async def DeprecateDomain(
        self, request: service_domain_pb2.DeprecateDomainRequest, context: grpc.aio.ServicerContext
    ) -> service_domain_pb2.DeprecateDomainResponse:
        v.validate_domain_name_request(request)

        def deprecate(domain: domain_pb2.Domain) -> None:
            domain.status = domain_pb2.DOMAIN_STATUS_DEPRECATED

        await self._update(request.name, deprecate)
        return service_domain_pb2.DeprecateDomainResponse()

    @rpc
    async def DeleteDomain(
        self, request: service_domain_pb2.DeleteDomainRequest, context: grpc.aio.ServicerContext
    ) -> service_domain_pb2.DeleteDomainResponse:
        v.validate_domain_name_request(request)
        # Deleting needs "no executions left" and the store protocol has no delete yet.
        raise BadRequestError("DeleteDomain is not supported by this server.")

    @rpc
    async def FailoverDomain(
        self, request: service_domain_pb2.FailoverDomainRequest, context: grpc.aio.ServicerContext
    ) -> service_domain_pb2.FailoverDomainResponse:
        v.check_domain(request.domain_name)
        check_values(request)
        await self.resolve(request.domain_name)
        raise BadRequestError(
            f"Domain {quote(request.domain_name)} cannot fail over: this server has a single "
            f"cluster ({self.cluster_name})."
        )

    @rpc
    async def ListFailoverHistory(
        self,
        request: service_domain_pb2.ListFailoverHistoryRequest,
        context: grpc.aio.ServicerContext,
    ) -> service_domain_pb2.ListFailoverHistoryResponse:
        # A single cluster never fails over, so every domain's history is empty.
        return service_domain_pb2.ListFailoverHistoryResponse()

    # --- internals --------------------------------------------------------------------------

    def _check_clusters(self, active: str, clusters: list[str]) -> None:
        if active and active != self.cluster_name:
            raise BadRequestError(
                f"Invalid active cluster name: {quote(active)}. This server has the single cluster "
                f"{self.cluster_name}."
            )
        for name in clusters:
            if name != self.cluster_name:
                raise BadRequestError(
                    f"Invalid cluster name: {quote(name)}. This server has the single cluster "
                    f"{self.cluster_name}."
                )

    async def _register(self, request: service_domain_pb2.RegisterDomainRequest) -> None:
        days = v.validate_register_domain_request(
            request,
            default_retention_days=self._default_retention_days,
            min_retention_days=self._min_retention_days,
            max_retention_days=self._max_retention_days,
        )
        if await self._store.get_domain(name=request.name) is not None:
            raise DomainAlreadyExistsError("Domain already exists.")
        self._check_clusters(
            request.active_cluster_name, [c.cluster_name for c in request.clusters]
        )
        if request.HasField("active_clusters"):
            raise BadRequestError("Active-active domains are not supported by this server.")
        domain = domain_pb2.Domain(
            id=str(uuid.uuid4()),
            name=request.name,
            status=domain_pb2.DOMAIN_STATUS_REGISTERED,
            description=request.description,
            owner_email=request.owner_email,
            data=dict(request.data),
            history_archival_status=(
                request.history_archival_status or domain_pb2.ARCHIVAL_STATUS_DISABLED
            ),
            history_archival_uri=request.history_archival_uri,
            visibility_archival_status=(
                request.visibility_archival_status or domain_pb2.ARCHIVAL_STATUS_DISABLED
            ),
            visibility_archival_uri=request.visibility_archival_uri,
            active_cluster_name=self.cluster_name,
            clusters=[domain_pb2.ClusterReplicationConfiguration(cluster_name=self.cluster_name)],
            failover_version=(
                GLOBAL_FAILOVER_VERSION if request.is_global_domain else LOCAL_FAILOVER_VERSION
            ),
            is_global_domain=request.is_global_domain,
        )
        domain.workflow_execution_retention_period.seconds = days * v.SECONDS_PER_DAY
        record = DomainRecord(id=domain.id, name=domain.name, info=domain.SerializeToString())
        try:
            await self._store.create_domain(record)
        except ConditionFailedError as exc:
            # Lost a race with a concurrent register of the same name.
            raise DomainAlreadyExistsError("Domain already exists.") from exc
        self._remember(domain)
        log.info("domain_registered", domain=domain.name, domain_id=domain.id)

    async def _update(
        self, name: str, mutate: Callable[[domain_pb2.Domain], None]
    ) -> domain_pb2.Domain:
        """Read `name`, apply `mutate(domain)` and write it back, fenced on the version."""
        for _ in range(UPDATE_ATTEMPTS):
            record = await self._store.get_domain(name=name)
            if record is None:
                raise _not_found(name)
            domain = _decode(record)
            mutate(domain)
            updated = DomainRecord(
                id=record.id,
                name=record.name,
                info=domain.SerializeToString(),
                notification_version=record.notification_version + 1,
            )
            try:
                await self._store.update_domain(updated, record.notification_version)
            except ConditionFailedError:
                # Someone else updated it in between: re-read and re-apply on top.
                continue
            self._remember(domain)
            return domain
        raise ServiceBusyError("Domain update too frequent.")

    def _apply_update(
        self,
        domain: domain_pb2.Domain,
        request: service_domain_pb2.UpdateDomainRequest,
        paths: list[str],
    ) -> None:
        for path in paths:
            if path == "description":
                domain.description = request.description
            elif path == "owner_email":
                domain.owner_email = request.owner_email
            elif path == "data":
                # Merged, as Cadence does: keys absent from the request are kept.
                domain.data.update(request.data)
            elif path == "workflow_execution_retention_period":
                days = v.retention_days(request.workflow_execution_retention_period)
                v.validate_retention(
                    days, min_days=self._min_retention_days, max_days=self._max_retention_days
                )
                domain.workflow_execution_retention_period.Clear()
                domain.workflow_execution_retention_period.seconds = days * v.SECONDS_PER_DAY
            elif path == "bad_binaries":
                self._merge_bad_binaries(domain, request.bad_binaries)
            elif path == "delete_bad_binary":
                checksum = request.delete_bad_binary
                if checksum not in domain.bad_binaries.binaries:
                    raise BadRequestError(f"Bad binary checksum {quote(checksum)} doesn't exists.")
                del domain.bad_binaries.binaries[checksum]
            elif path in ("history_archival_status", "visibility_archival_status"):
                status = getattr(request, path)
                v.check_enum(path, status, domain_pb2.ArchivalStatus.values())
                if status != domain_pb2.ARCHIVAL_STATUS_INVALID:
                    setattr(domain, path, status)
            elif path in ("history_archival_uri", "visibility_archival_uri"):
                setattr(domain, path, getattr(request, path))
            elif path == "active_cluster_name":
                self._check_clusters(request.active_cluster_name, [])
            elif path == "clusters":
                names = [c.cluster_name for c in request.clusters]
                self._check_clusters("", names)
                if self.cluster_name not in names:
                    raise BadRequestError(
                        f"Clusters must include the active cluster {self.cluster_name}."
                    )
            elif path == "failover_timeout":
                raise BadRequestError(
                    "Graceful failover is not supported: this server has a single cluster."
                )
            elif path == "active_clusters":
                raise BadRequestError("Active-active domains are not supported by this server.")

    def _merge_bad_binaries(
        self, domain: domain_pb2.Domain, update: domain_pb2.BadBinaries
    ) -> None:
        now_ns = self._clock.now_ns()
        for checksum, info in update.binaries.items():
            entry = domain.bad_binaries.binaries[checksum]
            entry.CopyFrom(info)
            if not entry.HasField("created_time"):
                entry.created_time.seconds = now_ns // _NS
                entry.created_time.nanos = now_ns % _NS
        binaries = domain.bad_binaries.binaries
        if len(binaries) > MAX_BAD_BINARIES:
            # Keep the newest entries, as Cadence's MaxBadBinaryCount trimming does.
            by_age = sorted(
                binaries.items(),
                key=lambda kv: (kv[1].created_time.seconds, kv[1].created_time.nanos),
            )
            for checksum, _ in by_age[: len(binaries) - MAX_BAD_BINARIES]:
                del binaries[checksum]
