from __future__ import annotations

import uuid

from gatehouse.auth.v1 import auth_pb2
from gatehouse.runtime.errors import FieldViolation
from gatehouse.runtime.validation import RequestValidator

AUTH = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]


def _validator(method: str, *extra) -> RequestValidator:  # type: ignore[no-untyped-def]
    return RequestValidator(AUTH.methods_by_name[method], extra)


def test_path_bound_field_is_required() -> None:
    violations = _validator("GetUser").violations(auth_pb2.GetUserRequest())
    assert violations == [FieldViolation("name", "is required")]


def test_path_bound_field_must_match_the_resource_pattern() -> None:
    validator = _validator("GetUser")
    assert validator.violations(auth_pb2.GetUserRequest(name="users/01J0ABC")) == []
    (violation,) = validator.violations(auth_pb2.GetUserRequest(name="roles/admin"))
    assert violation.field == "name"
    assert "users/{id}" in violation.description
    (violation,) = validator.violations(auth_pb2.GetUserRequest(name="users/a/b"))
    assert violation.field == "name"


def test_request_id_must_be_a_uuid_when_set() -> None:
    validator = _validator("DeleteUser")
    ok = auth_pb2.DeleteUserRequest(name="users/1", request_id=str(uuid.uuid4()))
    assert validator.violations(ok) == []
    assert validator.violations(auth_pb2.DeleteUserRequest(name="users/1")) == []
    bad = auth_pb2.DeleteUserRequest(name="users/1", request_id="retry-1")
    assert [v.field for v in validator.violations(bad)] == ["request_id"]


def test_negative_page_size_is_refused() -> None:
    violations = _validator("ListUsers").violations(auth_pb2.ListUsersRequest(page_size=-1))
    assert [v.field for v in violations] == ["page_size"]


def test_service_specific_validators_run_after_contract_rules() -> None:
    def email_needs_at(request: auth_pb2.RegisterRequest) -> list[FieldViolation]:
        return [] if "@" in request.email else [FieldViolation("email", "must contain @")]

    validator = _validator("Register", email_needs_at)
    assert [v.field for v in validator.violations(auth_pb2.RegisterRequest(email="x"))] == ["email"]
