"""Users (get, list, delete) and roles (create, list, assign, revoke): RBAC rules."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc

from gatehouse.auth.v1 import auth_pb2, events_pb2
from gatehouse.runtime.ids import new_ulid
from tests.support.auth import AuthHarness, bearer, refused, request_id, unique_email


async def test_get_user_and_its_refusals(auth: AuthHarness) -> None:
    _, admin = await auth.admin()
    user, tokens = await auth.signed_in()
    stub = auth.stub()
    found = await stub.GetUser(
        auth_pb2.GetUserRequest(name=user.name), metadata=bearer(admin.access_token)
    )
    assert found.user.email == user.email
    await refused(
        stub.GetUser(
            auth_pb2.GetUserRequest(name=f"users/{new_ulid()}"), metadata=bearer(admin.access_token)
        ),
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    await refused(
        stub.GetUser(auth_pb2.GetUserRequest(name="users/x1"), metadata=bearer(admin.access_token)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_NAME",
    )
    # A visitor lacks auth.users.read: refused by the runtime from the contract's rule, and
    # the denial lands in the audit trail.
    await refused(
        stub.GetUser(auth_pb2.GetUserRequest(name=user.name), metadata=bearer(tokens.access_token)),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_MISSING",
    )
    denied = [
        r.security_event
        for r in await auth.security_events()
        if r.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_PERMISSION_DENIED
    ]
    assert denied[-1].actor.user == user.name
    assert denied[-1].details["permission"] == "auth.users.read"
    assert denied[-1].details["method"].endswith("/GetUser")


async def test_list_users_pages_filters_and_orders(auth: AuthHarness) -> None:
    _, admin = await auth.admin()
    me = bearer(admin.access_token)
    names = [
        await auth.register(unique_email(f"p{i}"), display_name=f"Person {i}") for i in range(5)
    ]
    stub = auth.stub()

    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListUsers(
            auth_pb2.ListUsersRequest(page_size=2, page_token=token, role="roles/visitor"),
            metadata=me,
        )
        assert len(page.users) <= 2
        seen += [u.name for u in page.users]
        token = page.next_page_token
        if not token:
            break
    # Newest first, every visitor once, the admin filtered out by role.
    assert seen == [u.name for u in reversed(names)]

    by_email = await stub.ListUsers(
        auth_pb2.ListUsersRequest(order_by="email", query="person 3"), metadata=me
    )
    assert [u.name for u in by_email.users] == [names[3].name]
    everyone = await stub.ListUsers(
        auth_pb2.ListUsersRequest(order_by="display_name desc"), metadata=me
    )
    assert len(everyone.users) == 6
    page = await stub.ListUsers(auth_pb2.ListUsersRequest(page_size=2), metadata=me)
    await refused(
        stub.ListUsers(
            auth_pb2.ListUsersRequest(page_size=2, page_token=page.next_page_token, query="x"),
            metadata=me,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
    for bad in (
        auth_pb2.ListUsersRequest(order_by="password"),
        auth_pb2.ListUsersRequest(role="admins"),
        auth_pb2.ListUsersRequest(query="x" * 101),
        auth_pb2.ListUsersRequest(page_size=-1),
        auth_pb2.ListUsersRequest(state=99),  # type: ignore[arg-type]
    ):
        await refused(
            stub.ListUsers(bad, metadata=me), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
        )


async def test_delete_user_erases_credentials_and_releases_the_email(auth: AuthHarness) -> None:
    admin_user, admin = await auth.admin()
    user, tokens = await auth.signed_in()
    stub = auth.stub()
    deleted = await stub.DeleteUser(
        auth_pb2.DeleteUserRequest(name=user.name), metadata=bearer(admin.access_token)
    )
    assert deleted.user.state == auth_pb2.USER_STATE_DELETED
    assert deleted.user.email == ""
    assert list(deleted.user.roles) == []
    assert deleted.user.HasField("delete_time")
    await refused(
        stub.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=bearer(tokens.access_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_REVOKED",
    )
    await refused(auth.login(user.email), grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    # Deleting again returns it unchanged, and the email can be registered anew.
    again = await stub.DeleteUser(
        auth_pb2.DeleteUserRequest(name=user.name), metadata=bearer(admin.access_token)
    )
    assert again.user == deleted.user
    assert (await auth.register(user.email)).name != user.name
    (event,) = await auth.outbox("user.deleted")
    payload = events_pb2.UserDeleted()
    event.data.Unpack(payload)
    assert (payload.user, payload.deleted_by) == (user.name, admin_user.name)
    still = await stub.GetUser(
        auth_pb2.GetUserRequest(name=user.name), metadata=bearer(admin.access_token)
    )
    assert still.user.state == auth_pb2.USER_STATE_DELETED


async def test_the_last_administrator_cannot_be_removed(auth: AuthHarness) -> None:
    admin_user, admin = await auth.admin()
    me = bearer(admin.access_token)
    stub = auth.stub()
    await refused(
        stub.DeleteUser(auth_pb2.DeleteUserRequest(name=admin_user.name), metadata=me),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_ADMIN",
    )
    await refused(
        stub.RevokeRole(
            auth_pb2.RevokeRoleRequest(name=admin_user.name, role="roles/admin"), metadata=me
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_ADMIN",
    )
    second_admin, _ = await auth.admin()
    revoked = await stub.RevokeRole(
        auth_pb2.RevokeRoleRequest(name=second_admin.name, role="roles/admin"), metadata=me
    )
    assert "roles/admin" not in revoked.user.roles


async def test_roles_are_listed_created_and_checked_against_the_catalogue(
    auth: AuthHarness,
) -> None:
    _, admin = await auth.admin()
    me = bearer(admin.access_token)
    stub = auth.stub()
    listed = await stub.ListRoles(auth_pb2.ListRolesRequest(), metadata=me)
    assert [r.name for r in listed.roles] == [
        "roles/admin",
        "roles/operator",
        "roles/resident",
        "roles/visitor",
    ]
    assert all(r.built_in for r in listed.roles)
    created = await stub.CreateRole(
        auth_pb2.CreateRoleRequest(
            role_id="front-desk",
            role=auth_pb2.Role(
                display_name="Front desk",
                permissions=["access.visitors.check_in", "access.visitors.read", "monitoring.*"],
            ),
            request_id=request_id(),
        ),
        metadata=me,
    )
    assert created.role.name == "roles/front-desk"
    assert not created.role.built_in
    first = await stub.ListRoles(auth_pb2.ListRolesRequest(page_size=2), metadata=me)
    rest = await stub.ListRoles(
        auth_pb2.ListRolesRequest(page_size=10, page_token=first.next_page_token), metadata=me
    )
    assert [r.name for r in (*first.roles, *rest.roles)] == [
        "roles/admin",
        "roles/front-desk",
        "roles/operator",
        "roles/resident",
        "roles/visitor",
    ]
    assert rest.next_page_token == ""

    def create(role_id: str, *permissions: str) -> Awaitable[auth_pb2.CreateRoleResponse]:
        return stub.CreateRole(
            auth_pb2.CreateRoleRequest(
                role_id=role_id, role=auth_pb2.Role(permissions=list(permissions))
            ),
            metadata=me,
        )

    await refused(
        create("front-desk", "access.open"), grpc.StatusCode.ALREADY_EXISTS, "ROLE_EXISTS"
    )
    await refused(create("admin", "access.open"), grpc.StatusCode.ALREADY_EXISTS, "ROLE_EXISTS")
    await refused(
        create("teleporters", "access.teleport"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_PERMISSION",
    )
    for role_id, permissions in (("X", ("access.open",)), ("ok-id", ()), ("ok-id", ("A.B",))):
        await refused(
            create(role_id, *permissions), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
        )


async def test_nobody_hands_out_permissions_they_do_not_hold(auth: AuthHarness) -> None:
    _, admin = await auth.admin()
    stub = auth.stub()
    # A delegate who may manage and assign roles, but holds little else.
    await stub.CreateRole(
        auth_pb2.CreateRoleRequest(
            role_id="role-clerk",
            role=auth_pb2.Role(
                permissions=["auth.roles.manage", "auth.roles.assign", "access.visitors.read"]
            ),
        ),
        metadata=bearer(admin.access_token),
    )
    clerk, _ = await auth.signed_in()
    await stub.AssignRole(
        auth_pb2.AssignRoleRequest(name=clerk.name, role="roles/role-clerk"),
        metadata=bearer(admin.access_token),
    )
    clerk_token = (await auth.login(clerk.email)).tokens.access_token
    target, _ = await auth.signed_in()
    await refused(
        stub.CreateRole(
            auth_pb2.CreateRoleRequest(
                role_id="sneaky", role=auth_pb2.Role(permissions=["payments.refund"])
            ),
            metadata=bearer(clerk_token),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_ESCALATION",
    )
    for call in (
        stub.AssignRole(
            auth_pb2.AssignRoleRequest(name=target.name, role="roles/admin"),
            metadata=bearer(clerk_token),
        ),
        stub.AssignRole(
            auth_pb2.AssignRoleRequest(name=target.name, role="roles/operator"),
            metadata=bearer(clerk_token),
        ),
        stub.RevokeRole(
            auth_pb2.RevokeRoleRequest(name=target.name, role="roles/operator"),
            metadata=bearer(clerk_token),
        ),
    ):
        await refused(call, grpc.StatusCode.PERMISSION_DENIED, "ROLE_ESCALATION")
    # Within its own permissions it may.
    await stub.CreateRole(
        auth_pb2.CreateRoleRequest(
            role_id="viewer", role=auth_pb2.Role(permissions=["access.visitors.read"])
        ),
        metadata=bearer(clerk_token),
    )
    assigned = await stub.AssignRole(
        auth_pb2.AssignRoleRequest(name=target.name, role="roles/viewer"),
        metadata=bearer(clerk_token),
    )
    assert list(assigned.user.roles) == ["roles/viewer", "roles/visitor"]
    reasons = [
        r.security_event.reason
        for r in await auth.security_events()
        if r.security_event.type == auth_pb2.SECURITY_EVENT_TYPE_PERMISSION_DENIED
    ]
    assert reasons.count("ROLE_ESCALATION") == 4


async def test_assign_and_revoke_emit_events_only_on_change(auth: AuthHarness) -> None:
    admin_user, admin = await auth.admin()
    me = bearer(admin.access_token)
    user, _ = await auth.signed_in()
    stub = auth.stub()
    for _ in range(2):
        await stub.AssignRole(
            auth_pb2.AssignRoleRequest(name=user.name, role="roles/resident"), metadata=me
        )
    (assigned,) = await auth.outbox("role.assigned")
    payload = events_pb2.RoleAssigned()
    assigned.data.Unpack(payload)
    assert (payload.user, payload.role, payload.assigned_by) == (
        user.name,
        "roles/resident",
        admin_user.name,
    )
    assert list(payload.roles) == ["roles/resident", "roles/visitor"]
    for _ in range(2):
        await stub.RevokeRole(
            auth_pb2.RevokeRoleRequest(name=user.name, role="roles/resident"), metadata=me
        )
    assert len(await auth.outbox("role.revoked")) == 1
    await refused(
        stub.AssignRole(auth_pb2.AssignRoleRequest(name=user.name, role="roles/nope"), metadata=me),
        grpc.StatusCode.NOT_FOUND,
        "ROLE_NOT_FOUND",
    )
    await refused(
        stub.AssignRole(
            auth_pb2.AssignRoleRequest(name=f"users/{new_ulid()}", role="roles/resident"),
            metadata=me,
        ),
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    await refused(
        stub.AssignRole(auth_pb2.AssignRoleRequest(name=user.name, role="resident"), metadata=me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_NAME",
    )
    await stub.DeleteUser(auth_pb2.DeleteUserRequest(name=user.name), metadata=me)
    await refused(
        stub.AssignRole(
            auth_pb2.AssignRoleRequest(name=user.name, role="roles/resident"), metadata=me
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "USER_DELETED",
    )
    kinds = [r.security_event.type for r in await auth.security_events()]
    assert kinds.count(auth_pb2.SECURITY_EVENT_TYPE_ROLE_ASSIGNED) == 1
    assert kinds.count(auth_pb2.SECURITY_EVENT_TYPE_ROLE_REVOKED) == 1
