"""`gatehouse events`: list dead letters, show one entry, replay dead letters, tail a stream.

Works against the Redis the services share (`GATEHOUSE_REDIS_URL`, keys under
`GATEHOUSE_KEY_PREFIX`). In embedded mode there is nothing to connect to: the in-process bus
lives inside the `gatehouse up` process, so the command says so and exits 2.

Output: `dead-letters` prints one line per dead letter (or JSON lines with `--json`); `show`
prints one JSON document; `tail` prints JSON lines until Ctrl-C. Events render with their
payload decoded when its message type is one of Gatehouse's (`@type` + fields), otherwise as
`@type` + base64 `value`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import signal
import sys
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from google.protobuf import json_format

from gatehouse.events.v1.envelope_pb2 import Event
from gatehouse.runtime.bus import (
    DeadLetter,
    EventBusError,
    MalformedEntryError,
    RedisStreamsEventBus,
    StalePositionError,
    is_dead_letter_stream,
    replay_dead_letter,
)
from gatehouse.runtime.config import SERVICE_NAMES, Settings
from gatehouse.runtime.redis_connection import (
    RedisConnection,
    RedisOptions,
    RedisUnavailableError,
)

EMBEDDED_MODE_MESSAGE = (
    "gatehouse events needs the Redis event bus, and GATEHOUSE_REDIS_URL is not set.\n"
    "In embedded mode the in-process event bus lives inside the `gatehouse up` process and "
    "is not reachable from another process.\n"
    "Point GATEHOUSE_REDIS_URL (and GATEHOUSE_KEY_PREFIX, if the services use another) at the "
    "Redis the services use."
)
TAIL_BLOCK = timedelta(seconds=5)
_FROM_OLDEST = frozenset({"0", "start", "oldest", "beginning"})


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `events` and its subcommands to the top-level parser."""
    events = commands.add_parser(
        "events", help="inspect streams and dead letters on Redis; replay dead letters"
    )
    sub = events.add_subparsers(dest="events_command", required=True, metavar="SUBCOMMAND")

    dead = sub.add_parser("dead-letters", help="list dead letters")
    dead.add_argument(
        "--stream",
        help="only this event stream's dead letters (events.payment) or one dead-letter "
        "stream (dead.events.payment.notifications)",
    )
    dead.add_argument("--limit", type=int, default=100, help="per dead-letter stream")
    dead.add_argument("--json", action="store_true", help="JSON lines instead of text")

    show = sub.add_parser("show", help="print one entry of a stream as JSON")
    show.add_argument("stream", help="an event stream or a dead-letter stream")
    show.add_argument("position")

    replay = sub.add_parser(
        "replay",
        help="republish dead letters to their original stream and remove them",
    )
    replay.add_argument("stream", help="a dead-letter stream (dead.<stream>.<consumer>)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("position", nargs="?", help="the dead letter to replay")
    which.add_argument("--all", action="store_true", help="replay every dead letter")

    tail = sub.add_parser("tail", help="print a stream's events as JSON lines until Ctrl-C")
    tail.add_argument("stream")
    tail.add_argument(
        "--from",
        dest="from_position",
        metavar="POSITION",
        help="print events after POSITION ('start' for every retained event); "
        "default: only new events",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.redis_url is None:
        print(EMBEDDED_MODE_MESSAGE, file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings.redis_url, settings.key_prefix))
    except KeyboardInterrupt:
        # The way out of `tail`.
        return 0


async def _run(args: argparse.Namespace, redis_url: str, key_prefix: str) -> int:
    _load_payload_types()
    async with RedisConnection.from_url(
        redis_url, RedisOptions(key_prefix=key_prefix, client_name="gatehouse-events-cli")
    ) as connection:
        try:
            await connection.ping()
        except RedisUnavailableError as error:
            print(error, file=sys.stderr)
            return 1
        bus = RedisStreamsEventBus(connection)
        try:
            return await _dispatch(bus, args)
        except ValueError as error:
            # Malformed positions and the like: the operator's typo, not a crash.
            print(f"error: {error}", file=sys.stderr)
            return 2
        except EventBusError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1


async def _dispatch(bus: RedisStreamsEventBus, args: argparse.Namespace) -> int:
    command: str = args.events_command
    if command == "dead-letters":
        return await _dead_letters(bus, args.stream, args.limit, as_json=args.json)
    if command == "show":
        return await _show(bus, args.stream, args.position)
    if command == "replay":
        return await _replay(bus, args.stream, args.position, replay_all=args.all)
    return await _until_interrupted(_tail(bus, args.stream, args.from_position))


async def _until_interrupted(work: Coroutine[Any, Any, int]) -> int:
    """Run `work` until it ends or SIGINT/SIGTERM arrives (then exit 0).

    Handlers of our own, rather than KeyboardInterrupt: a process started in the background
    of a shell inherits SIGINT *ignored*, and would never notice Ctrl-C relayed by kill -INT.
    The cancel is repeated because Python 3.11's `asyncio.wait_for` (inside redis-py) can
    swallow a cancellation that lands just as its inner wait completes.
    """
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        return 0
    finally:
        waiter.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _dead_letters(
    bus: RedisStreamsEventBus, stream: str | None, limit: int, *, as_json: bool
) -> int:
    streams = await bus.dead_letter_streams()
    if stream is not None:
        streams = [
            name
            for name in streams
            if name == stream
            or (not is_dead_letter_stream(stream) and name.startswith(f"dead.{stream}."))
        ]
    shown = 0
    for name in streams:
        letters = await bus.read_dead_letters(name, count=limit + 1)
        for letter in letters[:limit]:
            shown += 1
            if as_json:
                print(json.dumps(_dead_letter_document(name, letter)), flush=True)
            else:
                print(_dead_letter_line(name, letter), flush=True)
        if len(letters) > limit and not as_json:
            print(f"{name}: more than {limit} dead letters; raise --limit to see them")
    if shown == 0 and not as_json:
        print("no dead letters" + (f" for {stream}" if stream else ""))
    return 0


async def _show(bus: RedisStreamsEventBus, stream: str, position: str) -> int:
    if is_dead_letter_stream(stream):
        letter = await bus.get_dead_letter(stream, position)
        if letter is None:
            print(f"no entry at {position} in {stream}", file=sys.stderr)
            return 1
        print(json.dumps(_dead_letter_document(stream, letter), indent=2))
        return 0
    try:
        event = await bus.get(stream, position)
    except MalformedEntryError:
        print(f"the entry at {position} in {stream} is not an Event", file=sys.stderr)
        return 1
    if event is None:
        print(f"no entry at {position} in {stream}", file=sys.stderr)
        return 1
    document = {"stream": stream, "position": position, "event": event_document(event)}
    print(json.dumps(document, indent=2))
    return 0


async def _replay(
    bus: RedisStreamsEventBus, stream: str, position: str | None, *, replay_all: bool
) -> int:
    if not is_dead_letter_stream(stream):
        print(f"{stream} is not a dead-letter stream (dead.<stream>.<consumer>)", file=sys.stderr)
        return 2
    if not replay_all:
        assert position is not None
        return 0 if await _replay_one(bus, stream, position) else 1
    replayed = failed = 0
    after: str | None = None
    while letters := await bus.read_dead_letters(stream, after=after, count=100):
        for letter in letters:
            if await _replay_one(bus, stream, letter.position):
                replayed += 1
            else:
                failed += 1
        after = letters[-1].position
    print(
        f"replayed {replayed} dead letters from {stream}" + (f", {failed} failed" if failed else "")
    )
    return 1 if failed else 0


async def _replay_one(bus: RedisStreamsEventBus, stream: str, position: str) -> bool:
    letter = await bus.get_dead_letter(stream, position)
    try:
        new_position = await replay_dead_letter(bus, stream, position)
    except ValueError as error:
        print(f"cannot replay {position}: {error}", file=sys.stderr)
        return False
    if letter is None or letter.info is None or new_position is None:
        print(f"no dead letter at {position} in {stream}", file=sys.stderr)
        return False
    print(f"replayed {stream} {position} -> {letter.info.stream} {new_position}", flush=True)
    return True


async def _tail(bus: RedisStreamsEventBus, stream: str, from_position: str | None) -> int:
    after: str | None
    if from_position is None:
        after = await bus.latest_position(stream)
    elif from_position.lower() in _FROM_OLDEST:
        after = None
    else:
        after = from_position
    while True:
        try:
            batch = await bus.read(stream, after=after, count=100, block=TAIL_BLOCK)
        except StalePositionError:
            print(
                f"events after {after} in {stream} are no longer retained; "
                "continuing from the oldest retained event",
                file=sys.stderr,
            )
            after = None
            continue
        except MalformedEntryError as error:
            print(f"skipping {error.position}: not an Event", file=sys.stderr)
            after = error.position
            continue
        for position, event in batch:
            document = {"stream": stream, "position": position, "event": event_document(event)}
            print(json.dumps(document), flush=True)
            after = position


def event_document(event: Event) -> dict[str, Any]:
    """The envelope as a JSON-ready dict, with the payload decoded when its type is known."""
    try:
        return json_format.MessageToDict(event, preserving_proto_field_name=True)
    except (TypeError, KeyError):
        # The payload's message type is not linked into this program: show it raw.
        envelope = Event()
        envelope.CopyFrom(event)
        envelope.ClearField("data")
        document = json_format.MessageToDict(envelope, preserving_proto_field_name=True)
        document["data"] = {
            "@type": event.data.type_url,
            "value": base64.b64encode(event.data.value).decode("ascii"),
        }
        return document


def _dead_letter_document(stream: str, letter: DeadLetter) -> dict[str, Any]:
    document: dict[str, Any] = {"stream": stream, "position": letter.position}
    document["event"] = None if letter.event is None else event_document(letter.event)
    info = letter.info
    document["dead_letter"] = None
    if info is not None:
        document["dead_letter"] = {
            "stream": info.stream,
            "group": info.group,
            "position": info.position,
            "reason": info.reason,
            "error": info.error,
            "attempts": info.attempts,
            "consumer": info.consumer,
            "time": info.time.isoformat(),
        }
    return document


def _dead_letter_line(stream: str, letter: DeadLetter) -> str:
    event, info = letter.event, letter.info
    parts = [stream, letter.position]
    parts.append(f"{event.type} id={event.id}" if event is not None else "(no envelope)")
    if info is not None:
        parts += [
            f"from={info.stream}@{info.position}",
            f"reason={info.reason}",
            f"attempts={info.attempts}",
            f"consumer={info.consumer}",
            f"at={info.time.isoformat()}",
            f"error={info.error}",
        ]
    return "  ".join(parts)


def _load_payload_types() -> None:
    """Link every service's event payloads in, so `Any` payloads render as fields."""
    for service in SERVICE_NAMES:
        try:
            importlib.import_module(f"gatehouse.{service}.v1.events_pb2")
        except ImportError:
            continue
