"""The SMTP sender against secured relays: STARTTLS and implicit TLS (verified against the dev
CA), AUTH, and what happens when credentials or certificates are wrong."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatehouse.notifications.adapters.senders import SmtpOptions, SmtpSender
from gatehouse.notifications.adapters.sink import MailSink
from gatehouse.notifications.domain.addresses import Address, AddressKind, Channel
from gatehouse.notifications.domain.notifications import (
    Category,
    Notification,
    Outcome,
    Priority,
    RecipientSpec,
    Status,
)
from gatehouse.notifications.domain.templates import Actor
from gatehouse.notifications.handlers.ports import OutgoingMessage
from gatehouse.runtime.tls import CertificatePaths

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _message() -> OutgoingMessage:
    n = Notification(
        id="01J0000000000000000000000A",
        recipient=RecipientSpec(address=Address(AddressKind.EMAIL, "ops@example.com")),
        user="",
        address=Address(AddressKind.EMAIL, "ops@example.com"),
        channel=Channel.EMAIL,
        template=None,
        subject="Secured",
        text_body="over TLS",
        priority=Priority.NORMAL,
        category=Category.TRANSACTIONAL,
        status=Status.SENDING,
        hold_reason=None,
        suppression_reason=None,
        schedule_time=None,
        next_attempt_time=None,
        sender=Actor(user="users/s"),
        batch_id="b",
        related_resource="",
        create_time=NOW,
        update_time=NOW,
    )
    return OutgoingMessage(n, 1, "Secured", "over TLS", "<p>over TLS</p>")


def _server_context(certs_dir: Path) -> ssl.SSLContext:
    paths = CertificatePaths.for_name(certs_dir, "notifications")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(paths.certificate, paths.private_key)
    return context


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "tls"])
async def test_tls_and_auth_deliver(certs_dir: Path, implicit: bool) -> None:
    sink = MailSink(
        tls_context=_server_context(certs_dir),
        implicit_tls=implicit,
        credentials=("mailer", "s3cret-pass"),
    )
    port = await sink.start()
    try:
        sender = SmtpSender(
            SmtpOptions(
                port=port,
                security="tls" if implicit else "starttls",
                username="mailer",
                password="s3cret-pass",
                ca_file=str(certs_dir / "ca.pem"),
                timeout=timedelta(seconds=5),
            )
        )
        result = await sender.send(_message())
        assert result.outcome is Outcome.SUCCEEDED, result
        [mail] = await sink.wait_for(1)
        assert mail.subject == "Secured"
        assert sink.logins == ["mailer"]

        wrong = SmtpSender(
            SmtpOptions(
                port=port,
                security="tls" if implicit else "starttls",
                username="mailer",
                password="not-it",
                ca_file=str(certs_dir / "ca.pem"),
                timeout=timedelta(seconds=5),
            )
        )
        refused = await wrong.send(_message())
        assert refused.outcome is Outcome.TRANSIENT_FAILURE
        assert refused.error_code == "SMTP_AUTH_FAILED"
        assert "not-it" not in str(refused)
    finally:
        await sink.stop()


async def test_an_untrusted_certificate_is_not_sent_to(certs_dir: Path) -> None:
    sink = MailSink(tls_context=_server_context(certs_dir))
    port = await sink.start()
    try:
        # The system roots do not know the dev CA: the TLS handshake must fail.
        sender = SmtpSender(
            SmtpOptions(port=port, security="starttls", timeout=timedelta(seconds=5))
        )
        result = await sender.send(_message())
        assert result.outcome is Outcome.TRANSIENT_FAILURE
        assert result.error_code == "SMTP_UNREACHABLE"
        assert sink.received == []
    finally:
        await sink.stop()


async def test_a_relay_that_requires_starttls_refuses_plain_senders(certs_dir: Path) -> None:
    sink = MailSink(tls_context=_server_context(certs_dir))
    port = await sink.start()
    try:
        result = await SmtpSender(SmtpOptions(port=port, security="none")).send(_message())
        assert result.outcome is not Outcome.SUCCEEDED
        assert sink.received == []
    finally:
        await sink.stop()
