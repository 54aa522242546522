"""The `kustomize build` subset of scripts/render_manifests.py: what the overlays use works as
kustomize does it, and everything else is refused rather than silently ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import render_manifests
from scripts.render_manifests import KustomizeError, build

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"tier": "front"}},
    "spec": {
        "template": {
            "spec": {
                "initContainers": [{"name": "init", "image": "gatehouse"}],
                "containers": [
                    {"name": "app", "image": "gatehouse:old", "args": ["a", "b"]},
                    {"name": "proxy", "image": "docker.io/envoyproxy/envoy:v1"},
                ],
            }
        }
    },
}
CONFIG: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "settings"},
    "data": {"a/b": "1", "keep": "2"},
}


def overlay(tmp_path: Path, kustomization: dict[str, Any]) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "objects.yaml").write_text(yaml.safe_dump_all([DEPLOYMENT, CONFIG]))
    (base / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["objects.yaml"]}))
    top = tmp_path / "overlay"
    top.mkdir()
    (top / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["../base"], **kustomization})
    )
    return top


def images(objects: list[dict[str, Any]]) -> list[str]:
    return [c["image"] for c in render_manifests.containers(objects)]


def test_resources_are_collected_in_order(tmp_path: Path) -> None:
    objects = build(overlay(tmp_path, {}))
    assert [o["kind"] for o in objects] == ["Deployment", "ConfigMap"]
    assert objects[0] == DEPLOYMENT


def test_images_take_a_new_name_tag_or_digest(tmp_path: Path) -> None:
    objects = build(
        overlay(tmp_path, {"images": [{"name": "gatehouse", "newName": "r.io/g", "newTag": "1"}]})
    )
    assert images(objects) == ["r.io/g:1", "r.io/g:1", "docker.io/envoyproxy/envoy:v1"]
    (tmp_path / "2").mkdir()
    objects = build(
        overlay(tmp_path / "2", {"images": [{"name": "gatehouse", "digest": "sha256:ab"}]})
    )
    assert images(objects)[:2] == ["gatehouse@sha256:ab", "gatehouse@sha256:ab"]
    (tmp_path / "3").mkdir()
    objects = build(
        overlay(
            tmp_path / "3",
            {"images": [{"name": "docker.io/envoyproxy/envoy", "newTag": "v2"}]},
        )
    )
    assert images(objects)[2] == "docker.io/envoyproxy/envoy:v2"


def test_json6902_add_replace_remove_with_escaped_paths(tmp_path: Path) -> None:
    patch = [
        {"op": "replace", "path": "/data/a~1b", "value": "9"},
        {"op": "remove", "path": "/data/keep"},
        {"op": "add", "path": "/data/new", "value": "3"},
    ]
    objects = build(
        overlay(
            tmp_path,
            {"patches": [{"target": {"kind": "ConfigMap"}, "patch": yaml.safe_dump(patch)}]},
        )
    )
    assert objects[1]["data"] == {"a/b": "9", "new": "3"}
    # The input objects are never modified.
    assert CONFIG["data"] == {"a/b": "1", "keep": "2"}


def test_json6902_on_lists(tmp_path: Path) -> None:
    patch = [
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "c"},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/0", "value": "z"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/args/1", "value": "A"},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
    ]
    objects = build(
        overlay(
            tmp_path,
            {
                "patches": [
                    {
                        "target": {"kind": "Deployment", "labelSelector": "tier=front"},
                        "patch": yaml.safe_dump(patch),
                    }
                ]
            },
        )
    )
    (container,) = objects[0]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["z", "A", "b", "c"]


def test_patch_from_a_file_and_name_regex(tmp_path: Path) -> None:
    top = overlay(
        tmp_path,
        {"patches": [{"target": {"kind": "ConfigMap", "name": "sett.*"}, "path": "p.yaml"}]},
    )
    (top / "p.yaml").write_text(yaml.safe_dump([{"op": "add", "path": "/data/x", "value": "y"}]))
    assert build(top)[1]["data"]["x"] == "y"


@pytest.mark.parametrize(
    ("kustomization", "message"),
    [
        ({"namePrefix": "x-"}, "not implemented"),
        ({"patches": [{"patch": "kind: ConfigMap\n", "target": {"kind": "ConfigMap"}}]}, "6902"),
        ({"patches": [{"patch": "[]"}]}, "needs a target"),
        ({"patches": [{"patch": "[]", "target": {"kind": "Secret"}}]}, "matches nothing"),
        (
            {
                "patches": [
                    {
                        "patch": '[{"op": "move", "path": "/data/x", "from": "/data/keep"}]',
                        "target": {"kind": "ConfigMap"},
                    }
                ]
            },
            "move",
        ),
        (
            {
                "patches": [
                    {
                        "patch": '[{"op": "replace", "path": "/data/missing", "value": "1"}]',
                        "target": {"kind": "ConfigMap"},
                    }
                ]
            },
            "missing",
        ),
        ({"images": [{"name": "gatehouse", "newTag": "1", "tagSuffix": "x"}]}, "images"),
    ],
)
def test_what_is_not_implemented_is_refused(
    tmp_path: Path, kustomization: dict[str, Any], message: str
) -> None:
    with pytest.raises(KustomizeError, match=message):
        build(overlay(tmp_path, kustomization))


def test_a_directory_without_kustomization_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KustomizeError, match=r"no kustomization\.yaml"):
        build(tmp_path)


def test_the_command_line_builds_an_overlay_and_checks_drift(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert render_manifests.main(["build", "dev"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {d["kind"] for d in documents} >= {"Deployment", "Job", "NetworkPolicy"}
    assert render_manifests.main(["check"]) == 0


def test_check_reports_a_stale_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stale = tmp_path / "auth.yaml"
    stale.write_text("# edited by hand\n")
    original = render_manifests.generated_files

    def with_a_stale_file() -> dict[Path, str]:
        return original() | {stale: "# generated\n"}

    monkeypatch.setattr(render_manifests, "generated_files", with_a_stale_file)
    assert render_manifests.stale_files() == [stale]
    assert render_manifests.main(["check"]) == 1
