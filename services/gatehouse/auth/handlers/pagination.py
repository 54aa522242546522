"""Page tokens: opaque to clients, tamper-proof, bound to the request that made them.

A token carries the keyset position (sort value and id of the last row served), a digest of
the filters it was made for and an expiry, and is MACed with the service key. A token
altered, expired or replayed with other filters is INVALID_PAGE_TOKEN, never a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import datetime, timedelta

from gatehouse.auth.handlers.ports import SecretBox
from gatehouse.runtime.errors import FieldViolation, InvalidArgument

TOKEN_LIFETIME = timedelta(hours=24)


class PageTokens:
    def __init__(self, box: SecretBox, kind: str) -> None:
        self._box = box
        self._kind = kind

    def make(self, position: list[str], filters: str, now: datetime) -> str:
        body = json.dumps(
            {
                "p": position,
                "f": self._filters_digest(filters),
                "e": int((now + TOKEN_LIFETIME).timestamp()),
            },
            separators=(",", ":"),
        ).encode()
        encoded = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{encoded}.{self._mac(encoded)}"

    def read(self, token: str, filters: str, now: datetime) -> list[str] | None:
        """The position in `token`; None for an empty token (first page)."""
        if not token:
            return None
        encoded, _, mac = token.partition(".")
        if not hmac.compare_digest(mac, self._mac(encoded)):
            raise _invalid("is malformed")
        try:
            body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            position = [str(part) for part in body["p"]]
            digest, expires = str(body["f"]), int(body["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _invalid("is malformed") from None
        if digest != self._filters_digest(filters):
            raise _invalid("was made for other request parameters")
        if now.timestamp() >= expires:
            raise _invalid("has expired; start from the first page")
        return position

    def _mac(self, encoded: str) -> str:
        return self._box.digest(f"page-token:{self._kind}", encoded)[:32]

    def _filters_digest(self, filters: str) -> str:
        return self._box.digest(f"page-filters:{self._kind}", filters)[:16]


def _invalid(problem: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", problem)], reason="INVALID_PAGE_TOKEN")


def page_size(requested: int, default: int, maximum: int) -> int:
    if requested <= 0:
        return default
    return min(requested, maximum)
