"""The password policy: what a new password must be, checked before anything is hashed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from gatehouse.auth.domain.emails import local_part

# Below this a local part is too generic ("a", "me") to be worth refusing inside a password.
_MIN_LOCAL_PART_TO_CHECK = 3


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list (`data/common_passwords.txt`), read once on first use."""
    text = resources.files("gatehouse.auth.domain").joinpath("data/common_passwords.txt")
    return frozenset(
        line.strip().lower()
        for line in text.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    min_length: int = 12
    max_length: int = 128
    common: frozenset[str] | None = None  # None: the shipped list

    def problems(self, password: str, email: str | None) -> list[str]:
        """Every rule the password breaks, as human-readable sentences (empty: acceptable).

        Never echoes the password: these strings reach the caller and the logs.
        """
        found: list[str] = []
        # Code points, not bytes: a password of emoji is as long as it looks.
        length = len(password)
        if length < self.min_length:
            found.append(f"must be at least {self.min_length} characters")
        if length > self.max_length:
            found.append(f"must be at most {self.max_length} characters")
        lowered = password.lower()
        if email:
            local = local_part(email)
            if lowered == email or (len(local) >= _MIN_LOCAL_PART_TO_CHECK and local in lowered):
                found.append("must not contain your email address")
        common = self.common if self.common is not None else common_passwords()
        if lowered in common or _is_one_repeated_character(password):
            found.append("is too common; choose a less predictable one")
        return found


def _is_one_repeated_character(password: str) -> bool:
    return len(set(password)) <= 1
