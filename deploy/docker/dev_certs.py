#!/opt/gatehouse/bin/python
"""`gatehouse-dev-certs CERTS_DIR [--keys KEYS_DIR]`: dev CA, certificates and keys for compose.

Like `gatehouse certs`, but each certificate also names its compose host (`auth`, `edge`, ...)
as a DNS SAN, so a service reaching a peer at `auth:50051` can verify it by host name as well
as by SPIFFE id. With `--keys`, also one key file per service (`<service>.key`, 0600) for the
secret every replica of that service must share (auth's key-encryption key, access's and
monitoring's secret key): compose points `GATEHOUSE_<SERVICE>_..._FILE` at it, so the keys
survive container restarts. Existing files are kept (idempotent). Never for production: there
certificates come from cert-manager and keys from Secrets (docs/operations.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gatehouse.mesh.catalog import certificate_identities
from gatehouse.runtime.config import SERVICE_NAMES
from gatehouse.runtime.secrets import load_or_create_key_file
from gatehouse.runtime.tls import DEFAULT_HOSTS, CertificatePaths, DevCertificateAuthority

# The compose service an identity runs as, where that is not the identity's own name.
COMPOSE_HOSTS = {"envoy": "edge"}


def issue_all(directory: Path) -> dict[str, CertificatePaths]:
    authority = DevCertificateAuthority.load_or_create(directory)
    issued: dict[str, CertificatePaths] = {}
    for name in certificate_identities():
        paths = CertificatePaths.for_name(directory, name)
        if not paths.exists():
            host = COMPOSE_HOSTS.get(name, name)
            paths = authority.issue(directory, name, hosts=(host, *DEFAULT_HOSTS))
        issued[name] = paths
    return issued


def key_file(directory: Path, service: str) -> Path:
    return directory / f"{service}.key"


def create_keys(directory: Path) -> list[Path]:
    """One key file per service, made once (O_EXCL, 0600) and then only read back."""
    paths = []
    for service in SERVICE_NAMES:
        path = key_file(directory, service)
        load_or_create_key_file(path, create=True, what=f"the {service} key")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gatehouse-dev-certs", description="Dev CA, certificates and keys for compose."
    )
    parser.add_argument("directory", type=Path, help="certificates")
    parser.add_argument("--keys", type=Path, default=None, help="shared service keys")
    args = parser.parse_args(argv)
    for name, paths in issue_all(args.directory).items():
        print(f"{name:<14} {paths.certificate}", flush=True)
    if args.keys is not None:
        for path in create_keys(args.keys):
            print(f"{'key':<14} {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
