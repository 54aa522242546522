"""Who called through the edge: the client certificate Envoy verified, trusted from Envoy only,
and only ever as a device."""

from __future__ import annotations

import pytest

from gatehouse.runtime.identity import EDGE_SPIFFE_ID, Caller, forwarded_client_id

DEVICE = "spiffe://gatehouse/buildings/b1/devices/d1"
XFCC = "x-forwarded-client-cert"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Hash=abc123;URI={DEVICE}", DEVICE),
        (f'By=spiffe://gatehouse/envoy;Hash=abc;URI="{DEVICE}"', DEVICE),
        # Envoy appends its own element: the last one is what it verified.
        (f"URI=spiffe://gatehouse/buildings/x/devices/y,Hash=h;URI={DEVICE}", DEVICE),
        ("Hash=abc123", None),
        ("Hash=abc;URI=https://example.com/not-spiffe", None),
    ],
)
def test_the_edge_element_names_the_client(header: str, expected: str | None) -> None:
    assert forwarded_client_id(EDGE_SPIFFE_ID, {XFCC: header}) == expected


def test_anyone_but_the_edge_is_ignored() -> None:
    forged = {XFCC: f"Hash=abc;URI={DEVICE}"}
    assert forwarded_client_id("spiffe://gatehouse/payments", forged) is None
    assert forwarded_client_id(None, forged) is None
    assert forwarded_client_id(EDGE_SPIFFE_ID, {}) is None


def test_only_a_device_identity_counts_as_a_device() -> None:
    assert Caller(peer_spiffe_id=DEVICE).device_spiffe_id == DEVICE
    assert Caller(peer_spiffe_id=EDGE_SPIFFE_ID, edge_client_id=DEVICE).device_spiffe_id == DEVICE
    # A service certificate shown to the edge makes nobody a device (nor a service).
    shown = Caller(peer_spiffe_id=EDGE_SPIFFE_ID, edge_client_id="spiffe://gatehouse/access")
    assert shown.device_spiffe_id is None
    assert Caller(peer_spiffe_id="spiffe://gatehouse/access").device_spiffe_id is None
