"""The session hub: local delivery, routing to another replica's session, replacement across
replicas, and "offline" without waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.monitoring.adapters.sessions import SessionHub
from gatehouse.monitoring.domain.alerts import Actor
from gatehouse.monitoring.domain.commands import Command
from gatehouse.monitoring.domain.enums import CommandKind
from gatehouse.monitoring.domain.sessions import Delivery, SessionEnd
from gatehouse.runtime.bus import InProcessEventBus
from gatehouse.runtime.errors import Aborted
from gatehouse.runtime.kv import InMemoryKeyValueStore

DEVICE = "buildings/b1/devices/d1"


def replaced() -> Aborted:
    return Aborted("replaced", reason="DEVICE_SESSION_REPLACED")


def command(command_id: str = "c1") -> Command:
    now = datetime.now(UTC)
    return Command(
        id=command_id,
        building_id="b1",
        device_id="d1",
        kind=CommandKind.REBOOT,
        deadline=now + timedelta(seconds=30),
        requested_by=Actor(user="users/u"),
        create_time=now,
    )


@pytest.fixture
async def hubs() -> AsyncIterator[tuple[SessionHub, SessionHub]]:
    bus, kv = InProcessEventBus(), InMemoryKeyValueStore()

    def hub(name: str) -> SessionHub:
        return SessionHub(
            kv,
            bus,
            session_ttl=timedelta(seconds=5),
            refresh_every=timedelta(seconds=1),
            receipt_timeout=timedelta(milliseconds=300),
            queue_size=2,
            replaced_error=replaced,
            replica_id=name,
        )

    first, second = hub("r1"), hub("r2")
    await first.start()
    await second.start()
    yield first, second
    await first.stop()
    await second.stop()
    await bus.close()


async def test_local_delivery_and_a_full_queue(hubs: tuple[SessionHub, SessionHub]) -> None:
    hub, _ = hubs
    session = hub.new_session(DEVICE, "d1", "b1")
    await hub.register(session)
    assert await hub.deliver(DEVICE, command("c1")) is Delivery.DELIVERED
    assert await hub.deliver(DEVICE, command("c2")) is Delivery.DELIVERED
    assert await hub.deliver(DEVICE, command("c3")) is Delivery.QUEUE_FULL
    received = session.queue.get_nowait()
    assert isinstance(received, Command)
    assert received.id == "c1"


async def test_routing_to_another_replica(hubs: tuple[SessionHub, SessionHub]) -> None:
    first, second = hubs
    session = second.new_session(DEVICE, "d1", "b1")
    await second.register(session)
    assert await first.is_live(DEVICE)
    assert await first.deliver(DEVICE, command()) is Delivery.DELIVERED
    received = session.queue.get_nowait()
    assert isinstance(received, Command)
    assert (received.id, received.kind, received.requested_by.user) == (
        "c1",
        CommandKind.REBOOT,
        "users/u",
    )


async def test_offline_devices_are_refused_without_waiting(
    hubs: tuple[SessionHub, SessionHub],
) -> None:
    first, second = hubs
    assert not await first.is_live(DEVICE)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await first.deliver(DEVICE, command()) is Delivery.OFFLINE
    assert loop.time() - started < 0.05
    session = second.new_session(DEVICE, "d1", "b1")
    await second.register(session)
    await second.unregister(session)
    assert not await first.is_live(DEVICE)
    assert await first.deliver(DEVICE, command()) is Delivery.OFFLINE


async def test_a_replica_that_does_not_answer(hubs: tuple[SessionHub, SessionHub]) -> None:
    first, second = hubs
    await second.register(second.new_session(DEVICE, "d1", "b1"))
    await second.stop()  # its record lingers until the TTL, nobody reads its inbox
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await first.deliver(DEVICE, command()) is Delivery.OFFLINE
    assert loop.time() - started < 1.0


async def test_replacement_ends_the_older_session_anywhere(
    hubs: tuple[SessionHub, SessionHub],
) -> None:
    first, second = hubs
    older = first.new_session(DEVICE, "d1", "b1")
    await first.register(older)
    same_replica = first.new_session(DEVICE, "d1", "b1")
    await first.register(same_replica)
    assert older.end_reason is SessionEnd.REPLACED
    assert isinstance(older.error, Aborted)
    newest = second.new_session(DEVICE, "d1", "b1")
    await second.register(newest)
    async with asyncio.timeout(5):
        await same_replica.ended.wait()
    assert same_replica.end_reason is SessionEnd.REPLACED
    assert not newest.ended.is_set()
    # The replaced session cleaning up must not erase the newer one's record.
    await first.unregister(same_replica)
    assert await first.is_live(DEVICE)
