"""TOTP (RFC 6238) rules: SHA-1, 6 digits, 30-second steps, each step's code usable once,
plus the single-use recovery codes that stand in for a lost authenticator."""

from __future__ import annotations

import hmac
import re
import secrets

import pyotp

DIGITS = 6
PERIOD_SECONDS = 30
ISSUER = "Gatehouse"
# Accept the neighbouring steps: phones drift, and a code typed at the end of its 30 s
# arrives in the next step.
VALID_WINDOW = 1
TOTP_CODE_PATTERN = re.compile(r"[0-9]{6}")

RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i look-alikes
RECOVERY_GROUP = 4
_RECOVERY_PATTERN = re.compile(rf"[{RECOVERY_ALPHABET}]{{{2 * RECOVERY_GROUP}}}")


def new_secret() -> str:
    """160 random bits in base32, the size RFC 4226 recommends for SHA-1."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, account: str) -> str:
    """`otpauth://totp/Gatehouse:<account>?secret=...&issuer=Gatehouse&algorithm=SHA1&...`.

    The parameters are spelled out even where they are the defaults: some authenticators
    guess wrong when they are missing.
    """
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD_SECONDS).provisioning_uri(
        name=account, issuer_name=ISSUER
    )
    return f"{uri}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}"


def current_step(unix_time: float) -> int:
    return int(unix_time // PERIOD_SECONDS)


def matching_step(secret: str, code: str, unix_time: float, last_used_step: int) -> int | None:
    """The time step `code` belongs to if it is valid now and newer than the last accepted
    one; None otherwise (wrong, too old, or a replay)."""
    if TOTP_CODE_PATTERN.fullmatch(code) is None:
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD_SECONDS)
    now_step = current_step(unix_time)
    found = None
    # Compare against every candidate, not stopping at the first match, so the time taken
    # does not say which step matched.
    for step in range(now_step - VALID_WINDOW, now_step + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code) and step > last_used_step:
            found = step
    return found


def code_at(secret: str, unix_time: float) -> str:
    """The code an authenticator shows at `unix_time` (tests, tooling)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD_SECONDS).at(int(unix_time))


def new_recovery_code() -> str:
    chars = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(2 * RECOVERY_GROUP))
    return f"{chars[:RECOVERY_GROUP]}-{chars[RECOVERY_GROUP:]}"


def normalise_recovery_code(raw: str) -> str | None:
    """Dashes, spaces and case are ignored; None when it cannot be a recovery code."""
    cleaned = raw.replace("-", "").replace(" ", "").lower()
    return cleaned if _RECOVERY_PATTERN.fullmatch(cleaned) else None
