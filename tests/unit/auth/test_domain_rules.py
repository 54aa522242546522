"""Pure rules of the auth domain: emails, the password policy, roles, lockout, TOTP."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest

from gatehouse.auth.adapters.catalogue import permission_catalogue
from gatehouse.auth.domain import totp
from gatehouse.auth.domain.emails import InvalidEmailError, normalise_email
from gatehouse.auth.domain.lockout import LockoutPolicy
from gatehouse.auth.domain.passwords import PasswordPolicy, common_passwords
from gatehouse.auth.domain.roles import (
    BUILT_IN_ROLES,
    PermissionCatalogue,
    escalations,
    is_well_formed_permission,
    parse_role_name,
)
from gatehouse.auth.domain.users import parse_totp_name, parse_user_name
from gatehouse.runtime.authorization import grants
from gatehouse.runtime.ids import new_ulid


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  Ana.Garcia@Example.COM ", "ana.garcia@example.com"),
        ("x+tag@mail.example.org", "x+tag@mail.example.org"),
        ("o'brien@xn--bcher-kva.example", "o'brien@xn--bcher-kva.example"),
    ],
)
def test_emails_are_trimmed_and_lower_cased(raw: str, normal: str) -> None:
    assert normalise_email(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "no-at-sign",
        "@example.com",
        "ana@",
        "ana@localhost",
        "ana@@example.com",
        "a b@example.com",
        "ana@exa mple.com",
        "ana..b@example.com",
        ".ana@example.com",
        "ana@-example.com",
        "ana@example.123",
        "ana@[127.0.0.1]",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        "ana\x00@example.com",
    ],
)
def test_malformed_emails_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmailError):
        normalise_email(raw)


def test_password_policy_names_each_broken_rule() -> None:
    policy = PasswordPolicy(min_length=12, max_length=128)
    assert policy.problems("a sound passphrase", "ana@example.com") == []
    assert policy.problems("short", None) == ["must be at least 12 characters"]
    assert policy.problems("x" * 129 + "yz", None) == ["must be at most 128 characters"]
    assert "must not contain your email address" in policy.problems(
        "hello-anagarcia-1", "anagarcia@example.com"
    )
    assert "must not contain your email address" in policy.problems(
        "ANAGARCIA@EXAMPLE.COM", "anagarcia@example.com"
    )
    assert "is too common; choose a less predictable one" in policy.problems("Password1234", None)
    assert "is too common; choose a less predictable one" in policy.problems("a" * 20, None)


def test_password_length_counts_characters_not_bytes() -> None:
    assert PasswordPolicy(min_length=12).problems("ñandú-ñandú-ñ", None) == []


def test_the_common_password_list_ships_with_the_package() -> None:
    common = common_passwords()
    assert "password123456" in common
    assert all(word == word.lower() for word in common)


def test_built_in_roles_only_grant_permissions_the_services_declare() -> None:
    catalogue = permission_catalogue()
    for role in BUILT_IN_ROLES:
        for permission in role.permissions:
            assert catalogue.is_known(permission), (role.id, permission)
    admin = next(role for role in BUILT_IN_ROLES if role.id == "admin")
    assert all(grants(admin.permissions, p) for p in catalogue.all())
    operator = next(role for role in BUILT_IN_ROLES if role.id == "operator")
    assert not grants(operator.permissions, "auth.roles.assign")
    assert grants(operator.permissions, "access.emergency")


def test_the_catalogue_holds_every_declared_permission_and_valid_wildcards() -> None:
    catalogue = permission_catalogue()
    for permission in ("payments.refund", "access.emergency", "auth.users.read"):
        assert permission in catalogue
    assert catalogue.is_known("monitoring.*")
    assert catalogue.is_known("*")
    assert not catalogue.is_known("payments.teleport")
    assert not catalogue.is_known("nothing.*")


@pytest.mark.parametrize(
    ("permission", "ok"),
    [
        ("payments.refund", True),
        ("access.*", True),
        ("*", True),
        ("Payments.x", False),
        ("payments.", False),
        ("pay*", False),
        ("a..b", False),
    ],
)
def test_permission_shapes(permission: str, ok: bool) -> None:
    assert is_well_formed_permission(permission) is ok


def test_escalation_is_any_wanted_permission_not_granted() -> None:
    catalogue = PermissionCatalogue({"monitoring.alerts.read", "monitoring.alerts.manage"})
    assert catalogue.is_known("monitoring.*")
    assert escalations(["monitoring.*"], ["monitoring.alerts.read"]) == []
    assert escalations(["*"], ["monitoring.*", "payments.refund"]) == []
    # Holding every current permission one by one is not holding the wildcard.
    assert escalations(
        ["monitoring.alerts.read", "monitoring.alerts.manage"], ["monitoring.*"]
    ) == ["monitoring.*"]


def test_resource_names() -> None:
    user_id = new_ulid()
    assert parse_user_name(f"users/{user_id}") == user_id
    assert parse_user_name("users/me") is None
    assert parse_user_name("users/x1") is None
    assert parse_totp_name("users/me/totp", user_id) == user_id
    assert parse_totp_name(f"users/{user_id}/totp", None) == user_id
    assert parse_totp_name(f"users/{user_id}", None) is None
    assert parse_role_name("roles/front-desk") == "front-desk"
    assert parse_role_name("roles/Admin") is None


def test_lock_durations_double_up_to_the_maximum() -> None:
    policy = LockoutPolicy(
        max_failures=5,
        window=timedelta(minutes=15),
        base_lock=timedelta(minutes=1),
        max_lock=timedelta(minutes=10),
        memory=timedelta(hours=24),
    )
    durations = [policy.lock_duration(level).total_seconds() / 60 for level in range(1, 7)]
    assert durations == [1, 2, 4, 8, 10, 10]
    assert policy.lock_duration(10_000) == timedelta(minutes=10)


def test_totp_codes_match_their_step_once_and_only_near_now() -> None:
    secret = totp.new_secret()
    now = 1_700_000_000.0
    code = pyotp.TOTP(secret).at(int(now))
    step = totp.matching_step(secret, code, now, last_used_step=0)
    assert step == totp.current_step(now)
    # A replay of the same step, or anything older, is refused.
    assert totp.matching_step(secret, code, now, last_used_step=step) is None
    # The previous step's code is accepted once (clock drift)...
    previous = pyotp.TOTP(secret).at(int(now) - 30)
    assert totp.matching_step(secret, previous, now, last_used_step=0) == step - 1
    # ...but not one from two minutes ago.
    stale = pyotp.TOTP(secret).at(int(now) - 120)
    assert totp.matching_step(secret, stale, now, last_used_step=0) is None
    assert totp.matching_step(secret, "12345", now, 0) is None
    assert totp.matching_step(secret, "abcdef", now, 0) is None


def test_provisioning_uri_is_what_authenticators_expect() -> None:
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    uri = totp.provisioning_uri(secret, "ana@example.com")
    assert uri.startswith("otpauth://totp/Gatehouse:ana%40example.com?")
    assert f"secret={secret}" in uri
    assert "issuer=Gatehouse" in uri
    assert uri.endswith("&algorithm=SHA1&digits=6&period=30")


def test_recovery_codes_ignore_dashes_spaces_and_case() -> None:
    code = totp.new_recovery_code()
    assert len(code) == 9
    assert code[4] == "-"
    normal = totp.normalise_recovery_code(code)
    assert normal == code.replace("-", "")
    assert totp.normalise_recovery_code(f" {code.upper()} ") == normal
    assert totp.normalise_recovery_code("0000-0000") is None  # not in the alphabet
    assert totp.normalise_recovery_code("abc") is None
