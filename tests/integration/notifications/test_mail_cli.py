"""The embedded mail sink the service starts itself, and `gatehouse mail` reading what it kept."""

from __future__ import annotations

import argparse
import io
import socket
from pathlib import Path

from gatehouse.notifications import cli
from gatehouse.notifications.v1 import notifications_pb2 as pb
from gatehouse.runtime.config import Settings
from tests.integration.notifications.harness import email, inline, running_notifications


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _mail(argv: list[str], settings: Settings) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="gatehouse")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.register(commands)
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(parser.parse_args(argv), settings, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_the_service_runs_its_own_sink_and_gatehouse_mail_lists_it(
    settings: Settings, certs_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    mine = settings.model_copy(update={"home": home})
    database = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    async with running_notifications(
        database, mine, certs_dir, mail_sink=True, smtp_port=_free_port()
    ) as notifications:
        assert notifications.app.sink is not None
        await notifications.send(
            recipient=pb.Recipient(address=email("dev@example.com")),
            inline_content=inline("Hello developer", "Plain text here", "<p>HTML here</p>"),
        )
        await notifications.deliver()
        await notifications.app.sink.wait_for(1)

    code, out, _ = _mail(["mail"], mine)
    assert code == 0
    [line] = out.splitlines()
    assert "dev@example.com" in line
    assert "Hello developer" in line

    code, out, _ = _mail(["mail", "show", "1"], mine)
    assert code == 0
    assert "Subject: Hello developer" in out
    assert "Plain text here" in out
    code, out, _ = _mail(["mail", "show", "1", "--html"], mine)
    assert "<p>HTML here</p>" in out
    code, _, err = _mail(["mail", "show", "2"], mine)
    assert code == 1
    assert "no message 2" in err

    code, out, _ = _mail(["mail", "clear"], mine)
    assert "deleted 1" in out
    code, out, _ = _mail(["mail"], mine)
    assert out.startswith("no mail in")
