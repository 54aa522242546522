"""The production path, run for real (issue #10): separate processes per service on
PostgreSQL and Redis behind Envoy. A live stream survives a rolling restart of the replicated
service without a gap, events cross processes, migrations apply from empty and then as a
no-op."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import pytest

from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.config import SERVICE_NAMES, Settings
from tests.e2e.production.cluster import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    REPLICATED,
    Cluster,
    running_cluster,
)

T = TypeVar("T")
_BASE_IDS = itertools.count(os.getpid() % 100_000 * 100 + 50)
# Answers that mean "try again": a replica draining or restarting, Envoy between hosts, a call
# a draining replica cut at the end of its grace. Safe to retry: every call here carries its
# request_id, so a retry gets the first call's result, never a second alert.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


@pytest.fixture(scope="module")
async def cluster(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    async with running_cluster(
        settings, tmp_path_factory.mktemp("production"), next(_BASE_IDS)
    ) as running:
        yield running


async def retried(call: Callable[[], Awaitable[T]], *, attempts: int = 60) -> T:
    """What a well-behaved client does with an idempotent call (same request_id each time)."""
    for attempt in range(attempts):
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


async def sign_in(cluster: Cluster, email: str, password: str) -> tuple[tuple[str, str], ...]:
    async with cluster.edge_channel() as channel:
        response = await retried(
            lambda: auth_pb2_grpc.AuthServiceStub(channel).Login(
                auth_pb2.LoginRequest(email=email, password=password), timeout=10
            )
        )
    return (("authorization", f"Bearer {response.tokens.access_token}"),)


def test_migrations_applied_from_empty_and_again_as_a_no_op(cluster: Cluster) -> None:
    first, second = cluster.migrate_output
    assert [line.split(":")[0] for line in first.splitlines()] == list(SERVICE_NAMES)
    assert all(": migrated to " in line for line in first.splitlines()), first
    assert all(": up to date at " in line for line in second.splitlines()), second
    # The same revisions both times.
    assert [line.rsplit(" ", 1)[1] for line in first.splitlines()] == [
        line.rsplit(" ", 1)[1] for line in second.splitlines()
    ]


@dataclass
class FeedReader:
    """A client of StreamEvents through Envoy that resumes after every interruption."""

    stub: monitoring_pb2_grpc.MonitoringServiceAsyncStub
    metadata: tuple[tuple[str, str], ...]
    building: str
    items: list[monitoring_pb2.FeedItem] = field(default_factory=list)
    interruptions: list[grpc.StatusCode] = field(default_factory=list)
    last_id: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            request = monitoring_pb2.StreamEventsRequest(
                building=self.building,
                event_types=["alert.triggered"],
                resume_after=self.last_id,
            )
            try:
                async for response in self.stub.StreamEvents(request, metadata=self.metadata):
                    if response.HasField("event"):
                        self.items.append(response.event)
                        self.last_id = response.event.id
                        self.arrived.set()
                    elif response.heartbeat.last_event_id:
                        self.last_id = response.heartbeat.last_event_id
            except grpc.aio.AioRpcError as error:
                # Whatever ended the stream (a draining replica, Envoy), resume after the last
                # event seen. (This task's own cancellation is asyncio.CancelledError.)
                self.interruptions.append(error.code())
            await asyncio.sleep(0.2)

    async def wait_for(self, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def test_a_live_stream_survives_a_rolling_restart_without_a_gap(cluster: Cluster) -> None:
    admin = await sign_in(cluster, ADMIN_EMAIL, ADMIN_PASSWORD)
    async with cluster.edge_channel() as channel:
        stub: monitoring_pb2_grpc.MonitoringServiceAsyncStub = (
            monitoring_pb2_grpc.MonitoringServiceStub(channel)
        )
        building = (
            await retried(
                lambda: stub.CreateBuilding(
                    monitoring_pb2.CreateBuildingRequest(
                        building=monitoring_pb2.Building(
                            display_name="Harbour Tower", time_zone="Europe/Madrid"
                        ),
                        request_id=str(uuid.uuid4()),
                    ),
                    metadata=admin,
                    timeout=10,
                )
            )
        ).building
        reader = FeedReader(stub, admin, building.name)
        reading = asyncio.create_task(reader.run())
        raised: list[str] = []

        async def raise_alert(summary: str) -> None:
            request = monitoring_pb2.RaiseAlertRequest(
                parent=building.name,
                severity=common_pb2.SEVERITY_MEDIUM,
                summary=summary,
                dedup_key=summary,
                request_id=str(uuid.uuid4()),
            )
            await retried(lambda: stub.RaiseAlert(request, metadata=admin, timeout=10))
            raised.append(summary)

        try:
            await raise_alert("before the rollout")
            await reader.wait_for(1)
            # Alerts keep coming while each replica in turn is stopped (SIGTERM: drain) and
            # started again, as `kubectl rollout restart` does with maxUnavailable 0.
            stop_raising = asyncio.Event()

            async def keep_raising() -> None:
                for n in itertools.count():
                    if stop_raising.is_set():
                        return
                    await raise_alert(f"during the rollout #{n}")
                    await asyncio.sleep(0.1)

            raising = asyncio.create_task(keep_raising())
            for replica in cluster.replicas[REPLICATED]:
                assert await replica.stop() == 0, replica.log.read_text()[-2000:]
                await asyncio.sleep(0.5)
                await replica.start()
            stop_raising.set()
            await raising
            await raise_alert("after the rollout")
            await reader.wait_for(len(raised))
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    received = [item.summary.removeprefix("Alert: ") for item in reader.items]
    assert len(received) == len(set(received)), "an alert arrived twice"
    assert sorted(received) == sorted(raised), "an alert was lost"
    # The stream was cut at least once (its replica drained) and resumed each time.
    assert reader.interruptions, "the rollout never interrupted the stream"
    assert len(raised) > 3


async def test_events_cross_processes_into_the_audit_trail(cluster: Cluster) -> None:
    # A user without monitoring permissions is refused by a monitoring process; the denial
    # travels over Redis to the auth process, which keeps it in the security audit trail.
    email = f"visitor-{uuid.uuid4().hex[:8]}@gatehouse.test"
    password = "another long passphrase"
    async with cluster.edge_channel() as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        user = (
            await retried(
                lambda: auth.Register(
                    auth_pb2.RegisterRequest(
                        email=email,
                        password=password,
                        display_name="Visitor",
                        request_id=str(uuid.uuid4()),
                    ),
                    timeout=10,
                )
            )
        ).user
        visitor = await sign_in(cluster, email, password)
        monitoring = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await monitoring.ListBuildings(
                monitoring_pb2.ListBuildingsRequest(), metadata=visitor, timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        admin = await sign_in(cluster, ADMIN_EMAIL, ADMIN_PASSWORD)
        request = auth_pb2.ListSecurityEventsRequest(
            user=user.name, types=[auth_pb2.SECURITY_EVENT_TYPE_PERMISSION_DENIED]
        )
        async with asyncio.timeout(30):
            while True:
                events = (
                    await auth.ListSecurityEvents(request, metadata=admin, timeout=10)
                ).security_events
                if events:
                    break
                await asyncio.sleep(0.2)
    (denial,) = events
    assert denial.details["method"].endswith("MonitoringService/ListBuildings")
    assert denial.actor.service == "spiffe://gatehouse/envoy"
