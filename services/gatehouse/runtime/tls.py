"""Development PKI and gRPC TLS credentials.

`gatehouse certs` (and `gatehouse up` on first run) creates a dev CA and one certificate per
identity under `.gatehouse/certs/`: `ca.pem`, `<name>.pem`, `<name>-key.pem`. Every certificate
carries a SPIFFE-style URI SAN (`spiffe://gatehouse/<name>`) that services use to tell callers
apart, and both the serverAuth and clientAuth extended key usages, because every service is a
server to its callers and a client of its peers (mTLS on every hop).

Production takes certificates from the platform (cert-manager); only the loading half of this
module runs there.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SPIFFE_TRUST_DOMAIN = "gatehouse"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
# Long enough that a developer never meets an expiry mid-week, short enough to be obviously dev.
LEAF_VALIDITY = dt.timedelta(days=90)
CA_VALIDITY = dt.timedelta(days=365)
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def spiffe_id(name: str) -> str:
    return f"spiffe://{SPIFFE_TRUST_DOMAIN}/{name}"


@dataclass(frozen=True, slots=True)
class CertificatePaths:
    """Where one identity's files live."""

    ca: Path
    certificate: Path
    private_key: Path

    @classmethod
    def for_name(cls, directory: Path, name: str) -> CertificatePaths:
        return cls(
            ca=directory / CA_FILE,
            certificate=directory / f"{name}.pem",
            private_key=directory / f"{name}-key.pem",
        )

    def exists(self) -> bool:
        return self.ca.is_file() and self.certificate.is_file() and self.private_key.is_file()

    def read(self) -> tuple[bytes, bytes, bytes]:
        """CA bundle, certificate chain, private key — in the order grpc wants them."""
        return self.ca.read_bytes(), self.certificate.read_bytes(), self.private_key.read_bytes()


class DevCertificateAuthority:
    """A local CA that issues leaf certificates for services, Envoy, clients and devices."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._certificate = certificate
        self._key = key

    @classmethod
    def load_or_create(cls, directory: Path) -> DevCertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / CA_FILE, directory / CA_KEY_FILE
        if cert_path.is_file() and key_path.is_file():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} is not an EC private key")
            return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gatehouse dev CA")])
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _pem_key(key))
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(certificate, key)

    def issue(
        self,
        directory: Path,
        name: str,
        *,
        hosts: Sequence[str] = DEFAULT_HOSTS,
        validity: dt.timedelta = LEAF_VALIDITY,
        file_name: str | None = None,
    ) -> CertificatePaths:
        """Write `<name>.pem` and `<name>-key.pem`, signed by this CA, and return their paths.

        `file_name` replaces `name` in the file names when `name` is no file name (a device's
        resource name holds slashes); the SPIFFE id always carries `name` itself.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(name))]
        for host in hosts:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        certificate = (
            x509.CertificateBuilder()
            # A common name holds at most 64 characters; the SPIFFE id carries the full name.
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (file_name or name)[:64])])
            )
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )
        paths = CertificatePaths.for_name(directory, file_name or name)
        _write_private(paths.private_key, _pem_key(key))
        paths.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return paths


def ensure_dev_certificates(directory: Path, names: Iterable[str]) -> dict[str, CertificatePaths]:
    """Create the CA and any missing certificate; existing files are kept (idempotent)."""
    authority = DevCertificateAuthority.load_or_create(directory)
    issued: dict[str, CertificatePaths] = {}
    for name in names:
        paths = CertificatePaths.for_name(directory, name)
        issued[name] = paths if paths.exists() else authority.issue(directory, name)
    return issued


_DEVICE_NAME = re.compile(r"buildings/([A-Za-z0-9._~-]+)/devices/([A-Za-z0-9._~-]+)")


def device_certificate_file_name(device: str) -> str:
    """The file name (without `.pem`) of a device's certificate: `buildings/b1/devices/d1` ->
    `device--b1--d1`. Raises ValueError for anything that is not a device resource name."""
    match = _DEVICE_NAME.fullmatch(device)
    if match is None:
        raise ValueError(f"not a device resource name (buildings/{{b}}/devices/{{d}}): {device!r}")
    return f"device--{match.group(1)}--{match.group(2)}"


def issue_device_certificate(
    directory: Path, device: str, *, validity: dt.timedelta = LEAF_VALIDITY
) -> CertificatePaths:
    """A client certificate for one device (dev CA): SPIFFE id `spiffe://gatehouse/<device>`,
    files named by `device_certificate_file_name`. Replaces an existing one."""
    file_name = device_certificate_file_name(device)
    authority = DevCertificateAuthority.load_or_create(directory)
    # Devices are clients only; the DNS/IP names of a server certificate mean nothing here.
    return authority.issue(directory, device, hosts=(), validity=validity, file_name=file_name)


def server_credentials(paths: CertificatePaths) -> grpc.ServerCredentials:
    """TLS that *requires* a client certificate signed by our CA (mTLS)."""
    ca, chain, key = paths.read()
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(paths: CertificatePaths) -> grpc.ChannelCredentials:
    """TLS presenting our certificate, trusting only our CA."""
    ca, chain, key = paths.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    # Private keys are created owner-only from the first byte, never chmod-ed afterwards.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
