"""REST through the edge: transcoding, status mapping, google.rpc details, headers, OpenAPI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gatehouse.edge.descriptors import openapi_path
from tests.e2e.edge.conftest import Edge, Response, StartEdge
from tests.support.tokens import TestIssuer

UNKNOWN_PAYMENT_PATH = "/v1/payments/01J0000000000000000000000A"
GRPC_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding")


def details_of(response: Response, type_name: str) -> dict[str, Any]:
    for detail in response.json()["details"]:
        if detail["@type"] == f"type.googleapis.com/{type_name}":
            return dict(detail)
    raise AssertionError(f"no {type_name} in {response.body!r}")


async def test_not_found_is_404_with_error_info(edge: Edge, issuer: TestIssuer) -> None:
    response = await edge.rest("GET", UNKNOWN_PAYMENT_PATH, token=issuer.token(permissions=["*"]))
    assert response.status == 404, response.body
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == 5
    assert "payments/01J0000000000000000000000A" in body["message"]
    info = details_of(response, "google.rpc.ErrorInfo")
    assert (info["reason"], info["domain"]) == ("PAYMENT_NOT_FOUND", "payments.gatehouse")


async def test_invalid_field_is_400_with_bad_request_details(
    edge: Edge, issuer: TestIssuer
) -> None:
    response = await edge.rest(
        "GET", "/v1/payments?pageSize=-1", token=issuer.token(permissions=["*"])
    )
    assert response.status == 400, response.body
    violations = details_of(response, "google.rpc.BadRequest")["fieldViolations"]
    assert [v["field"] for v in violations] == ["page_size"]


async def test_missing_token_is_401_from_the_service(edge: Edge) -> None:
    response = await edge.rest("GET", UNKNOWN_PAYMENT_PATH)
    assert response.status == 401
    assert details_of(response, "google.rpc.ErrorInfo")["reason"] == "TOKEN_MISSING"


async def test_unknown_path_is_404_as_status_json(edge: Edge) -> None:
    response = await edge.rest("GET", "/v1/nothing-here")
    assert response.status == 404
    assert response.json()["code"] == 5


async def test_unknown_query_parameter_is_400_as_status_json(
    edge: Edge, issuer: TestIssuer
) -> None:
    response = await edge.rest(
        "GET", f"{UNKNOWN_PAYMENT_PATH}?color=red", token=issuer.token(permissions=["*"])
    )
    assert response.status == 400
    body = response.json()
    assert body["code"] == 3
    assert "color" in body["message"]


async def test_query_parameters_take_json_or_proto_names(edge: Edge, issuer: TestIssuer) -> None:
    token = issuer.token(permissions=["*"])
    for query in ("pageSize=5&pageToken=", "page_size=5&page_token="):
        response = await edge.rest("GET", f"/v1/payments?{query}", token=token)
        assert response.answered_by("payments"), (query, response.body)


async def test_rest_responses_carry_security_headers_and_no_grpc_headers(edge: Edge) -> None:
    response = await edge.rest("GET", UNKNOWN_PAYMENT_PATH)
    assert response.status == 401
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert response.headers["server"] == "gatehouse-edge"
    assert not [h for h in GRPC_HEADERS if h in response.headers], response.headers
    assert not [h for h in response.headers if h.startswith("x-envoy")], response.headers


async def test_internal_rpc_is_not_exposed(edge: Edge) -> None:
    response = await edge.rest("POST", "/v1/tokens:introspect", body='{"token": "x"}')
    assert response.status == 404


async def test_openapi_document_is_served(edge: Edge) -> None:
    response = await edge.rest("GET", "/openapi.json")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.body == openapi_path().read_bytes()
    document = json.loads(response.body)
    assert document["openapi"].startswith("3.")
    assert "/v1/sessions:login" in document["paths"]


async def test_healthz_answers_from_the_edge_itself(edge: Edge) -> None:
    response = await edge.rest("GET", "/healthz")
    assert response.status == 200


async def test_cors_preflight_for_a_configured_origin(start_edge: StartEdge) -> None:
    edge = await start_edge(edge_cors_origins=["https://app.example"])
    allowed = await edge.rest(
        "OPTIONS",
        "/v1/users",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = await edge.rest(
        "OPTIONS",
        "/v1/users",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


async def test_access_log_is_json_with_trace_id_and_original_path(edge: Edge) -> None:
    await edge.rest("POST", "/v1/sessions:login", body="{}")
    log_path: Path = edge.process.log_path
    access: list[dict[str, Any]] = []
    # Envoy flushes its log file about once a second.
    for _ in range(50):
        text = await asyncio.to_thread(log_path.read_text)
        entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        access = [e for e in entries if e.get("logger") == "gatehouse.edge.access"]
        if access:
            break
        await asyncio.sleep(0.1)
    assert access, text
    last = access[-1]
    assert (last["method"], last["path"]) == ("POST", "/v1/sessions:login")
    assert last["rpc"] == "/gatehouse.auth.v1.AuthService/Login"
    assert len(last["trace_id"]) == 32
