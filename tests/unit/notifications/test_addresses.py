"""Addresses: each kind's rules, normal forms, the webhook allow-list, channel fit."""

from __future__ import annotations

import pytest

from gatehouse.notifications.domain.addresses import (
    Address,
    AddressError,
    AddressKind,
    AddressRules,
    Channel,
    check_fits,
    make_address,
)

RULES = AddressRules(webhook_hosts=frozenset({"hooks.example.com", "*.slack.test"}))


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana.Garcia+tag@Example.COM ", "Ana.Garcia+tag@example.com"),
    ],
)
def test_good_emails_are_normalised(raw: str, normal: str) -> None:
    assert make_address(AddressKind.EMAIL, raw, RULES).value == normal


@pytest.mark.parametrize(
    "raw", ["", "ana", "ana@", "@example.com", "ana@localhost", "a b@example.com", "ana@x.123"]
)
def test_bad_emails_are_refused(raw: str) -> None:
    with pytest.raises(AddressError) as refused:
        make_address(AddressKind.EMAIL, raw, RULES)
    assert refused.value.reason == "INVALID_ADDRESS"


@pytest.mark.parametrize("raw", ["+34600123456", "+14155550100"])
def test_e164_phone_numbers_pass(raw: str) -> None:
    assert make_address(AddressKind.PHONE, raw, RULES).value == raw


@pytest.mark.parametrize(
    "raw", ["600123456", "+0123456789", "+34 600 123 456", "+1234", "+1" + "2" * 15]
)
def test_other_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(AddressError):
        make_address(AddressKind.PHONE, raw, RULES)


def test_webhook_urls_must_be_https_and_allowed() -> None:
    assert make_address(AddressKind.WEBHOOK_URL, "https://hooks.example.com/x", RULES)
    assert make_address(AddressKind.WEBHOOK_URL, "https://team.slack.test/x", RULES)
    for raw, reason in (
        ("http://hooks.example.com/x", "INVALID_ADDRESS"),
        ("ftp://hooks.example.com/x", "INVALID_ADDRESS"),
        ("https://user:pw@hooks.example.com/x", "INVALID_ADDRESS"),
        ("https://evil.example.org/x", "ADDRESS_NOT_ALLOWED"),
        ("https://slack.test.evil.org/x", "ADDRESS_NOT_ALLOWED"),
        ("http://127.0.0.1:8080/x", "INVALID_ADDRESS"),
    ):
        with pytest.raises(AddressError) as refused:
            make_address(AddressKind.WEBHOOK_URL, raw, RULES)
        assert refused.value.reason == reason, raw


def test_loopback_http_only_when_allowed() -> None:
    rules = AddressRules(webhook_hosts=frozenset({"127.0.0.1"}), allow_loopback_http=True)
    assert make_address(AddressKind.WEBHOOK_URL, "http://127.0.0.1:9/x", rules)
    with pytest.raises(AddressError):
        make_address(AddressKind.WEBHOOK_URL, "http://10.0.0.1/x", rules)


def test_channel_fit() -> None:
    phone = Address(AddressKind.PHONE, "+34600123456")
    check_fits(phone, Channel.SMS)
    check_fits(phone, Channel.WHATSAPP)
    with pytest.raises(AddressError) as refused:
        check_fits(phone, Channel.EMAIL)
    assert refused.value.reason == "ADDRESS_CHANNEL_MISMATCH"


def test_redaction_hides_most_of_an_address() -> None:
    assert Address(AddressKind.EMAIL, "ana@example.com").redacted() == "a***@example.com"
    assert "600123" not in Address(AddressKind.PHONE, "+34600123456").redacted()
