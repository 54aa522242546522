"""gRPC entrypoint of the auth service: a thin servicer, proto -> command -> handler -> proto.

No business rules and no status codes here: handlers raise domain errors, which the runtime's
error interceptor maps. What this layer does know is the transport: who the caller is (from
the interceptors), the request id and fingerprint of mutating calls, and how results look on
the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry import trace
from typing_extensions import override

from gatehouse.auth import mapping
from gatehouse.auth.domain.users import User
from gatehouse.auth.handlers import accounts, audit, passwords, roles, sessions, tokens, totp
from gatehouse.auth.handlers.common import (
    AuthDependencies,
    IssuedTokens,
    Origin,
    Reply,
    RequestIdentity,
)
from gatehouse.auth.handlers.ports import AuthUnitOfWork
from gatehouse.auth.v1 import auth_pb2, auth_pb2_grpc
from gatehouse.runtime.errors import FieldViolation, InvalidArgument
from gatehouse.runtime.identity import current_caller

Context = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)
R = TypeVar("R")

USER_AGENT_HEADER = "user-agent"
CORRELATION_HEADERS = ("x-correlation-id", "x-request-id")


class AuthApplication(Protocol):
    """What the servicer needs from the composition root."""

    @property
    def deps(self) -> AuthDependencies: ...

    def uow(self) -> AuthUnitOfWork: ...


def client_ip(peer: str | None) -> str:
    """`ipv4:10.0.0.7:53211` -> `10.0.0.7`: lockouts and audit count hosts, not connections."""
    if not peer:
        return ""
    if peer.startswith("ipv4:"):
        return peer[5:].rpartition(":")[0][:64]
    if peer.startswith("ipv6:"):
        address = peer[5:]
        if address.startswith("["):
            address = address[1:].partition("]")[0]
        return address[:64]
    if peer.startswith("unix:"):
        return "unix"
    return peer[:64]


def origin_of(context: Context) -> Origin:
    caller = current_caller()
    metadata = {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }
    claims = caller.claims
    user_id = session_id = token_id = None
    expires_at = None
    permissions: tuple[str, ...] = ()
    if claims is not None:
        if claims.subject.startswith("users/"):
            user_id = claims.subject.removeprefix("users/")
        session_id = str(claims.raw.get("sid", "")) or None
        token_id, expires_at, permissions = claims.token_id, claims.expires_at, claims.permissions
    correlation = next((metadata[h] for h in CORRELATION_HEADERS if h in metadata), "")
    if not correlation:
        span = trace.get_current_span().get_span_context()
        correlation = f"{span.trace_id:032x}" if span.is_valid else ""
    return Origin(
        user_id=user_id,
        session_id=session_id,
        token_id=token_id,
        token_expires_at=expires_at,
        permissions=permissions,
        service=caller.peer_spiffe_id or "",
        client_address=client_ip(caller.client_address),
        user_agent=metadata.get(USER_AGENT_HEADER, ""),
        correlation_id=correlation[:64],
    )


def identity_of(request: Message) -> RequestIdentity | None:
    """The request id and the request's bytes without it (a retry must match them)."""
    request_id = getattr(request, "request_id", "")
    if not request_id:
        return None
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField("request_id")
    return RequestIdentity(request_id, body.SerializeToString(deterministic=True))


def reply(present: Callable[[R], M], parse: Callable[[bytes], M]) -> Reply[R, M]:
    return Reply(present, parse)


def tokens_to_proto(issued: IssuedTokens) -> auth_pb2.Tokens:
    return auth_pb2.Tokens(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        token_type="Bearer",  # noqa: S106 - the scheme name, not a secret
        expires_in=mapping.duration(issued.expires_in),
        expire_time=mapping.timestamp(issued.expires_at),
        refresh_expire_time=mapping.timestamp(issued.refresh_expires_at),
    )


def _enum(field: str, convert: Callable[[int], R], value: int) -> R:
    try:
        return convert(value)
    except mapping.UnknownEnumValueError:
        raise InvalidArgument([FieldViolation(field, f"unknown value {value}")]) from None


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Accounts, sessions, tokens, TOTP, roles and the security audit trail."""

    def __init__(self, app: AuthApplication) -> None:
        self._app = app

    def _user(self, user: User) -> auth_pb2.User:
        return mapping.user_to_proto(user, self._app.deps.clock())

    # -- accounts --

    @override
    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        command = accounts.Register(
            email=request.email,
            password=request.password,
            display_name=request.display_name,
            origin=origin_of(context),
            identity=identity_of(request),
        )
        return await accounts.register(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda user: auth_pb2.RegisterResponse(user=self._user(user)),
                auth_pb2.RegisterResponse.FromString,
            ),
        )

    @override
    async def GetCurrentUser(
        self, request: auth_pb2.GetCurrentUserRequest, context: Context
    ) -> auth_pb2.GetCurrentUserResponse:
        current = await accounts.get_current_user(
            origin_of(context), self._app.uow(), self._app.deps
        )
        return auth_pb2.GetCurrentUserResponse(
            user=self._user(current.user), permissions=current.permissions
        )

    @override
    async def GetUser(
        self, request: auth_pb2.GetUserRequest, context: Context
    ) -> auth_pb2.GetUserResponse:
        user = await accounts.get_user(request.name, self._app.uow())
        return auth_pb2.GetUserResponse(user=self._user(user))

    @override
    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: Context
    ) -> auth_pb2.ListUsersResponse:
        command = accounts.ListUsers(
            page_size=request.page_size,
            page_token=request.page_token,
            role=request.role,
            state=_enum("state", mapping.user_state_from_proto, request.state),
            query=request.query,
            show_deleted=request.show_deleted,
            order_by=request.order_by,
        )
        page = await accounts.list_users(command, self._app.uow(), self._app.deps)
        return auth_pb2.ListUsersResponse(
            users=[self._user(user) for user in page.users], next_page_token=page.next_page_token
        )

    @override
    async def DeleteUser(
        self, request: auth_pb2.DeleteUserRequest, context: Context
    ) -> auth_pb2.DeleteUserResponse:
        command = accounts.DeleteUser(
            name=request.name, origin=origin_of(context), identity=identity_of(request)
        )
        return await accounts.delete_user(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda user: auth_pb2.DeleteUserResponse(user=self._user(user)),
                auth_pb2.DeleteUserResponse.FromString,
            ),
        )

    # -- sessions --

    @override
    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        factor = request.WhichOneof("second_factor")
        command = sessions.Login(
            origin=origin_of(context),
            email=request.email,
            password=request.password,
            challenge_token=request.challenge_token,
            totp_code=request.totp_code if factor == "totp_code" else None,
            recovery_code=request.recovery_code if factor == "recovery_code" else None,
            identity=identity_of(request),
        )
        return await sessions.login(
            command,
            self._app.uow(),
            self._app.deps,
            reply(_login_response, auth_pb2.LoginResponse.FromString),
        )

    @override
    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: Context
    ) -> auth_pb2.RefreshTokenResponse:
        command = sessions.RefreshTokens(
            refresh_token=request.refresh_token,
            origin=origin_of(context),
            identity=identity_of(request),
        )
        return await sessions.refresh_tokens(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda issued: auth_pb2.RefreshTokenResponse(tokens=tokens_to_proto(issued)),
                auth_pb2.RefreshTokenResponse.FromString,
            ),
        )

    @override
    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        command = sessions.Logout(
            origin=origin_of(context),
            refresh_token=request.refresh_token,
            all_sessions=request.all_sessions,
            identity=identity_of(request),
        )
        return await sessions.logout(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda count: auth_pb2.LogoutResponse(revoked_session_count=count),
                auth_pb2.LogoutResponse.FromString,
            ),
        )

    # -- passwords --

    @override
    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: Context
    ) -> auth_pb2.ChangePasswordResponse:
        command = passwords.ChangePassword(
            current_password=request.current_password,
            new_password=request.new_password,
            totp_code=request.totp_code,
            origin=origin_of(context),
            identity=identity_of(request),
        )
        return await passwords.change_password(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda count: auth_pb2.ChangePasswordResponse(revoked_session_count=count),
                auth_pb2.ChangePasswordResponse.FromString,
            ),
        )

    @override
    async def RequestPasswordReset(
        self, request: auth_pb2.RequestPasswordResetRequest, context: Context
    ) -> auth_pb2.RequestPasswordResetResponse:
        command = passwords.RequestPasswordReset(
            email=request.email, origin=origin_of(context), identity=identity_of(request)
        )
        return await passwords.request_password_reset(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda _: auth_pb2.RequestPasswordResetResponse(),
                auth_pb2.RequestPasswordResetResponse.FromString,
            ),
        )

    @override
    async def ResetPassword(
        self, request: auth_pb2.ResetPasswordRequest, context: Context
    ) -> auth_pb2.ResetPasswordResponse:
        command = passwords.ResetPassword(
            reset_token=request.reset_token,
            new_password=request.new_password,
            origin=origin_of(context),
            identity=identity_of(request),
        )
        return await passwords.reset_password(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda user: auth_pb2.ResetPasswordResponse(user=user.name),
                auth_pb2.ResetPasswordResponse.FromString,
            ),
        )

    # -- TOTP --

    @override
    async def EnrollTotp(
        self, request: auth_pb2.EnrollTotpRequest, context: Context
    ) -> auth_pb2.EnrollTotpResponse:
        command = totp.EnrollTotp(
            password=request.password, origin=origin_of(context), identity=identity_of(request)
        )
        return await totp.enroll_totp(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda enrollment: auth_pb2.EnrollTotpResponse(
                    otpauth_uri=enrollment.otpauth_uri,
                    secret=enrollment.secret,
                    expire_time=mapping.timestamp(enrollment.expires_at),
                ),
                auth_pb2.EnrollTotpResponse.FromString,
            ),
        )

    @override
    async def ConfirmTotp(
        self, request: auth_pb2.ConfirmTotpRequest, context: Context
    ) -> auth_pb2.ConfirmTotpResponse:
        command = totp.ConfirmTotp(
            totp_code=request.totp_code, origin=origin_of(context), identity=identity_of(request)
        )
        return await totp.confirm_totp(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda done: auth_pb2.ConfirmTotpResponse(
                    recovery_codes=done.recovery_codes, user=self._user(done.user)
                ),
                auth_pb2.ConfirmTotpResponse.FromString,
            ),
        )

    @override
    async def DisableTotp(
        self, request: auth_pb2.DisableTotpRequest, context: Context
    ) -> auth_pb2.DisableTotpResponse:
        factor = request.WhichOneof("second_factor")
        command = totp.DisableTotp(
            name=request.name,
            origin=origin_of(context),
            password=request.password,
            totp_code=request.totp_code if factor == "totp_code" else None,
            recovery_code=request.recovery_code if factor == "recovery_code" else None,
            identity=identity_of(request),
        )
        return await totp.disable_totp(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda user: auth_pb2.DisableTotpResponse(user=self._user(user)),
                auth_pb2.DisableTotpResponse.FromString,
            ),
        )

    # -- roles --

    @override
    async def CreateRole(
        self, request: auth_pb2.CreateRoleRequest, context: Context
    ) -> auth_pb2.CreateRoleResponse:
        command = roles.CreateRole(
            role_id=request.role_id,
            display_name=request.role.display_name,
            description=request.role.description,
            permissions=tuple(request.role.permissions),
            origin=origin_of(context),
            identity=identity_of(request),
        )
        return await roles.create_role(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda role: auth_pb2.CreateRoleResponse(role=mapping.role_to_proto(role)),
                auth_pb2.CreateRoleResponse.FromString,
            ),
        )

    @override
    async def ListRoles(
        self, request: auth_pb2.ListRolesRequest, context: Context
    ) -> auth_pb2.ListRolesResponse:
        page = await roles.list_roles(
            request.page_size, request.page_token, self._app.uow(), self._app.deps
        )
        return auth_pb2.ListRolesResponse(
            roles=[mapping.role_to_proto(role) for role in page.roles],
            next_page_token=page.next_page_token,
        )

    @override
    async def AssignRole(
        self, request: auth_pb2.AssignRoleRequest, context: Context
    ) -> auth_pb2.AssignRoleResponse:
        command = roles.ChangeRole(
            name=request.name,
            role=request.role,
            origin=origin_of(context),
            identity=identity_of(request),
        )
        return await roles.assign_role(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda user: auth_pb2.AssignRoleResponse(user=self._user(user)),
                auth_pb2.AssignRoleResponse.FromString,
            ),
        )

    @override
    async def RevokeRole(
        self, request: auth_pb2.RevokeRoleRequest, context: Context
    ) -> auth_pb2.RevokeRoleResponse:
        command = roles.ChangeRole(
            name=request.name,
            role=request.role,
            origin=origin_of(context),
            identity=identity_of(request),
        )
        return await roles.revoke_role(
            command,
            self._app.uow(),
            self._app.deps,
            reply(
                lambda user: auth_pb2.RevokeRoleResponse(user=self._user(user)),
                auth_pb2.RevokeRoleResponse.FromString,
            ),
        )

    # -- audit and tokens --

    @override
    async def ListSecurityEvents(
        self, request: auth_pb2.ListSecurityEventsRequest, context: Context
    ) -> auth_pb2.ListSecurityEventsResponse:
        kinds = {_enum("types", mapping.event_type_from_proto, value) for value in request.types}
        window = request.time_range
        query = audit.ListSecurityEvents(
            page_size=request.page_size,
            page_token=request.page_token,
            user=request.user,
            types=frozenset(kind for kind in kinds if kind is not None),
            outcome=_enum("outcome", mapping.outcome_from_proto, request.outcome),
            min_severity=_enum("min_severity", mapping.severity_from_proto, request.min_severity),
            start_time=(
                mapping.from_timestamp(window.start_time) if window.HasField("start_time") else None
            ),
            end_time=(
                mapping.from_timestamp(window.end_time) if window.HasField("end_time") else None
            ),
            client_address=request.client_address,
            order_by=request.order_by,
        )
        page = await audit.list_security_events(query, self._app.uow(), self._app.deps)
        return auth_pb2.ListSecurityEventsResponse(
            security_events=[mapping.security_event_to_proto(event) for event in page.events],
            next_page_token=page.next_page_token,
        )

    @override
    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        keys = tokens.get_jwks(self._app.deps)
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.JsonWebKey(**key) for key in keys])

    @override
    async def IntrospectToken(
        self, request: auth_pb2.IntrospectTokenRequest, context: Context
    ) -> auth_pb2.IntrospectTokenResponse:
        result = await tokens.introspect_token(
            request.token, origin_of(context), self._app.uow(), self._app.deps
        )
        if not result.active:
            assert result.inactive_reason is not None
            return auth_pb2.IntrospectTokenResponse(
                active=False, inactive_reason=mapping.inactive_reason(result.inactive_reason)
            )
        return auth_pb2.IntrospectTokenResponse(
            active=True,
            subject=result.subject,
            roles=result.roles,
            permissions=result.permissions,
            issue_time=mapping.maybe_timestamp(result.issued_at),
            expire_time=mapping.maybe_timestamp(result.expires_at),
            token_id=result.token_id,
            session_id=result.session_id,
        )


def _login_response(result: sessions.LoginResult) -> auth_pb2.LoginResponse:
    if isinstance(result, IssuedTokens):
        return auth_pb2.LoginResponse(tokens=tokens_to_proto(result), user=result.user)
    return auth_pb2.LoginResponse(
        challenge=auth_pb2.SecondFactorChallenge(
            challenge_token=result.token,
            expire_time=mapping.timestamp(result.expires_at),
            methods=[mapping.second_factor(method) for method in result.methods],
        )
    )
