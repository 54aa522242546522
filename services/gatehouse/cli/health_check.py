"""`gatehouse health`: ask every service's grpc.health.v1 over mTLS."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.runtime.config import ServiceName, Settings


async def check_one(factory: ChannelFactory, target: str, timeout: float) -> str:
    async with factory.channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            return f"UNREACHABLE ({error.code().name})"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def run(settings: Settings, services: Sequence[ServiceName], *, timeout: float) -> int:
    try:
        credentials = ClientCredentials.from_directory(settings.certificates)
    except FileNotFoundError as error:
        print(f"no client certificate: {error.filename}; run `gatehouse certs` first")
        return 1
    factory = ChannelFactory(credentials)
    targets = {name: f"{settings.host}:{settings.port_of(name)}" for name in services}
    results = await asyncio.gather(
        *(check_one(factory, target, timeout) for target in targets.values())
    )
    for (name, target), status in zip(targets.items(), results, strict=True):
        print(f"{name:<14} {target:<22} {status}")
    return 0 if all(status == "SERVING" for status in results) else 1
