from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gatehouse.runtime.tls import ensure_dev_certificates, spiffe_id


def test_certificates_carry_spiffe_id_and_both_key_usages(tmp_path: Path) -> None:
    paths = ensure_dev_certificates(tmp_path, ["payments"])["payments"]
    certificate = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert spiffe_id("payments") in names.get_values_for_type(x509.UniformResourceIdentifier)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages


def test_private_keys_are_owner_only(tmp_path: Path) -> None:
    paths = ensure_dev_certificates(tmp_path, ["auth"])["auth"]
    for key in (paths.private_key, tmp_path / "ca-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_existing_certificates_are_kept(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, ["auth"])["auth"].certificate.read_bytes()
    again = ensure_dev_certificates(tmp_path, ["auth", "client"])
    assert again["auth"].certificate.read_bytes() == first
    assert again["client"].exists()
