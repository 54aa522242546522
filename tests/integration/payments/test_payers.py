"""Payments staff create for someone else: the payer must be one of auth's users, asked of a
real auth service over mTLS with payments' own identity (its service grant)."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.rpc import error_details_pb2

from gatehouse.auth.v1 import auth_pb2
from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.payments.adapters.payers import GrpcPayerDirectory
from gatehouse.payments.v1 import payments_pb2
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import sqlite_url
from tests.e2e.production.cluster import free_port
from tests.integration.payments.harness import card_payment, refused, running_payments
from tests.support.auth import bearer, running_auth
from tests.support.grpc_calls import detail

P = payments_pb2
MANAGER = ("payments.create", "payments.manage")


def directory(certs_dir: Path, port: int) -> GrpcPayerDirectory:
    factory = ChannelFactory(ClientCredentials.from_directory(certs_dir, "payments"))
    return GrpcPayerDirectory(lambda: factory, f"127.0.0.1:{port}", timeout=5)


async def test_the_payer_is_one_of_auths_users(
    settings: Settings, certs_dir: Path, database_url: str, tmp_path: Path
) -> None:
    auth_database = sqlite_url(tmp_path / "auth.db")
    async with running_auth(settings, certs_dir, auth_database) as auth:
        bob, _ = await auth.signed_in()
        gone, _ = await auth.signed_in()
        _, admin = await auth.admin()
        await auth.stub().DeleteUser(
            auth_pb2.DeleteUserRequest(name=gone.name), metadata=bearer(admin.access_token)
        )
        payers = directory(certs_dir, auth.port)
        async with running_payments(database_url, settings, certs_dir, payers=payers) as payments:
            manager = payments.user(permissions=MANAGER)
            created = await payments.create(card_payment(payer=bob.name), metadata=manager)
            assert created.payer == bob.name
            await refused(
                payments.create(
                    card_payment(payer="users/01J0000000000000000000000Z"), metadata=manager
                ),
                grpc.StatusCode.NOT_FOUND,
                "PAYER_NOT_FOUND",
            )
            await refused(
                payments.create(card_payment(payer=gone.name), metadata=manager),
                grpc.StatusCode.FAILED_PRECONDITION,
                "PAYER_INACTIVE",
            )
            assert await payments.count("payments_payments") == 1
        await payers.close()


async def test_auth_away_is_unavailable_and_nothing_is_written(
    settings: Settings, certs_dir: Path, database_url: str
) -> None:
    payers = directory(certs_dir, free_port())  # nothing listens there
    async with running_payments(database_url, settings, certs_dir, payers=payers) as payments:
        status = await refused(
            payments.create(
                card_payment(payer="users/bob"), metadata=payments.user(permissions=MANAGER)
            ),
            grpc.StatusCode.UNAVAILABLE,
            "PAYER_DIRECTORY_UNAVAILABLE",
        )
        assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds >= 0
        assert await payments.count("payments_payments") == 0
    await payers.close()
