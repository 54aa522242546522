"""Dead letters for an operator: `gatehouse notifications dead-letters` lists them (addresses
that can carry a credential masked), `gatehouse notifications requeue` sends them again
through the running worker, exactly once, with their history kept."""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gatehouse.notifications import cli
from gatehouse.notifications.domain.notifications import Status
from gatehouse.notifications.handlers.dead_letters import (
    RequeueOutcome,
    list_dead_letters,
    requeue,
    requeue_all,
)
from gatehouse.notifications.v1 import notifications_pb2 as pb
from gatehouse.runtime.config import Settings
from tests.integration.notifications.harness import (
    NotificationsHarness,
    email,
    eventually,
    inline,
    running_notifications,
)


def _command(argv: list[str], settings: Settings) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="gatehouse")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.register(commands)
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(parser.parse_args(argv), settings, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def _cli(argv: list[str], settings: Settings) -> tuple[int, str, str]:
    # The command runs its own event loop, as it does from the shell.
    return await asyncio.to_thread(_command, argv, settings)


async def _statuses(harness: NotificationsHarness, notification_id: str) -> list[str]:
    async with harness.app.database.database.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT status FROM notifications_changes WHERE notification_id = :i "
                "ORDER BY sequence"
            ),
            {"i": notification_id},
        )
        return [row[0] for row in rows]


async def _dead_letter_rows(harness: NotificationsHarness) -> int:
    async with harness.app.database.database.engine.connect() as connection:
        count = await connection.scalar(text("SELECT count(*) FROM notifications_dead_letters"))
        return int(count or 0)


async def _dead_letter(harness: NotificationsHarness, **fields: Any) -> pb.Notification:
    """A notification sent and failed (transiently) until its retries ran out."""
    [queued] = await harness.send(**fields)
    for _ in range(harness.app.deps.retry.max_attempts):
        await harness.deliver()
        harness.clock.advance(timedelta(minutes=11))
    dead = await harness.get(queued.name)
    assert dead.status == pb.NOTIFICATION_STATUS_DEAD_LETTERED
    return dead


async def test_a_dead_lettered_webhook_requeued_from_the_cli_arrives_exactly_once(
    database_url: str, settings: Settings, certs_dir: Path
) -> None:
    mine = settings.model_copy(update={"database_url": database_url})
    async with running_notifications(
        database_url,
        settings,
        certs_dir,
        worker=True,
        retry_max_attempts=3,
        worker_interval=timedelta(milliseconds=100),
    ) as harness:
        harness.webhook.status = 500
        hook = f"{harness.webhook.url}?token=HOOKSECRET"
        [queued] = await harness.send(
            channel=pb.CHANNEL_WEBHOOK,
            recipient=pb.Recipient(address=pb.Address(webhook_url=hook)),
            inline_content=inline("Door forced", "Door 3 was forced open"),
        )
        notification_id = queued.name.split("/")[1]
        # The running worker tries it, backs off, tries again; the clock moves, no sleeping.
        for attempt in (1, 2, 3):
            await harness.webhook.wait_for(attempt)
            if attempt < 3:
                await eventually(
                    partial(_attempts_are, harness, queued.name, attempt),
                    f"attempt {attempt} recorded",
                )
                harness.clock.advance(timedelta(minutes=11))
        await eventually(
            lambda: _status_is(harness, queued.name, pb.NOTIFICATION_STATUS_DEAD_LETTERED),
            "dead-lettered",
        )

        code, out, err = await _cli(["notifications", "dead-letters"], mine)
        assert (code, err) == (0, "")
        [line] = out.splitlines()
        assert queued.name in line
        assert "WEBHOOK" in line
        assert f"http://127.0.0.1:{harness.webhook.port}/..." in line
        assert "HOOKSECRET" not in out
        assert "/hook" not in out
        assert "WEBHOOK_HTTP_ERROR" in line
        assert "gave up after 3 attempts" in line

        # Fixed later (past the recipient's rate-limit window); an operator requeues it and
        # the running worker sends it.
        harness.webhook.status = 200
        harness.clock.advance(timedelta(minutes=11))
        code, out, err = await _cli(["notifications", "requeue", queued.name], mine)
        assert (code, out, err) == (0, f"{queued.name}: requeued\n", "")
        await eventually(
            lambda: _status_is(harness, queued.name, pb.NOTIFICATION_STATUS_SENT), "sent"
        )
        sent = await harness.get(queued.name)
        assert [a.attempt_number for a in sent.attempts] == [1, 2, 3, 4]
        assert [a.outcome for a in sent.attempts] == [pb.ATTEMPT_OUTCOME_TRANSIENT_FAILURE] * 3 + [
            pb.ATTEMPT_OUTCOME_SUCCEEDED
        ]
        assert sent.failure_code == ""
        requests = await harness.webhook.wait_for(4)
        assert len({r.header("Idempotency-Key") for r in requests}) == 1
        statuses = await _statuses(harness, notification_id)
        assert statuses[-4:] == ["DEAD_LETTERED", "QUEUED", "SENDING", "SENT"]
        assert await _dead_letter_rows(harness) == 0

        # Requeueing again changes nothing and says why; nothing else is sent.
        code, out, err = await _cli(["notifications", "requeue", queued.name], mine)
        assert code == 1
        assert out == ""
        assert err == f"{queued.name}: not requeued: not dead-lettered (status SENT)\n"
        code, out, _ = await _cli(["notifications", "dead-letters"], mine)
        assert out == "no dead letters\n"
        harness.clock.advance(timedelta(hours=2))
        await harness.deliver_until_idle()
        assert len(harness.webhook.requests) == 4
        assert (await harness.get(queued.name)).status == pb.NOTIFICATION_STATUS_SENT


async def _attempts_are(harness: NotificationsHarness, name: str, count: int) -> bool:
    return len((await harness.get(name)).attempts) >= count


async def _status_is(
    harness: NotificationsHarness, name: str, status: pb.NotificationStatus.ValueType
) -> bool:
    return (await harness.get(name)).status == status


async def test_requeue_answers_every_case_without_writing_half(
    notifications: NotificationsHarness,
) -> None:
    app = notifications.app
    await notifications.sink.stop()  # SMTP down: transient failures until dead-lettered
    dead = await _dead_letter(
        notifications, recipient=pb.Recipient(address=email("ops@example.com"))
    )
    [pending] = await notifications.send(recipient=pb.Recipient(address=email("x@example.com")))

    unknown = await requeue(app.uow, app.deps, "notifications/01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert unknown.outcome is RequeueOutcome.NOT_FOUND
    malformed = await requeue(app.uow, app.deps, "notifications/../../etc")
    assert malformed.outcome is RequeueOutcome.NOT_FOUND
    waiting = await requeue(app.uow, app.deps, pending.name)
    assert (waiting.outcome, waiting.status) == (RequeueOutcome.NOT_DEAD_LETTERED, Status.QUEUED)
    assert (await notifications.get(pending.name)).status == pb.NOTIFICATION_STATUS_QUEUED

    first = await requeue(app.uow, app.deps, dead.name)
    assert (first.outcome, first.status) == (RequeueOutcome.REQUEUED, Status.QUEUED)
    second = await requeue(app.uow, app.deps, dead.name.split("/")[1])  # a bare id works too
    assert second.outcome is RequeueOutcome.NOT_DEAD_LETTERED
    requeued = await notifications.get(dead.name)
    assert requeued.status == pb.NOTIFICATION_STATUS_QUEUED
    assert len(requeued.attempts) == len(dead.attempts)
    assert requeued.failure_code == ""
    assert await list_dead_letters(app.uow, 10) == []

    # A requeue grants a full set of retries; running out again dead-letters it again.
    for _ in range(app.deps.retry.max_attempts):
        await notifications.deliver()
        notifications.clock.advance(timedelta(minutes=11))
    again = await notifications.get(dead.name)
    assert again.status == pb.NOTIFICATION_STATUS_DEAD_LETTERED
    assert len(again.attempts) == 2 * app.deps.retry.max_attempts
    # (The waiting one ran out of retries meanwhile too.)
    letters = await list_dead_letters(app.uow, 10)
    assert {letter.notification.name for letter in letters} == {dead.name, pending.name}


async def test_a_dead_letter_with_sensitive_content_is_erased_and_not_requeued(
    notifications: NotificationsHarness,
) -> None:
    await notifications.stub().CreateTemplate(
        pb.CreateTemplateRequest(
            template_id="reset",
            template=pb.Template(
                channel=pb.CHANNEL_EMAIL,
                default_locale="en",
                localizations=[
                    pb.TemplateLocalization(
                        locale="en", subject="Reset", text_body="Use {{ link }} soon."
                    )
                ],
                variables=[pb.TemplateVariable(name="link", required=True, sensitive=True)],
            ),
            request_id="6f0b8a52-5a55-4c1f-9d1c-5e9b1d2f0a11",
        ),
        metadata=notifications.staff(),
    )
    await notifications.sink.stop()
    dead = await _dead_letter(
        notifications,
        recipient=pb.Recipient(address=email("x@example.com")),
        template=pb.TemplateReference(
            name="templates/reset", variables={"link": "https://x/reset?t=SECRET123"}
        ),
        category=pb.CATEGORY_SECURITY,
    )
    async with notifications.app.database.database.engine.connect() as connection:
        delivery = await connection.scalar(
            text("SELECT delivery FROM notifications_notifications WHERE id = :i"),
            {"i": dead.name.split("/")[1]},
        )
    assert delivery == ""
    refused = await requeue(notifications.app.uow, notifications.app.deps, dead.name)
    assert refused.outcome is RequeueOutcome.CONTENT_ERASED
    assert (await notifications.get(dead.name)).status == pb.NOTIFICATION_STATUS_DEAD_LETTERED
    # --all skips it and says so; it stays listed.
    results = await requeue_all(notifications.app.uow, notifications.app.deps)
    [result] = results
    assert result.outcome is RequeueOutcome.CONTENT_ERASED
    assert len(await list_dead_letters(notifications.app.uow, 10)) == 1


async def test_the_cli_lists_with_a_limit_masks_push_tokens_and_requeues_all(
    database_url: str, settings: Settings, certs_dir: Path
) -> None:
    mine = settings.model_copy(update={"database_url": database_url})
    async with running_notifications(
        database_url,
        settings,
        certs_dir,
        retry_max_attempts=1,
        # Nothing listens there: a transient failure, so a dead letter.
        push_gateway_url="http://127.0.0.1:9/push",
    ) as harness:
        await harness.sink.stop()
        token = "device-token-0123456789abcdef"
        await _dead_letter(
            harness,
            channel=pb.CHANNEL_PUSH,
            recipient=pb.Recipient(address=pb.Address(push_token=token)),
            inline_content=inline("Hi", "Push body"),
        )
        for n in range(2):
            await _dead_letter(
                harness, recipient=pb.Recipient(address=email(f"user{n}@example.com"))
            )

        code, out, _ = await _cli(["notifications", "dead-letters", "--limit", "2"], mine)
        assert code == 0
        lines = out.splitlines()
        assert len(lines) == 2
        assert "PUSH" in lines[0]
        assert "push token devi..." in lines[0]
        assert token not in out
        assert "user0@example.com" in lines[1]

        code, out, err = await _cli(["notifications", "requeue", "--all"], mine)
        assert (code, err) == (0, "")
        assert out.splitlines()[-1] == "requeued 3 of 3"
        code, out, _ = await _cli(["notifications", "dead-letters"], mine)
        assert out == "no dead letters\n"
        code, out, _ = await _cli(["notifications", "requeue", "--all"], mine)
        assert (code, out) == (0, "no dead letters\n")


def test_the_gatehouse_command_dispatches_notifications(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gatehouse.cli.main import main  # noqa: PLC0415

    monkeypatch.setenv("GATEHOUSE_HOME", str(tmp_path))
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'n.db'}")
    assert main(["notifications", "dead-letters", "--limit", "5"]) == 0
    assert capsys.readouterr().out == "no dead letters\n"
    assert main(["notifications", "requeue", "notifications/01ZZZZZZZZZZZZZZZZZZZZZZZZ"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "notifications/01ZZZZZZZZZZZZZZZZZZZZZZZZ: not requeued: no such notification\n"
    )
    with pytest.raises(SystemExit) as refused:
        main(["notifications", "requeue"])  # a name or --all
    assert refused.value.code == 2
    with pytest.raises(SystemExit):
        main(["notifications", "requeue", "--all", "notifications/x"])
    with pytest.raises(SystemExit):
        main(["notifications", "dead-letters", "--limit", "0"])


async def test_watch_deliveries_shows_the_requeue_and_what_follows(
    notifications: NotificationsHarness,
) -> None:
    port = notifications.sink.port
    await notifications.sink.stop()
    dead = await _dead_letter(notifications, recipient=pb.Recipient(address=email("w@example.com")))
    result = await requeue(notifications.app.uow, notifications.app.deps, dead.name)
    assert result.requeued
    # Resumed from the dead-lettering (its change id is the notification.failed event's).
    failed: list[str] = []

    async def published() -> bool:
        entries = await notifications.bus.read("events.notification", after=None, count=1000)
        failed[:] = [e.id for _, e in entries if e.subject == dead.name]
        return bool(failed)

    await eventually(published, "notification.failed published")
    stream = notifications.stub().WatchDeliveries(
        pb.WatchDeliveriesRequest(name=dead.name, resume_after=failed[0]),
        metadata=notifications.staff(),
    )
    iterator = aiter(stream)
    first = (await anext(iterator)).delivery_update
    assert (first.previous_status, first.status) == (
        pb.NOTIFICATION_STATUS_DEAD_LETTERED,
        pb.NOTIFICATION_STATUS_QUEUED,
    )
    assert len(first.notification.attempts) == len(dead.attempts)
    notifications.sink.port = port
    await notifications.sink.start()
    await notifications.deliver()
    rest = [m.delivery_update async for m in _bounded(iterator) if m.HasField("delivery_update")]
    assert [(u.previous_status, u.status) for u in rest] == [
        (pb.NOTIFICATION_STATUS_QUEUED, pb.NOTIFICATION_STATUS_SENDING),
        (pb.NOTIFICATION_STATUS_SENDING, pb.NOTIFICATION_STATUS_SENT),
    ]
    [mail] = await notifications.sink.wait_for(1)
    assert mail.recipients == ("w@example.com",)


async def _bounded(
    iterator: AsyncIterator[pb.WatchDeliveriesResponse], timeout: float = 20.0
) -> AsyncIterator[pb.WatchDeliveriesResponse]:
    async with asyncio.timeout(timeout):
        async for message in iterator:
            yield message
