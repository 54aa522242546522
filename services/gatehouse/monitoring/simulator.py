"""Simulated devices: real gRPC clients of ConnectDevice and ReportReadings, each with its
own credential (a device certificate's channel, or a device token). `gatehouse simulate`, the
tests and the benchmark drive the service with them.

A `SimulatedDevice` opens its session with a hello, answers pings, optionally heartbeats on
its own and acknowledges commands, and records everything it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from gatehouse.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from gatehouse.runtime.identity import DEVICE_TOKEN_HEADER

log = logging.getLogger("gatehouse.monitoring.simulator")


def now_stamp(offset: timedelta = timedelta(0)) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + offset)
    return stamp


def message_id() -> str:
    return str(uuid.uuid4())


class SessionEndedError(Exception):
    """The session is over; `status` says how (None: it ended OK)."""

    def __init__(self, status: grpc.aio.AioRpcError | None) -> None:
        super().__init__(str(status.code() if status is not None else "OK"))
        self.status = status


class SimulatedDevice:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        name: str,
        *,
        token: str | None = None,
        firmware_version: str = "sim-1.0",
        supported_commands: Sequence[int] = (),
        auto_ack: bool = True,
        ack_result: int = monitoring_pb2.DEVICE_COMMAND_RESULT_SUCCEEDED,
        heartbeat_every: timedelta | None = None,
        answer_pings: bool = True,
    ) -> None:
        self.name = name
        self._stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            ((DEVICE_TOKEN_HEADER, token),) if token else ()
        )
        self._firmware = firmware_version
        self._supported = list(supported_commands)
        self.auto_ack = auto_ack
        self.ack_result = ack_result
        self._heartbeat_every = heartbeat_every
        self.answer_pings = answer_pings
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.welcome: monitoring_pb2.DeviceWelcome | None = None
        self.commands: asyncio.Queue[monitoring_pb2.DeviceCommand] = asyncio.Queue()
        self.pings: list[monitoring_pb2.DevicePing] = []
        self.ended: asyncio.Future[grpc.aio.AioRpcError | None] | None = None

    # -- the session --

    async def connect(self, *, timeout: float = 10.0) -> monitoring_pb2.DeviceWelcome:
        """Open the session and wait for the welcome; raises the stream's error if refused."""
        self.ended = asyncio.get_running_loop().create_future()
        self._call = self._stub.ConnectDevice(metadata=self._metadata)
        hello = monitoring_pb2.DeviceHello(
            firmware_version=self._firmware,
            device_time=now_stamp(),
            boot_time=now_stamp(-timedelta(hours=1)),
            supported_commands=[
                monitoring_pb2.DeviceCommandKind.ValueType(k) for k in self._supported
            ],
        )
        await self.send(monitoring_pb2.ConnectDeviceRequest(name=self.name, hello=hello))
        async with asyncio.timeout(timeout):
            first = await self._call.read()
        if first is grpc.aio.EOF:
            status = await self._final_status()
            raise status if status is not None else SessionEndedError(None)
        self.welcome = first.welcome
        self._reader = asyncio.create_task(self._read(), name=f"sim-read {self.name}")
        if self._heartbeat_every is not None:
            self._beater = asyncio.create_task(self._beat(), name=f"sim-beat {self.name}")
        return self.welcome

    async def send(self, request: monitoring_pb2.ConnectDeviceRequest) -> None:
        if not request.message_id:
            request.message_id = message_id()
        async with self._write_lock:
            await self._call.write(request)

    async def heartbeat(self, ping_id: str = "") -> None:
        await self.send(
            monitoring_pb2.ConnectDeviceRequest(
                heartbeat=monitoring_pb2.DeviceHeartbeat(device_time=now_stamp(), ping_id=ping_id)
            )
        )

    async def event(
        self,
        kind: int,
        *,
        observe_time: timestamp_pb2.Timestamp | None = None,
        zone: str = "",
        door: str = "",
        held_open: timedelta | None = None,
        confidence: float = 0.0,
        attributes: dict[str, str] | None = None,
        message_id: str = "",
    ) -> str:
        event = monitoring_pb2.DeviceEvent(
            kind=kind,  # type: ignore[arg-type]
            observe_time=observe_time or now_stamp(),
            zone=zone,
            door=door,
            confidence=confidence,
            attributes=attributes or {},
        )
        if held_open is not None:
            duration = duration_pb2.Duration()
            duration.FromTimedelta(held_open)
            event.held_open_duration.CopyFrom(duration)
        request = monitoring_pb2.ConnectDeviceRequest(event=event, message_id=message_id)
        await self.send(request)
        return request.message_id

    async def readings(self, batch: monitoring_pb2.ReadingBatch) -> None:
        await self.send(monitoring_pb2.ConnectDeviceRequest(readings=batch))

    async def ack(self, command_id: str, result: int, message: str = "") -> None:
        await self.send(
            monitoring_pb2.ConnectDeviceRequest(
                command_ack=monitoring_pb2.DeviceCommandAck(
                    command_id=command_id,
                    result=result,  # type: ignore[arg-type]
                    message=message,
                    complete_time=now_stamp(),
                )
            )
        )

    async def next_command(self, timeout: float = 10.0) -> monitoring_pb2.DeviceCommand:
        async with asyncio.timeout(timeout):
            return await self.commands.get()

    async def close(self) -> None:
        """End the session cleanly: half-close, then wait for the mesh to finish."""
        await self._stop_beating()
        with contextlib.suppress(Exception):
            async with self._write_lock:
                await self._call.done_writing()
        await self.wait_ended(10)

    def vanish(self) -> None:
        """Stop talking without closing anything: the connection lingers, silent."""
        self.answer_pings = False
        if self._beater is not None:
            self._beater.cancel()

    async def abort(self) -> None:
        """Cancel the call (what a crashing device's connection reset looks like)."""
        await self._stop_beating()
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def wait_ended(self, timeout: float = 10.0) -> grpc.aio.AioRpcError | None:
        """The stream's final status: None for OK, else the error."""
        assert self.ended is not None
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.ended)

    # -- internals --

    async def _stop_beating(self) -> None:
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beater
            self._beater = None

    async def _beat(self) -> None:
        assert self._heartbeat_every is not None
        while True:
            await asyncio.sleep(self._heartbeat_every.total_seconds())
            try:
                await self.heartbeat()
            except Exception:
                return

    async def _read(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                kind = response.WhichOneof("message")
                if kind == "command":
                    await self.commands.put(response.command)
                    if self.auto_ack:
                        await self.ack(response.command.command_id, self.ack_result)
                elif kind == "ping":
                    self.pings.append(response.ping)
                    if self.answer_pings:
                        await self.heartbeat(response.ping.ping_id)
        except grpc.aio.AioRpcError as error:
            self._settle(error)
            return
        except asyncio.CancelledError:
            self._settle(None)
            raise
        except Exception:
            log.debug("simulated device %s stopped reading", self.name, exc_info=True)
        self._settle(await self._final_status())

    async def _final_status(self) -> grpc.aio.AioRpcError | None:
        call = self._call
        code = await call.code()
        if code == grpc.StatusCode.OK:
            return None
        return grpc.aio.AioRpcError(
            code,
            await call.initial_metadata(),
            await call.trailing_metadata(),
            await call.details(),
        )

    def _settle(self, status: grpc.aio.AioRpcError | None) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(status)


def random_readings(
    count: int, *, metrics: Sequence[str] = ("temperature_celsius", "humidity_percent")
) -> monitoring_pb2.ReadingBatch:
    """A batch of plausible readings with distinct times, ending now."""
    end = datetime.now(UTC)
    batch = monitoring_pb2.ReadingBatch(batch_id=str(uuid.uuid4()))
    for index in range(count):
        reading = batch.readings.add()
        reading.metric = metrics[index % len(metrics)]
        reading.value = round(random.uniform(15.0, 30.0), 2)  # noqa: S311 - simulated data
        reading.time.FromDatetime(end - timedelta(milliseconds=count - index))
    return batch
