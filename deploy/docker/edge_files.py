#!/opt/gatehouse/bin/python
"""`gatehouse-edge-files DIR`: write the files the edge's Envoy bootstrap names besides itself.

The bootstrap (a ConfigMap in Kubernetes, deploy/compose/envoy.yaml in compose) is generated
by `scripts/render_manifests.py` from `gatehouse.edge.config`; it points at
`DIR/gatehouse-edge.binpb` (the descriptor set without internal RPCs) and `DIR/openapi.json`.
Both come from this image, so the edge transcodes exactly the contracts the services of the
same release serve. Run as an init container (Kubernetes) or a one-shot service (compose).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from gatehouse.edge.descriptors import DescriptorSet, descriptor_set_path, openapi_path
from gatehouse.edge.process import EDGE_DESCRIPTORS

OPENAPI_FILE = "openapi.json"


def write_edge_files(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    descriptors = directory / EDGE_DESCRIPTORS
    descriptors.write_bytes(DescriptorSet.read(descriptor_set_path()).for_edge())
    openapi = directory / OPENAPI_FILE
    shutil.copyfile(openapi_path(), openapi)
    return descriptors, openapi


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gatehouse-edge-files", description="Write the edge's descriptor set and OpenAPI."
    )
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    for path in write_edge_files(args.directory):
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
