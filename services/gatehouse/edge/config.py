"""The Envoy bootstrap for the edge, built as plain data from the catalog, contracts and settings.

Nothing here is hand-kept per RPC: routes, timeouts, retries, token requirements and rate
limits are derived from the service descriptors (`gatehouse.edge.contracts`), certificates and
ports from `Settings`. `envoy/README.md` explains each piece and why the filters are in this
order; `envoy/edge.reference.yaml` is this module's output for the default settings.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from gatehouse.edge.contracts import EdgeMethod, edge_methods, service_descriptor
from gatehouse.runtime.config import SERVICE_NAMES, ServiceName, Settings
from gatehouse.runtime.tls import CertificatePaths, spiffe_id

Config = dict[str, Any]

EDGE_IDENTITY = "envoy"
OPENAPI_PATH = "/openapi.json"
HEALTHZ_PATH = "/healthz"
JWKS_PATH = "/.well-known/jwks.json"
# Envoy's own name for filters it looks up by name (per-route configs are keyed by these).
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
RATE_LIMIT = "envoy.filters.http.local_ratelimit"
JWT_AUTHN = "envoy.filters.http.jwt_authn"
CORS = "envoy.filters.http.cors"
HEADER_MUTATION = "envoy.filters.http.header_mutation"
JWT_REQUIREMENT = "access_token"
# Where jwt_authn fetches the JWKS from: an internal listener (inside Envoy, no port, no socket)
# that transcodes `GET /.well-known/jwks.json` to AuthService.GetJwks, and the cluster to it.
JWKS_LISTENER = "edge_jwks"
JWKS_CLUSTER = "edge_jwks"
# Where each service's replicas listen on their host: one port, or one per replica.
UpstreamPorts = Mapping[ServiceName, int | Sequence[int]]
# The OpenTelemetry collector the edge exports its spans to, when `otlp_endpoint` is set.
OTLP_CLUSTER = "otel_collector"
# Where Debian-family images keep the public CAs (for an https collector without otlp_ca_file).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# A cluster without hosts: where nothing should ever be sent.
BLACKHOLE = "blackhole"
# The optional Prometheus listener (`stats_port`) and the admin interface behind it.
STATS_LISTENER = "edge_stats"
STATS_PATH = "/stats/prometheus"
ADMIN_CLUSTER = "edge_admin"
# The transcoder leaves the request's original path here; only transcoded requests have it.
ORIGINAL_PATH_HEADER = "x-envoy-original-path"
# gRPC framing and server metadata that mean nothing to a REST client (ENVOY-NOTES: they leak).
GRPC_RESPONSE_HEADERS = (
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "grpc-accept-encoding",
)
# HTTP status of a reply Envoy makes itself -> the google.rpc.Code a REST caller reads in it.
LOCAL_REPLY_CODES = {
    400: 3,  # INVALID_ARGUMENT: unknown query parameter, malformed JSON
    401: 16,  # UNAUTHENTICATED: missing or bad token (jwt_authn)
    403: 7,  # PERMISSION_DENIED: token for another audience
    404: 5,  # NOT_FOUND: no RPC at this path
    413: 3,  # INVALID_ARGUMENT: body over edge_max_request_bytes
    429: 8,  # RESOURCE_EXHAUSTED: rate limited
    503: 14,  # UNAVAILABLE: the service is down or unhealthy
    504: 4,  # DEADLINE_EXCEEDED: the upstream timeout passed
}
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
}
CORS_ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "x-request-id",
    "traceparent",
    "tracestate",
    "grpc-timeout",
)
CORS_EXPOSE_HEADERS = ("x-request-id", "retry-after", "grpc-status", "grpc-message")
# The retry-on conditions that mean "the request did not run" or "try again" for a method
# that is safe to repeat; only such methods get a retry policy at all.
IDEMPOTENT_RETRY_ON = "unavailable,connect-failure,refused-stream,reset"
HEALTH_CHECK = {"interval": "2s", "no_traffic_interval": "2s", "timeout": "1s"}


@dataclass(frozen=True, slots=True)
class EdgeFiles:
    """The files the bootstrap refers to. Paths are written into the config as given."""

    certificates: Path
    descriptor_set: Path
    openapi: Path
    jwks: Path | None = None

    @property
    def envoy(self) -> CertificatePaths:
        return CertificatePaths.for_name(self.certificates, EDGE_IDENTITY)


def build_config(
    settings: Settings,
    files: EdgeFiles,
    *,
    upstream_ports: UpstreamPorts | None = None,
    services: tuple[ServiceName, ...] = SERVICE_NAMES,
    upstream_hosts: Mapping[ServiceName, str] | None = None,
    stats_port: int | None = None,
) -> Config:
    """The whole Envoy bootstrap. `upstream_ports` defaults to the configured service ports; a
    service given several ports has that many replicas on its host, balanced per request.

    `upstream_hosts` puts a service somewhere other than `settings.host` (in Kubernetes, its
    headless Service's DNS name, which resolves to every ready replica). `stats_port` adds a
    listener on `edge_host` that serves only Envoy's `/stats/prometheus`, so Prometheus can
    scrape the edge without reaching the admin interface, which stays on loopback.
    """
    ports: dict[ServiceName, tuple[int, ...]] = {
        name: (settings.port_of(name),) for name in services
    } | {
        name: (port,) if isinstance(port, int) else tuple(port)
        for name, port in (upstream_ports or {}).items()
    }
    default_host = _upstream_host(settings.host)
    hosts = {name: default_host for name in services} | dict(upstream_hosts or {})
    if stats_port is not None and settings.edge_admin_port == 0:
        raise ValueError("stats_port needs a fixed edge_admin_port (the stats are read from it)")
    methods = tuple(m for m in edge_methods(services) if m.exposed)
    remote_jwks = _remote_jwks(settings, files)
    if remote_jwks and "auth" not in services:
        raise ValueError(
            "edge_jwt_enabled needs the auth service behind the edge (its JWKS) or edge_jwks_file"
        )
    bootstrap: Config = {
        "node": {"id": "gatehouse-edge", "cluster": "gatehouse-edge"},
        "admin": {
            # Admin can stop Envoy and dump config: loopback only, whatever edge_host says.
            "address": _address("127.0.0.1", settings.edge_admin_port),
        },
        "static_resources": {
            "listeners": [
                _listener(settings, files, services, methods),
                *([_jwks_listener(settings, files)] if remote_jwks else []),
                *([_stats_listener(settings, stats_port)] if stats_port is not None else []),
            ],
            "clusters": [
                *(_cluster(name, hosts[name], ports[name], files) for name in services),
                *([_jwks_cluster()] if remote_jwks else []),
                *([_admin_cluster(settings)] if stats_port is not None else []),
                *([_otlp_cluster(settings)] if settings.otlp_endpoint else []),
                {"name": BLACKHOLE, "type": "STATIC", "connect_timeout": "1s"},
            ],
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    # Bounds what downstream clients can hold open in total.
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors"
                        ".downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10000,
                    },
                }
            ]
        },
    }
    if remote_jwks:
        # Internal listeners (the JWKS fetch, above) exist only with this extension loaded.
        bootstrap["bootstrap_extensions"] = [
            {
                "name": "envoy.bootstrap.internal_listener",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3"
                    ".InternalListener"
                },
            }
        ]
    return bootstrap


REFERENCE_HEADER = """\
# The edge's Envoy bootstrap for the default settings, as `gatehouse edge config --reference`
# prints it. Generated by services/gatehouse/edge/config.py: do not edit; envoy/README.md
# explains each part. `gatehouse up` writes the real one to .gatehouse/edge/envoy.yaml.
"""


def reference_config() -> str:
    """The bootstrap for default settings with repository-relative paths (envoy/)."""
    # model_construct: defaults only, whatever GATEHOUSE_* variables this shell has.
    settings = Settings.model_construct()
    files = EdgeFiles(
        certificates=Path(".gatehouse/certs"),
        descriptor_set=Path(".gatehouse/edge/gatehouse-edge.binpb"),
        openapi=Path("envoy/openapi.json"),
    )
    return REFERENCE_HEADER + render(build_config(settings, files))


def render(config: Config, fmt: Literal["yaml", "json"] = "yaml") -> str:
    if fmt == "json":
        return json.dumps(config, indent=2) + "\n"
    dumped: str = yaml.safe_dump(config, sort_keys=False, width=100)
    return dumped


def _listener(
    settings: Settings,
    files: EdgeFiles,
    services: tuple[ServiceName, ...],
    methods: tuple[EdgeMethod, ...],
) -> Config:
    return {
        "name": "edge_https",
        "address": _address(settings.edge_host, settings.edge_port),
        "filter_chains": [
            {
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                        ".DownstreamTlsContext",
                        # Optional by default: a client certificate, when presented, must
                        # still chain to our CA (the validation context below).
                        "require_client_certificate": settings.edge_require_client_certs,
                        "common_tls_context": {
                            "alpn_protocols": ["h2", "http/1.1"],
                            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                            "tls_certificates": [_certificate(files.envoy)],
                            "validation_context": {"trusted_ca": {"filename": str(files.envoy.ca)}},
                        },
                    },
                },
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": _connection_manager(settings, files, services, methods),
                    }
                ],
            }
        ],
    }


def _connection_manager(
    settings: Settings,
    files: EdgeFiles,
    services: tuple[ServiceName, ...],
    methods: tuple[EdgeMethod, ...],
) -> Config:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        # We are the edge: the client address is the peer, never a forwarded header.
        "use_remote_address": True,
        "server_name": "gatehouse-edge",
        "normalize_path": True,
        "merge_slashes": True,
        # Resource names never contain an escaped slash; one is an attempt to confuse routing.
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "common_http_protocol_options": {
            "idle_timeout": "3600s",
            "headers_with_underscores_action": "DROP_HEADER",
        },
        "http2_protocol_options": {"max_concurrent_streams": 1024},
        "request_headers_timeout": "10s",
        # Streams send heartbeats well within this; a stream silent for longer is dead.
        "stream_idle_timeout": "300s",
        "max_request_headers_kb": 64,
        # Services see which client certificate (if any) reached the edge, never a forged one.
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True},
        "tracing": _tracing(settings),
        "access_log": [_access_log()],
        "local_reply_config": _local_replies(),
        "route_config": _routes(settings, files, methods),
        "http_filters": _http_filters(settings, files, services, methods),
    }


def _tracing(settings: Settings) -> Config:
    """A span per request, its context passed to the services (W3C `traceparent`), so one
    trace runs from the edge through every service and across the bus. Exported over OTLP/gRPC
    to `otlp_endpoint` like the services' spans, sampled at the same ratio."""
    exporter: Config
    if settings.otlp_endpoint:
        exporter = {"grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "2s"}}
    else:
        # Envoy insists on an exporter; without a collector this one leads to a cluster with
        # no hosts, so spans are dropped inside Envoy (the trace ids still reach the services
        # and the access log).
        exporter = {
            "http_service": {
                "http_uri": {
                    "uri": "http://blackhole/v1/traces",
                    "cluster": BLACKHOLE,
                    "timeout": "1s",
                }
            }
        }
    return {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "service_name": "gatehouse-edge",
                **exporter,
            },
        },
        "random_sampling": {"value": settings.trace_sample_ratio * 100},
    }


def _otlp_cluster(settings: Settings) -> Config:
    """Where the edge's spans go: the collector of `otlp_endpoint` over HTTP/2 (gRPC)."""
    scheme, _, address = (settings.otlp_endpoint or "").partition("://")
    host, _, port = address.rpartition(":")
    if scheme not in ("http", "https") or not host or not port.isdigit():
        raise ValueError(
            "otlp_endpoint must be http://host:port or https://host:port, "
            f"got {settings.otlp_endpoint!r}"
        )
    host = host.strip("[]")
    cluster: Config = {
        "name": OTLP_CLUSTER,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": OTLP_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, int(port))}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    if scheme == "https":
        roots = settings.otlp_ca_file or Path(SYSTEM_CA_BUNDLE)
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                ".UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {"trusted_ca": {"filename": str(roots)}},
                },
            },
        }
    return cluster


def _http_filters(
    settings: Settings,
    files: EdgeFiles,
    services: tuple[ServiceName, ...],
    methods: tuple[EdgeMethod, ...],
) -> list[Config]:
    filters: list[Config] = [
        {
            # Answered by Envoy itself: is the edge up and not draining.
            "name": "envoy.filters.http.health_check",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3"
                ".HealthCheck",
                "pass_through_mode": False,
                "headers": [{"name": ":path", "string_match": {"exact": HEALTHZ_PATH}}],
            },
        }
    ]
    if settings.edge_cors_origins:
        # Before the transcoder, which would refuse a preflight OPTIONS as an unknown method.
        filters.append(
            {
                "name": CORS,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
                },
            }
        )
    filters.append(
        {
            # Before the transcoder, so it edits responses after the transcoder has turned
            # them into HTTP; the edits themselves are per route (the `rest` route).
            "name": HEADER_MUTATION,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3"
                ".HeaderMutation",
                "mutations": {},
            },
        }
    )
    filters.append({"name": TRANSCODER, "typed_config": _transcoder(settings, files, services)})
    # After the transcoder: REST and native gRPC requests both carry the gRPC path here, so one
    # set of limits and token rules covers both, and rejections are gRPC replies that the
    # transcoder turns into HTTP status + JSON for REST callers.
    rate_limit = _rate_limit(settings, methods)
    if rate_limit is not None:
        filters.append({"name": RATE_LIMIT, "typed_config": rate_limit})
    if settings.edge_jwt_enabled:
        filters.append({"name": JWT_AUTHN, "typed_config": _jwt_authn(settings, files)})
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                # Envoy's x-envoy-* response headers describe our internals.
                "suppress_envoy_headers": True,
            },
        }
    )
    return filters


def _transcoder(settings: Settings, files: EdgeFiles, services: tuple[ServiceName, ...]) -> Config:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3"
        ".GrpcJsonTranscoder",
        "proto_descriptor": str(files.descriptor_set),
        "services": [service_descriptor(name).full_name for name in services],
        "print_options": {
            "add_whitespace": False,
            # Zero values are printed, so a client sees every field of the contract.
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            # lowerCamelCase, as the proto3 JSON mapping says; either form is accepted on input.
            "preserve_proto_field_names": False,
            # Server streams over REST: one JSON object per line (docs/rest-streams.md).
            "stream_newline_delimited": True,
        },
        "convert_grpc_status": True,
        "request_validation_options": {
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
        },
        "max_request_body_size": settings.edge_max_request_bytes,
    }


def _rate_limit(settings: Settings, methods: tuple[EdgeMethod, ...]) -> Config | None:
    """One local rate limit for everything: the default bucket is the global limit, and each
    sensitive RPC has a bucket per client address, keyed on the (gRPC) path."""
    sensitive = [m for m in methods if m.rate_limited]
    per_minute = settings.edge_sensitive_rate_per_minute
    per_second = settings.edge_global_rate_per_second
    if not per_second and not (sensitive and per_minute):
        return None
    always_on = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    config: Config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3"
        ".LocalRateLimit",
        "stat_prefix": "edge_rate_limit",
        "filter_enabled": {"runtime_key": "edge.rate_limit.enabled", **always_on},
        "filter_enforced": {"runtime_key": "edge.rate_limit.enforced", **always_on},
        # gRPC callers see RESOURCE_EXHAUSTED (Envoy's default would be UNAVAILABLE, which
        # clients retry at once); the transcoder maps it to 429 for REST callers.
        "rate_limited_as_resource_exhausted": True,
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
    }
    retry_after = 1
    if per_second:
        config["token_bucket"] = {
            "max_tokens": per_second,
            "tokens_per_fill": per_second,
            "fill_interval": "1s",
        }
    else:
        # A bucket is required; this one never runs dry in practice.
        config["token_bucket"] = {
            "max_tokens": 1_000_000,
            "tokens_per_fill": 1_000_000,
            "fill_interval": "1s",
        }
    if sensitive and per_minute:
        # One token back every 60/rate seconds, bursts up to the rate: a client that waits
        # Retry-After seconds gets exactly one more attempt.
        refill_ms = max(50, math.ceil(60_000 / per_minute))
        retry_after = max(retry_after, math.ceil(refill_ms / 1000))
        bucket = {
            "max_tokens": per_minute,
            "tokens_per_fill": 1,
            "fill_interval": f"{refill_ms / 1000:g}s",
        }
        config["descriptors"] = [
            {
                "entries": [
                    {"key": "rpc", "value": method.grpc_path},
                    # No value: one bucket per distinct client address.
                    {"key": "remote_address"},
                ],
                "token_bucket": bucket,
            }
            for method in sensitive
        ]
        config["rate_limits"] = [
            {
                "actions": [
                    {"request_headers": {"header_name": ":path", "descriptor_key": "rpc"}},
                    {"remote_address": {}},
                ]
            }
        ]
        # Bounds memory: beyond this many client addresses the least recent bucket is reused.
        config["max_dynamic_descriptors"] = 10_000
    config["response_headers_to_add"] = [
        {
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            "header": {"key": "retry-after", "value": str(retry_after)},
        }
    ]
    return config


def _jwt_authn(settings: Settings, files: EdgeFiles) -> Config:
    provider: Config = {
        "issuer": settings.jwt_issuer,
        "audiences": [settings.jwt_audience],
        # Services verify the token again (ARCHITECTURE §6): keep it on the request.
        "forward": True,
        "forward_payload_header": "x-jwt-payload",
        "clock_skew_seconds": 30,
    }
    if files.jwks is not None:
        provider["local_jwks"] = {"filename": str(files.jwks)}
    else:
        # The JWKS that auth serves (GetJwks), fetched through Envoy itself: an internal
        # listener transcodes the GET to the RPC, so no port (the edge's may be 0) is involved.
        provider["remote_jwks"] = {
            "http_uri": {
                "uri": f"http://jwks.edge.internal{JWKS_PATH}",
                "cluster": JWKS_CLUSTER,
                "timeout": "2s",
            },
            "cache_duration": "300s",
            # Fetched at start and in the background before the cache expires; a failed fetch
            # is retried after 1 s (requests with a token get 401 until one succeeds).
            "async_fetch": {"fast_listener": True, "failed_refetch_duration": "1s"},
            "retry_policy": {
                "num_retries": 3,
                "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"},
            },
        }
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"gatehouse": provider},
        "requirement_map": {JWT_REQUIREMENT: {"provider_name": "gatehouse"}},
    }


def _remote_jwks(settings: Settings, files: EdgeFiles) -> bool:
    return settings.edge_jwt_enabled and files.jwks is None


def _jwks_listener(settings: Settings, files: EdgeFiles) -> Config:
    """Where jwt_authn fetches the JWKS: an internal listener (in Envoy's memory, reachable only
    through the `edge_jwks` cluster) with the transcoder for AuthService and a single route, to
    GetJwks. Plain HTTP: the bytes never leave the process; Envoy -> auth is mTLS as always."""
    transcoder = _transcoder(settings, files, ("auth",))
    # Exactly the JWK Set document: no empty `y` of an OKP key.
    transcoder["print_options"] = {"add_whitespace": False, "always_print_primitive_fields": False}
    get_jwks = next(
        m for m in edge_methods(("auth",)) if m.full_name.endswith("AuthService.GetJwks")
    )
    manager: Config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": JWKS_LISTENER,
        "codec_type": "AUTO",
        "route_config": {
            "name": JWKS_LISTENER,
            "virtual_hosts": [
                {
                    "name": JWKS_LISTENER,
                    "domains": ["*"],
                    "routes": [
                        {
                            "name": get_jwks.full_name,
                            "match": {"path": get_jwks.grpc_path, "grpc": {}},
                            "route": {"cluster": get_jwks.service, "timeout": "2s"},
                        },
                        {
                            "name": "not_found",
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 404},
                        },
                    ],
                }
            ],
        },
        "http_filters": [
            {"name": TRANSCODER, "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return {
        "name": JWKS_LISTENER,
        "internal_listener": {},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def _jwks_cluster() -> Config:
    """The internal JWKS listener as an upstream (no address, no TLS: it is inside Envoy)."""
    return {
        "name": JWKS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": JWKS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "envoy_internal_address": {
                                        "server_listener_name": JWKS_LISTENER
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def _routes(settings: Settings, files: EdgeFiles, methods: tuple[EdgeMethod, ...]) -> Config:
    routes: list[Config] = [
        {
            "name": "openapi",
            "match": {"path": OPENAPI_PATH, "headers": [_method_is("GET")]},
            "direct_response": {"status": 200, "body": {"filename": str(files.openapi)}},
            "response_headers_to_add": [_header("content-type", "application/json")],
            "typed_per_filter_config": _disabled(TRANSCODER) | _jwt_exempt(settings),
        }
    ]
    routes.extend(_method_route(settings, method) for method in methods)
    routes += [
        {
            # Unknown gRPC methods (health, reflection, internal RPCs): 404, which Envoy tells
            # a gRPC client as UNIMPLEMENTED.
            "name": "grpc_not_found",
            "match": {"prefix": "/", "grpc": {}},
            "direct_response": {"status": 404, "body": {"inline_string": "unknown method"}},
            "typed_per_filter_config": _jwt_exempt(settings),
        },
        {
            # Every REST request matches this route before the transcoder rewrites its path to
            # the RPC's. Filters that run before the transcoder keep this route for the whole
            # request, so the response header clean-up for REST callers hangs here; CORS reads
            # the virtual host's policy through it.
            "name": "rest",
            "match": {"prefix": "/"},
            # Never forwarded: the transcoder rewrites a known REST call and refuses the rest.
            # A route action (not a direct response) because CORS ignores direct responses.
            "route": {"cluster": BLACKHOLE},
            "typed_per_filter_config": {
                HEADER_MUTATION: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation"
                    ".v3.HeaderMutationPerRoute",
                    "mutations": {
                        "response_mutations": [{"remove": name} for name in GRPC_RESPONSE_HEADERS]
                    },
                },
                **_jwt_exempt(settings),
            },
        },
    ]
    virtual_host: Config = {"name": "gatehouse", "domains": ["*"], "routes": routes}
    if settings.edge_cors_origins:
        virtual_host["typed_per_filter_config"] = {CORS: _cors_policy(settings.edge_cors_origins)}
    return {
        "name": "edge",
        "virtual_hosts": [virtual_host],
        "response_headers_to_add": [_header(k, v) for k, v in SECURITY_HEADERS.items()],
        # The OpenAPI document is served from a file as a direct response.
        "max_direct_response_body_size_bytes": 4 * 1024 * 1024,
    }


def _method_route(settings: Settings, method: EdgeMethod) -> Config:
    # Native gRPC requests, and REST requests once the transcoder has rewritten them.
    match: Config = {"path": method.grpc_path, "grpc": {}}
    action: Config = {"cluster": method.service}
    if method.streaming:
        # A live feed may run for hours; only stream_idle_timeout (heartbeats) ends it.
        action["timeout"] = "0s"
    else:
        timeout = f"{settings.edge_request_timeout_seconds:g}s"
        action["timeout"] = timeout
        # A gRPC caller's shorter deadline (grpc-timeout) wins; a longer one is capped.
        action["max_stream_duration"] = {"grpc_timeout_header_max": timeout}
    if method.retryable:
        action["retry_policy"] = {
            "retry_on": IDEMPOTENT_RETRY_ON,
            "num_retries": 2,
            "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"},
        }
    route: Config = {
        "name": method.full_name,
        "match": match,
        "route": action,
    }
    if settings.edge_jwt_enabled:
        route["typed_per_filter_config"] = (
            _jwt_requirement() if method.needs_token else _jwt_exempt(settings)
        )
    return route


def _jwt_requirement() -> Config:
    return {
        JWT_AUTHN: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3"
            ".PerRouteConfig",
            "requirement_name": JWT_REQUIREMENT,
        }
    }


def _jwt_exempt(settings: Settings) -> Config:
    """jwt_authn's own per-route switch, read when the filter runs, i.e. after the transcoder
    picked the RPC's route. (A route's generic `disabled` is read once, on the route the
    request matched first, which for REST is never the RPC's route.)"""
    if not settings.edge_jwt_enabled:
        return {}
    return {
        JWT_AUTHN: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3"
            ".PerRouteConfig",
            "disabled": True,
        }
    }


def _local_replies() -> Config:
    """Envoy's own error replies to REST callers as google.rpc.Status JSON, like the services'.

    gRPC callers are left alone: Envoy puts the status into grpc-status/grpc-message for them.
    A REST request still counts once the transcoder has rewritten it to look like gRPC, which
    the original-path header tells.
    """
    rest_request = {
        "or_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
                {
                    "header_filter": {
                        "header": {"name": ORIGINAL_PATH_HEADER, "present_match": True}
                    }
                },
            ]
        }
    }
    mappers = []
    for http_status, op, grpc_code in (
        *((status, "EQ", code) for status, code in LOCAL_REPLY_CODES.items()),
        (400, "GE", 2),  # anything else that went wrong: UNKNOWN
    ):
        status_filter = {
            "status_code_filter": {
                "comparison": {
                    "op": op,
                    "value": {"default_value": http_status, "runtime_key": "edge.local_reply"},
                }
            }
        }
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [status_filter, rest_request]}},
                "body_format_override": {
                    "json_format": {"code": grpc_code, "message": "%LOCAL_REPLY_BODY%"},
                },
            }
        )
    return {"mappers": mappers}


def _cors_policy(origins: Iterable[str]) -> Config:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": origin} for origin in origins],
        "allow_methods": "GET, POST, PATCH, DELETE, OPTIONS",
        "allow_headers": ", ".join(CORS_ALLOW_HEADERS),
        "expose_headers": ", ".join(CORS_EXPOSE_HEADERS),
        "max_age": "600",
    }


def _cluster(name: ServiceName, host: str, ports: Sequence[int], files: EdgeFiles) -> Config:
    return {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _address(host, port)}} for port in ports
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Matches the services' keepalive policy (runtime/server.py).
                        "connection_keepalive": {"interval": "30s", "timeout": "10s"}
                    }
                },
            }
        },
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                ".UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [_certificate(files.envoy)],
                    "validation_context": {
                        "trusted_ca": {"filename": str(files.envoy.ca)},
                        # The CA signs every identity; only this service's may answer here.
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"exact": spiffe_id(name)}}
                        ],
                    },
                },
            },
        },
        "health_checks": [
            {
                **HEALTH_CHECK,
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": service_descriptor(name).full_name},
            }
        ],
        # With one host per service, panic mode would keep sending to a dead host; fail fast.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "outlier_detection": {
            # Only failures Envoy sees itself (connect, reset, timeout) eject a host. gRPC
            # statuses are answers, not faults: UNIMPLEMENTED or UNAVAILABLE from a healthy
            # service must not take it out of rotation.
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 3,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "interval": "5s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 100,
        },
    }


def _stats_listener(settings: Settings, port: int) -> Config:
    """Plain HTTP, one route: `GET /stats/prometheus` to the admin interface. Anything else
    (config dumps, `/quitquitquit`, log levels) is 404 here and only reachable on loopback."""
    return {
        "name": STATS_LISTENER,
        "address": _address(settings.edge_host, port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network"
                            ".http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "edge_stats",
                            "codec_type": "AUTO",
                            "route_config": {
                                "name": STATS_LISTENER,
                                "virtual_hosts": [
                                    {
                                        "name": STATS_LISTENER,
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {
                                                    "path": STATS_PATH,
                                                    "headers": [_method_is("GET")],
                                                },
                                                "route": {"cluster": ADMIN_CLUSTER},
                                            }
                                        ],
                                    }
                                ],
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters"
                                        ".http.router.v3.Router",
                                        "suppress_envoy_headers": True,
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _admin_cluster(settings: Settings) -> Config:
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _address("127.0.0.1", settings.edge_admin_port)}}
                    ]
                }
            ],
        },
    }


def _access_log() -> Config:
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": "/dev/stdout",
            "log_format": {
                "json_format": {
                    "time": "%START_TIME%",
                    "level": "INFO",
                    "logger": "gatehouse.edge.access",
                    "service": "edge",
                    "trace_id": "%TRACE_ID%",
                    "request_id": "%REQ(X-REQUEST-ID)%",
                    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
                    # What the client asked for; the rewritten gRPC path is `rpc`.
                    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                    "rpc": "%REQ(:PATH)%",
                    "protocol": "%PROTOCOL%",
                    "status": "%RESPONSE_CODE%",
                    "grpc_status": "%GRPC_STATUS%",
                    "flags": "%RESPONSE_FLAGS%",
                    "duration_ms": "%DURATION%",
                    "bytes_in": "%BYTES_RECEIVED%",
                    "bytes_out": "%BYTES_SENT%",
                    "upstream": "%UPSTREAM_CLUSTER%",
                    "client_address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                    "client_identity": "%DOWNSTREAM_PEER_URI_SAN%",
                    "user_agent": "%REQ(USER-AGENT)%",
                }
            },
        },
    }


def _certificate(paths: CertificatePaths) -> Config:
    return {
        "certificate_chain": {"filename": str(paths.certificate)},
        "private_key": {"filename": str(paths.private_key)},
    }


def _address(host: str, port: int) -> Config:
    return {"socket_address": {"address": host, "port_value": port}}


def _header(key: str, value: str) -> Config:
    return {"append_action": "OVERWRITE_IF_EXISTS_OR_ADD", "header": {"key": key, "value": value}}


def _method_is(verb: str) -> Config:
    return {"name": ":method", "string_match": {"exact": verb}}


def _disabled(*filters: str) -> Config:
    return {
        name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
        for name in filters
    }


def _upstream_host(host: str) -> str:
    # A wildcard bind address is not somewhere to connect to.
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
