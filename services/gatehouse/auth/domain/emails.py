"""Email addresses: the one normal form the service stores, compares and looks up by."""

from __future__ import annotations

import re

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit minus the angle brackets
MAX_LOCAL_PART_LENGTH = 64

# Deliberately narrower than RFC 5322: quoted local parts, comments and IP-literal domains
# are legal but only ever seen in attacks and test suites; a building's residents do not
# have them. Internationalised domains arrive as punycode (xn--) from sane clients.
_LOCAL_PART = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class InvalidEmailError(ValueError):
    """The text is not an email address we accept; the message says why (no PII in it)."""


def normalise_email(raw: str) -> str:
    """Trimmed and lower-cased, or `InvalidEmailError`.

    Lower-casing the local part is technically lossy (RFC 5321 lets it be case-sensitive),
    but no mail provider relies on that and two accounts differing only by case are a
    phishing device.
    """
    email = raw.strip().lower()
    if not email:
        raise InvalidEmailError("is required")
    if len(email) > MAX_EMAIL_LENGTH:
        raise InvalidEmailError(f"must be at most {MAX_EMAIL_LENGTH} characters")
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEmailError("must look like name@example.com")
    if len(local) > MAX_LOCAL_PART_LENGTH or _LOCAL_PART.fullmatch(local) is None:
        raise InvalidEmailError("has an invalid part before the @")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise InvalidEmailError("has an invalid domain")
    if labels[-1].isdigit():
        raise InvalidEmailError("has an invalid domain")
    return email


def local_part(email: str) -> str:
    return email.rpartition("@")[0]
