"""`gatehouse events` as an operator runs it: a real subprocess against the real Redis.

Each test writes to its own key prefix (`GATEHOUSE_KEY_PREFIX`) through the bus API, runs the
command, and checks its output and what it changed in Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.payments.v1.events_pb2 import PaymentFailed
from gatehouse.runtime.bus import DeadLetterInfo, RedisStreamsEventBus, dead_letter_stream
from gatehouse.runtime.events import new_event
from gatehouse.runtime.redis_connection import RedisConnection, RedisOptions
from tests.integration.redis_fixtures import redis_prefix, redis_url  # noqa: F401

BIN = Path(sys.executable).parent
PAYMENTS = "events.payment"
DEAD = dead_letter_stream(PAYMENTS, "notifications")
TIMEOUT = 60.0


@dataclass
class Cli:
    bus: RedisStreamsEventBus
    env: dict[str, str]
    cwd: Path

    async def run(self, *args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "gatehouse"),
            "events",
            *args,
            env=self.env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEHOUSE_")}
    env["GATEHOUSE_HOME"] = str(tmp_path / ".gatehouse")
    return env


@pytest.fixture
async def cli(
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Cli]:
    prefix = f"{redis_prefix}{secrets.token_hex(4)}:"
    env = _clean_env(tmp_path) | {"GATEHOUSE_REDIS_URL": redis_url, "GATEHOUSE_KEY_PREFIX": prefix}
    async with RedisConnection.from_url(redis_url, RedisOptions(key_prefix=prefix)) as connection:
        yield Cli(RedisStreamsEventBus(connection), env, tmp_path)


def payment_failed(n: int) -> Event:
    return new_event(
        "payment.failed",
        source="payments",
        subject=f"payments/p{n}",
        data=PaymentFailed(payment=f"payments/p{n}", failure_code="CARD_DECLINED"),
    )


async def dead_letter(cli: Cli, event: Event, error: str = "RuntimeError: smtp down") -> str:
    """Publish `event` and dead-letter it the way a consumer would; its dead-letter position."""
    position = await cli.bus.publish(PAYMENTS, event)
    info = DeadLetterInfo(
        stream=PAYMENTS,
        group="notifications",
        position=position,
        reason="handler_failed",
        error=error,
        attempts=5,
        consumer="host-1-abc123",
        time=datetime(2030, 1, 1, 12, 0, tzinfo=UTC),
    )
    return await cli.bus.dead_letter(event, info)


async def test_embedded_mode_says_the_bus_is_not_reachable(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "gatehouse"),
        "events",
        "dead-letters",
        env=_clean_env(tmp_path),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 2
    assert stdout == b""
    assert "GATEHOUSE_REDIS_URL is not set" in stderr.decode()
    assert "lives inside the `gatehouse up` process" in stderr.decode()


@pytest.mark.redis
async def test_dead_letters_lists_every_dead_letter(cli: Cli) -> None:
    code, out, _ = await cli.run("dead-letters")
    assert (code, out.strip()) == (0, "no dead letters")
    first, second = payment_failed(1), payment_failed(2)
    first_position = await dead_letter(cli, first)
    await dead_letter(cli, second, error="TimeoutError: provider slow")
    other = await cli.bus.publish("events.access", payment_failed(3))
    assert other

    code, out, _ = await cli.run("dead-letters")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{DEAD}  {first_position}  payment.failed id={first.id}")
    assert "reason=handler_failed" in lines[0]
    assert "attempts=5" in lines[0]
    assert "error=RuntimeError: smtp down" in lines[0]
    assert "error=TimeoutError: provider slow" in lines[1]

    code, out, _ = await cli.run("dead-letters", "--stream", PAYMENTS, "--json")
    documents = [json.loads(line) for line in out.strip().splitlines()]
    assert code == 0
    assert [d["event"]["id"] for d in documents] == [first.id, second.id]
    assert documents[0]["dead_letter"]["consumer"] == "host-1-abc123"
    assert documents[0]["dead_letter"]["stream"] == PAYMENTS

    code, out, _ = await cli.run("dead-letters", "--stream", "events.access")
    assert (code, out.strip()) == (0, "no dead letters for events.access")


@pytest.mark.redis
async def test_show_prints_an_event_with_its_payload_decoded(cli: Cli) -> None:
    event = payment_failed(1)
    position = await cli.bus.publish(PAYMENTS, event)
    code, out, _ = await cli.run("show", PAYMENTS, position)
    assert code == 0
    document = json.loads(out)
    assert document["position"] == position
    assert document["event"]["id"] == event.id
    assert document["event"]["type"] == "payment.failed"
    assert document["event"]["data"] == {
        "@type": "type.googleapis.com/gatehouse.payments.v1.PaymentFailed",
        "payment": "payments/p1",
        "failure_code": "CARD_DECLINED",
    }

    dead_position = await dead_letter(cli, event)
    republished_at = await cli.bus.latest_position(PAYMENTS)
    code, out, _ = await cli.run("show", DEAD, dead_position)
    assert code == 0
    document = json.loads(out)
    assert document["event"]["id"] == event.id
    assert document["dead_letter"]["position"] == republished_at
    assert document["dead_letter"]["error"] == "RuntimeError: smtp down"

    code, _, err = await cli.run("show", PAYMENTS, "0-999")
    assert code == 1
    assert "no entry at 0-999" in err
    code, _, err = await cli.run("show", PAYMENTS, "not-a-position")
    assert code == 2
    assert "not a position" in err


@pytest.mark.redis
async def test_replay_republishes_and_removes_dead_letters(cli: Cli) -> None:
    events = [payment_failed(n) for n in range(3)]
    positions = [await dead_letter(cli, event) for event in events]
    published_before = await cli.bus.latest_position(PAYMENTS)

    code, out, _ = await cli.run("replay", DEAD, positions[0])
    assert code == 0
    assert out.startswith(f"replayed {DEAD} {positions[0]} -> {PAYMENTS} ")
    replayed = await cli.bus.read(PAYMENTS, after=published_before)
    assert [event for _, event in replayed] == [events[0]]
    assert [d.position for d in await cli.bus.read_dead_letters(DEAD)] == positions[1:]

    code, out, _ = await cli.run("replay", DEAD, "--all")
    assert code == 0
    assert out.strip().splitlines()[-1] == f"replayed 2 dead letters from {DEAD}"
    assert [event for _, event in await cli.bus.read(PAYMENTS, after=published_before)] == events
    assert await cli.bus.read_dead_letters(DEAD) == []

    code, _, err = await cli.run("replay", DEAD, positions[0])
    assert code == 1
    assert "no dead letter" in err
    code, _, err = await cli.run("replay", PAYMENTS, "--all")
    assert code == 2
    assert "not a dead-letter stream" in err


@pytest.mark.redis
async def test_tail_prints_events_as_json_lines_until_interrupted(cli: Cli) -> None:
    old = payment_failed(0)
    start = await cli.bus.publish(PAYMENTS, old)
    process = await asyncio.create_subprocess_exec(
        str(BIN / "gatehouse"),
        "events",
        "tail",
        PAYMENTS,
        "--from",
        start,
        env=cli.env,
        cwd=cli.cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        new = [payment_failed(n) for n in range(1, 4)]
        for event in new:
            await cli.bus.publish(PAYMENTS, event)
        lines = [
            json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT)) for _ in new
        ]
        assert [line["event"]["id"] for line in lines] == [event.id for event in new]
        assert {line["stream"] for line in lines} == {PAYMENTS}
        later = payment_failed(4)
        await cli.bus.publish(PAYMENTS, later)
        line = json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT))
        assert line["event"]["id"] == later.id
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.redis
async def test_tail_from_start_prints_what_is_retained(cli: Cli) -> None:
    events = [payment_failed(n) for n in range(2)]
    for event in events:
        await cli.bus.publish(PAYMENTS, event)
    process = await asyncio.create_subprocess_exec(
        str(BIN / "gatehouse"),
        "events",
        "tail",
        PAYMENTS,
        "--from",
        "start",
        env=cli.env,
        cwd=cli.cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        lines = [
            json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT)) for _ in events
        ]
        assert [line["event"]["id"] for line in lines] == [event.id for event in events]
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), TIMEOUT)
