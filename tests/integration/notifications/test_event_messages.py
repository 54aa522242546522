"""Event-driven messages end to end: the producing service's RPC -> its outbox -> the shared
in-process bus -> the notifications consumer -> the delivery worker -> real mail in the SMTP
sink. Auth, payments, monitoring and access run for real.

Producer and notifications keep separate databases, as in production (one per service)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gatehouse.access.v1 import access_pb2
from gatehouse.auth.v1 import auth_pb2
from gatehouse.clients.channel import ChannelFactory, ClientCredentials
from gatehouse.common.v1 import common_pb2
from gatehouse.monitoring.v1 import monitoring_pb2
from gatehouse.notifications.adapters.directory import GrpcUserDirectory, StaticUserDirectory
from gatehouse.notifications.adapters.sink import ReceivedMail
from gatehouse.notifications.handlers.ports import UserInfo
from gatehouse.notifications.v1 import notifications_pb2 as pb
from gatehouse.runtime.bus import InProcessEventBus
from gatehouse.runtime.config import Settings
from gatehouse.runtime.db import sqlite_url
from gatehouse.runtime.events import stream_for
from tests.integration.access.harness import door as access_door
from tests.integration.access.harness import running_access
from tests.integration.monitoring.harness import running_monitoring
from tests.integration.notifications.harness import (
    NotificationsHarness,
    running_notifications,
)
from tests.integration.payments.harness import DECLINE, card_payment, running_payments
from tests.support.auth import bearer, request_id, running_auth, unique_email

ALICE = "users/alice"  # the payments harness's payer
BOB = "users/bob"


def people() -> StaticUserDirectory:
    return StaticUserDirectory(
        [
            UserInfo(ALICE, "alice@example.com", "Alice"),
            UserInfo(BOB, "bob@example.com", "Bob"),
            UserInfo("users/carol", "carol@example.com", "Carol"),
        ],
        {"roles/operator": [BOB], "roles/resident": [ALICE, "users/carol"]},
    )


def notifications_database(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "notifications" / "notifications.db")


async def mail_to(
    harness: NotificationsHarness, address: str, count: int = 1
) -> list[ReceivedMail]:
    for _ in range(2000):
        found = [m for m in harness.sink.received if address in m.recipients]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(
        f"no mail to {address}; got {[m.recipients for m in harness.sink.received]}"
    )


async def test_auth_welcome_lockout_and_password_reset(
    settings: Settings, certs_dir: Path, database_url: str, tmp_path: Path
) -> None:
    async with running_auth(settings, certs_dir, database_url) as auth:
        bus = auth.app.context.bus
        assert isinstance(bus, InProcessEventBus)
        directory = GrpcUserDirectory(
            lambda: ChannelFactory(ClientCredentials.from_directory(certs_dir, "notifications")),
            f"127.0.0.1:{auth.port}",
        )
        async with running_notifications(
            notifications_database(tmp_path),
            settings,
            certs_dir,
            bus=bus,
            consumers=True,
            worker=True,
            directory=directory,  # type: ignore[arg-type]
        ) as notifications:
            address = unique_email("ana")
            user = await auth.register(address, display_name="Ana <b>")
            [welcome] = await mail_to(notifications, address)
            assert welcome.subject == "Welcome to Gatehouse"
            assert "Hello Ana <b>," in welcome.part("text/plain")
            assert "Ana &lt;b&gt;" in welcome.part("text/html")

            for _ in range(10):
                with pytest.raises(grpc.aio.AioRpcError):
                    await auth.login(address, "wrong password!")
                if await auth.outbox("user.locked"):
                    break
            locked = await mail_to(notifications, address, 2)
            assert locked[1].subject == "Your Gatehouse account is locked"

            await auth.stub().RequestPasswordReset(
                auth_pb2.RequestPasswordResetRequest(email=address, request_id=request_id())
            )
            reset = (await mail_to(notifications, address, 3))[2]
            assert reset.subject == "Reset your Gatehouse password"
            link = "https://gatehouse.local/reset-password?token="
            assert link in reset.part("text/plain")
            token = reset.part("text/plain").split(link)[1].split()[0]
            # The token is delivered, and only delivered: the stored copy is redacted.
            listed = await notifications.stub().ListNotifications(
                pb.ListNotificationsRequest(recipient=user.name), metadata=notifications.staff()
            )
            assert len(listed.notifications) == 3
            assert token not in str(listed)
            # The real gRPC directory: a send to the user resolves their email through auth.
            [direct] = await notifications.send(
                recipient=pb.Recipient(user=user.name), category=pb.CATEGORY_SECURITY
            )
            assert direct.address.email_address == address
            # And a role: its members through ListUsers.
            _, admin_tokens = await auth.admin()
            await auth.stub().AssignRole(
                auth_pb2.AssignRoleRequest(
                    name=user.name, role="roles/operator", request_id=request_id()
                ),
                metadata=bearer(admin_tokens.access_token),
            )
            broadcast = await notifications.send(
                recipient=pb.Recipient(role="roles/operator"), priority=pb.PRIORITY_HIGH
            )
            assert [(n.user, n.address.email_address) for n in broadcast] == [(user.name, address)]
            await directory.close()


async def test_payments_receipt_failure_and_refund(
    settings: Settings, certs_dir: Path, database_url: str, tmp_path: Path
) -> None:
    bus = InProcessEventBus()
    async with (
        running_payments(database_url, settings, certs_dir, bus=bus) as payments,
        running_notifications(
            notifications_database(tmp_path),
            settings,
            certs_dir,
            bus=bus,
            consumers=True,
            worker=True,
            directory=people(),
        ) as notifications,
    ):
        paid = await payments.completed("12.50", "EUR")
        [receipt] = await mail_to(notifications, "alice@example.com")
        assert receipt.subject == "Payment receipt: 12.50 EUR"
        assert paid.name in receipt.part("text/plain")

        await payments.refund(paid.name)
        # One message a minute per address: the refund notice waits for the window.
        await asyncio.sleep(0)
        notifications.clock.advance(timedelta(minutes=1, seconds=1))
        refund = (await mail_to(notifications, "alice@example.com", 2))[1]
        assert refund.subject == "Refund of 12.50 EUR"

        created = await payments.create(card_payment("3.00", "EUR", card=DECLINE))
        await payments.process(created.name)
        notifications.clock.advance(timedelta(minutes=1, seconds=1))
        failed = (await mail_to(notifications, "alice@example.com", 3))[2]
        assert failed.subject == "Payment failed - action required"
        # Redelivering the same events sends nothing new.
        entries = await bus.read("events.payment", after=None, count=1000)
        for _, event in entries:
            await bus.publish("events.payment", event)
        notifications.clock.advance(timedelta(minutes=5))
        await asyncio.sleep(1.5)
        assert (
            len([m for m in notifications.sink.received if "alice@example.com" in m.recipients])
            == 3
        )


async def test_monitoring_alert_reaches_the_on_call_role(
    settings: Settings, certs_dir: Path, database_url: str, tmp_path: Path
) -> None:
    async with running_monitoring(settings, certs_dir, database_url) as monitoring:
        bus = monitoring.shared.bus
        async with running_notifications(
            notifications_database(tmp_path),
            settings,
            certs_dir,
            bus=bus,
            consumers=True,
            worker=True,
            directory=people(),
        ) as notifications:
            building = await monitoring.building()
            stub = await monitoring.stub()
            await stub.RaiseAlert(
                monitoring_pb2.RaiseAlertRequest(
                    parent=building.name,
                    severity=common_pb2.SEVERITY_CRITICAL,
                    summary="Smoke on floor 3",
                    request_id=request_id(),
                )
            )
            [page] = await mail_to(notifications, "bob@example.com")
            assert page.subject == "[CRITICAL] Smoke on floor 3"
            assert building.name in page.part("text/plain")
            listed = await notifications.stub().ListNotifications(
                pb.ListNotificationsRequest(recipient="roles/operator"),
                metadata=notifications.staff(),
            )
            [sent] = listed.notifications
            assert sent.category == pb.CATEGORY_ALERT
            assert sent.priority == pb.PRIORITY_CRITICAL


async def test_access_visitor_and_emergency_events(
    settings: Settings, certs_dir: Path, database_url: str, tmp_path: Path
) -> None:
    bus = InProcessEventBus()
    async with (
        running_access(settings, certs_dir, database_url, bus=bus) as access,
        running_notifications(
            notifications_database(tmp_path),
            settings,
            certs_dir,
            bus=bus,
            consumers=True,
            worker=True,
            directory=people(),
        ) as notifications,
    ):
        # A visitor's day at access (its clock: a morning to come), the host told at once.
        arrival = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        access.clock.set(arrival - timedelta(hours=2))
        reception = await access.operator()
        registered = await reception.RegisterVisitor(
            access_pb2.RegisterVisitorRequest(
                parent="buildings/b1",
                visitor=access_pb2.Visitor(
                    display_name="Vera Visitor",
                    company="Acme",
                    host=ALICE,
                    expected_arrival_time=timestamp_pb2.Timestamp(seconds=int(arrival.timestamp())),
                    doors=[access_door("main")],
                ),
                request_id=request_id(),
            )
        )
        access.clock.set(arrival + timedelta(minutes=5))
        await reception.CheckInVisitor(
            access_pb2.CheckInVisitorRequest(
                parent="buildings/b1",
                invitation_code=registered.invitation_code,
                request_id=request_id(),
            )
        )
        [arrived] = await mail_to(notifications, "alice@example.com")
        assert arrived.subject == "Vera Visitor has arrived"
        assert "(Acme)" in arrived.part("text/plain")

        triggered = await reception.TriggerEmergency(
            access_pb2.TriggerEmergencyRequest(
                name="buildings/b1/emergency",
                mode=access_pb2.EMERGENCY_MODE_UNLOCK_ALL,
                reason="Fire alarm",
                request_id=request_id(),
            )
        )
        assert triggered.emergency.active
        # Everyone concerned, at once: EMERGENCY bypasses the rate limit (Alice just got mail).
        for address, count in (
            ("alice@example.com", 2),
            ("carol@example.com", 1),
            ("bob@example.com", 1),
        ):
            mails = await mail_to(notifications, address, count)
            assert mails[-1].subject == "EMERGENCY at buildings/b1"
            assert "evacuate" in mails[-1].part("text/plain")
        # The same event delivered again (a consumer's redelivery) sends nothing new.
        [emergency] = [
            event
            for _, event in await bus.read(stream_for("emergency.triggered"), after=None)
            if event.type == "emergency.triggered"
        ]
        await bus.publish(stream_for(emergency.type), emergency)
        await asyncio.sleep(1.5)
        assert len([m for m in notifications.sink.received if "EMERGENCY" in m.subject]) == 3
