"""DomainHandler served on a real grpc.aio server, called with the official Python client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cadence import error as cadence_error
from cadence.api.v1 import domain_pb2, service_domain_pb2, service_domain_pb2_grpc
from cadence.client import Client
from google.protobuf import duration_pb2, field_mask_pb2

from engine.frontend.domain import DomainHandler
from engine.persistence.sqlite.store import SqliteStore


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    store = SqliteStore(str(tmp_path / "domains.db"))
    await store.start()
    server = grpc.aio.server()
    service_domain_pb2_grpc.add_DomainAPIServicer_to_server(DomainHandler(store), server)  # type: ignore[no-untyped-call]  # generated grpc code is untyped
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    c = Client(domain="orders", target=f"127.0.0.1:{port}")
    yield c
    await c.close()
    await server.stop(None)
    await store.stop()


async def test_register_describe_update_deprecate(client: Client) -> None:
    stub = client.domain_stub
    await stub.RegisterDomain(
        service_domain_pb2.RegisterDomainRequest(
            name="orders",
            description="order processing",
            workflow_execution_retention_period=timedelta(days=2),
        )
    )
    described = await stub.DescribeDomain(service_domain_pb2.DescribeDomainRequest(name="orders"))
    d = described.domain
    assert d.name == "orders"
    assert d.description == "order processing"
    assert d.workflow_execution_retention_period.ToTimedelta() == timedelta(days=2)
    assert d.status == domain_pb2.DOMAIN_STATUS_REGISTERED
    by_id = await stub.DescribeDomain(service_domain_pb2.DescribeDomainRequest(id=d.id))
    assert by_id.domain == d

    updated = await stub.UpdateDomain(
        service_domain_pb2.UpdateDomainRequest(
            name="orders",
            update_mask=field_mask_pb2.FieldMask(
                paths=["owner_email", "workflow_execution_retention_period"]
            ),
            owner_email="team@example.com",
            workflow_execution_retention_period=duration_pb2.Duration(seconds=5 * 86_400),
        )
    )
    assert updated.domain.owner_email == "team@example.com"
    assert updated.domain.workflow_execution_retention_period.seconds == 5 * 86_400
    assert updated.domain.description == "order processing"

    await stub.DeprecateDomain(service_domain_pb2.DeprecateDomainRequest(name="orders"))
    described = await stub.DescribeDomain(service_domain_pb2.DescribeDomainRequest(name="orders"))
    assert described.domain.status == domain_pb2.DOMAIN_STATUS_DEPRECATED


async def test_typed_errors_reach_the_client(client: Client) -> None:
    stub = client.domain_stub
    await stub.RegisterDomain(service_domain_pb2.RegisterDomainRequest(name="orders"))
    with pytest.raises(cadence_error.DomainAlreadyExistsError) as exists:
        await stub.RegisterDomain(service_domain_pb2.RegisterDomainRequest(name="orders"))
    assert exists.value.code == grpc.StatusCode.ALREADY_EXISTS

    with pytest.raises(cadence_error.EntityNotExistsError) as missing:
        await stub.DescribeDomain(service_domain_pb2.DescribeDomainRequest(name="ghost"))
    assert missing.value.args[0] == "Domain: ghost does not exist."
    assert missing.value.current_cluster == missing.value.active_cluster == "cadenza"

    with pytest.raises(cadence_error.CadenceRpcError) as bad:
        await stub.RegisterDomain(service_domain_pb2.RegisterDomainRequest(name="no spaces"))
    assert type(bad.value) is cadence_error.CadenceRpcError
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "alphanumeric and dash" in bad.value.args[0]

    with pytest.raises(cadence_error.CadenceRpcError) as mask:
        await stub.UpdateDomain(
            service_domain_pb2.UpdateDomainRequest(
                name="orders", update_mask=field_mask_pb2.FieldMask(paths=["colour"])
            )
        )
    assert mask.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_domains_pages(client: Client) -> None:
    stub = client.domain_stub
    for name in ("c", "a", "b"):
        await stub.RegisterDomain(service_domain_pb2.RegisterDomainRequest(name=name))
    first = await stub.ListDomains(service_domain_pb2.ListDomainsRequest(page_size=2))
    assert [d.name for d in first.domains] == ["a", "b"]
    assert first.next_page_token
    second = await stub.ListDomains(
        service_domain_pb2.ListDomainsRequest(page_size=2, next_page_token=first.next_page_token)
    )
    assert [d.name for d in second.domains] == ["c"]
    assert second.next_page_token == b""
