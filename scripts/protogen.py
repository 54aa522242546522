"""Generate Python code, typed stubs and the Envoy descriptor set from proto/.

One command for all generated artefacts (`make proto`); `--check` regenerates into a
temporary folder and fails when what is committed differs (CI's stale-codegen check).

Outputs:
  services/gatehouse/<pkg>/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py, *_pb2_grpc.pyi
  envoy/descriptors/gatehouse.binpb   (FileDescriptorSet for the gRPC-JSON transcoder)
  envoy/openapi.json                  (OpenAPI 3 of the REST surface, from that set)
  .tools/third_party/google/...       (googleapis sources for buf; git-ignored, not checked)
"""

from __future__ import annotations

import argparse
import filecmp
import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

from gatehouse.edge.openapi import openapi_json

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PYTHON_OUT = ROOT / "services"
DESCRIPTOR_OUT = ROOT / "envoy" / "descriptors" / "gatehouse.binpb"
OPENAPI_OUT = ROOT / "envoy" / "openapi.json"
THIRD_PARTY = ROOT / ".tools" / "third_party"
# The mypy-protobuf plugins live beside this interpreter, which need not be on PATH.
BIN = Path(sys.executable).parent
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"
# googleapis-common-protos installs google/api, google/rpc, google/type at the top of
# site-packages; find it through a module it ships rather than guessing the path.
GOOGLEAPIS = Path(importlib.import_module("google.api.annotations_pb2").__file__ or "").parents[2]
# Named explicitly so the descriptor set holds them even though no proto of ours imports
# them: Envoy needs them to render google.rpc.Status details as JSON.
EXTRA_DESCRIPTOR_FILES = ("google/rpc/status.proto", "google/rpc/error_details.proto")
GOOGLEAPIS_DIRS = ("google/api", "google/rpc", "google/type")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def run_protoc(python_out: Path, descriptor_out: Path) -> None:
    files = proto_files()
    descriptor_out.parent.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{GOOGLEAPIS}",
        f"-I{WELL_KNOWN}",
        f"--python_out={python_out}",
        f"--grpc_python_out={python_out}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={python_out}",
        f"--mypy_grpc_out={python_out}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={descriptor_out}",
        *files,
        *EXTRA_DESCRIPTOR_FILES,
    ]
    python_out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # mypy-protobuf chatters on stderr; show it only when protoc failed.
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"protoc failed with exit code {result.returncode}")
    # protoc also wrote code for the googleapis files named above; they ship with
    # googleapis-common-protos already, so drop ours.
    shutil.rmtree(python_out / "google", ignore_errors=True)
    for package_dir in {python_out / Path(f).parent for f in files}:
        (package_dir / "__init__.py").touch()
    _drop_empty_grpc_modules(python_out, files)


def _drop_empty_grpc_modules(python_out: Path, files: list[str]) -> None:
    """protoc's gRPC plugin writes a module for every file, services or not; a file of plain
    messages (events, common types) gets one with nothing in it. Drop those: an import of one
    would only mislead."""
    for proto in files:
        stem = python_out / Path(proto).with_suffix("")
        module = stem.parent / f"{stem.name}_pb2_grpc.py"
        if module.exists() and "class " not in module.read_text():
            module.unlink()
            (stem.parent / f"{stem.name}_pb2_grpc.pyi").unlink(missing_ok=True)


def generated_files(base: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in (base / "gatehouse").rglob("*"):
        if path.is_file() and (
            path.name.endswith(GENERATED_SUFFIXES)
            or (path.name == "__init__.py" and path.parent.name.startswith("v"))
        ):
            found[str(path.relative_to(base))] = path
    return found


def copy_third_party() -> None:
    for sub in GOOGLEAPIS_DIRS:
        target = THIRD_PARTY / sub
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for source in (GOOGLEAPIS / sub).glob("*.proto"):
            shutil.copy2(source, target / source.name)


def generate() -> None:
    for path in generated_files(PYTHON_OUT).values():
        if path.name != "__init__.py":
            path.unlink()
    run_protoc(PYTHON_OUT, DESCRIPTOR_OUT)
    OPENAPI_OUT.write_text(openapi_json(DESCRIPTOR_OUT.read_bytes()))
    copy_third_party()


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        descriptor = out / "gatehouse.binpb"
        run_protoc(out, descriptor)
        fresh = generated_files(out)
        committed = generated_files(PYTHON_OUT)
        problems = [f"missing: {name}" for name in sorted(fresh.keys() - committed.keys())]
        problems += [
            f"not generated by proto/: {n}" for n in sorted(committed.keys() - fresh.keys())
        ]
        problems += [
            f"stale: {name}"
            for name in sorted(fresh.keys() & committed.keys())
            if not filecmp.cmp(fresh[name], committed[name], shallow=False)
        ]
        if not DESCRIPTOR_OUT.exists() or not filecmp.cmp(
            descriptor, DESCRIPTOR_OUT, shallow=False
        ):
            problems.append(f"stale: {DESCRIPTOR_OUT.relative_to(ROOT)}")
        if not OPENAPI_OUT.exists() or OPENAPI_OUT.read_text() != openapi_json(
            descriptor.read_bytes()
        ):
            problems.append(f"stale: {OPENAPI_OUT.relative_to(ROOT)}")
    if problems:
        print("Generated code differs from proto/ — run `make proto` and commit:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"generated code is up to date ({len(fresh)} files + descriptor set + OpenAPI)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    parser.add_argument(
        "--third-party-only", action="store_true", help="only refresh the googleapis copy for buf"
    )
    args = parser.parse_args()
    if args.third_party_only:
        copy_third_party()
        return 0
    if args.check:
        copy_third_party()
        return check()
    generate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
