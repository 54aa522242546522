"""The OpenAPI document: generated from the descriptors, one operation per exposed HTTP rule."""

from __future__ import annotations

import json
from typing import Any

from gatehouse.edge.descriptors import DescriptorSet, descriptor_set_path, openapi_path
from gatehouse.edge.openapi import build_openapi, openapi_json


def document() -> dict[str, Any]:
    return build_openapi(DescriptorSet.read(descriptor_set_path()))


def operations(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        operation["x-grpc-method"]: (path, verb, operation)
        for path, item in doc["paths"].items()
        for verb, operation in item.items()
        # Additional bindings (operationId with a suffix) are the same RPC again.
        if operation["operationId"] == "_".join(operation["x-grpc-method"].split(".")[-2:])
    }


def test_committed_document_matches_the_descriptors() -> None:
    assert openapi_path().read_text() == openapi_json(descriptor_set_path().read_bytes())


def test_every_exposed_rpc_is_documented_and_internal_ones_are_not() -> None:
    descriptors = DescriptorSet.read(descriptor_set_path())
    documented = operations(document())
    for method in descriptors.methods():
        name = f"{method.service_full_name}.{method.method.name}"
        assert (name in documented) == (method.access != "internal"), name


def test_paths_expand_resource_names_into_parameters() -> None:
    path, verb, operation = operations(document())["gatehouse.access.v1.AccessService.ValidatePin"]
    assert (path, verb) == ("/v1/buildings/{building}/doors/{door}:validatePin", "post")
    assert [p["name"] for p in operation["parameters"] if p["in"] == "path"] == [
        "building",
        "door",
    ]
    assert operation["security"] == []  # a device, not an end user with a token


def test_list_query_parameters_use_json_names() -> None:
    listing = operations(document())["gatehouse.payments.v1.PaymentsService.ListPayments"]
    _, verb, operation = listing
    assert verb == "get"
    names = {p["name"] for p in operation["parameters"]}
    assert {"pageSize", "pageToken"} <= names
    assert operation["security"] == [{"accessToken": []}]


def test_server_streams_are_documented_as_ndjson() -> None:
    _, _, operation = operations(document())["gatehouse.payments.v1.PaymentsService.WatchPayment"]
    assert "newline-delimited JSON" in operation["description"]


def test_errors_are_google_rpc_status_and_schemas_resolve() -> None:
    doc = document()
    text = json.dumps(doc)
    assert '"#/components/schemas/google.rpc.Status"' in text
    for reference in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert reference in doc["components"]["schemas"], reference
    money = doc["components"]["schemas"]["google.type.Money"]["properties"]
    assert money["units"]["type"] == "string"  # int64 is a string in the JSON mapping
