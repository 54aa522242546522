# syntax=docker/dockerfile:1
# One image for all five services; which one runs is an argument:
#
#   docker build -t gatehouse:dev .                          # default service: auth
#   docker build --build-arg SERVICE=payments -t gatehouse-payments:dev .
#   docker run -e GATEHOUSE_SERVICE=monitoring gatehouse:dev   # the same image, another service
#   docker run gatehouse:dev health auth                      # any other `gatehouse` command
#
# deploy/docker/entrypoint.sh: no arguments -> `gatehouse serve $GATEHOUSE_SERVICE`; arguments ->
# `gatehouse <arguments>` (the migration Job and compose's migrate-* run `migrate <service>`).
# Runs as uid 10001 on a read-only root filesystem: writable paths are /tmp (tmpfs/emptyDir)
# only, certificates are mounted at /etc/gatehouse/certs (docs/operations.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with Gatehouse and its dependencies, compiled ahead of time --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/gatehouse
WORKDIR /src
# Only what the wheel is built from (pyproject's hatch config): the services, the client SDK,
# and the descriptor set and OpenAPI document it force-includes.
COPY pyproject.toml README.md ./
COPY services ./services
COPY clients ./clients
COPY envoy/descriptors/gatehouse.binpb ./envoy/descriptors/gatehouse.binpb
COPY envoy/openapi.json ./envoy/openapi.json
RUN /opt/gatehouse/bin/pip install . \
    # The root filesystem is read-only at run time: byte-compile now, never at start.
    && /opt/gatehouse/bin/python -m compileall -q /opt/gatehouse/lib \
    # Installers are build tools: none of them reaches the final stage.
    && /opt/gatehouse/bin/python -m pip uninstall --yes pip setuptools wheel
# The image's own commands (deploy/docker/): the entrypoint, the edge's init step and compose's
# dev certificates.
COPY --chmod=0755 deploy/docker/entrypoint.sh /opt/gatehouse/bin/gatehouse-entrypoint
COPY --chmod=0755 deploy/docker/edge_files.py /opt/gatehouse/bin/gatehouse-edge-files
COPY --chmod=0755 deploy/docker/dev_certs.py /opt/gatehouse/bin/gatehouse-dev-certs

# ---- runtime: the virtualenv on a slim Python, no compilers, no package installers ----------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE=auth
LABEL org.opencontainers.image.title="gatehouse" \
      org.opencontainers.image.description="Gatehouse gRPC services (one image, the service is an argument)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 gatehouse \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gatehouse \
    # pip in the base image is an installer too; the service never needs it.
    && python -m pip uninstall --yes --quiet pip setuptools wheel \
    # Mount points the app user owns, so an empty volume mounted there (compose's named
    # volumes) is writable by the one-shot steps that fill it: certificates, keys, edge files.
    && install -d -o 10001 -g 10001 -m 0750 /etc/gatehouse/certs /etc/gatehouse/edge \
    && install -d -o 10001 -g 10001 -m 0700 /etc/gatehouse/keys
COPY --from=build /opt/gatehouse /opt/gatehouse
ENV PATH=/opt/gatehouse/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEHOUSE_SERVICE=${SERVICE} \
    GATEHOUSE_HOST=0.0.0.0 \
    GATEHOUSE_HOME=/tmp/gatehouse \
    GATEHOUSE_CERTS_DIR=/etc/gatehouse/certs \
    GATEHOUSE_MIGRATE_ON_START=false \
    GATEHOUSE_EDGE_ENABLED=false \
    GATEHOUSE_LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
# gRPC (auth, access, monitoring, payments, notifications) and Prometheus /metrics.
EXPOSE 50051 50052 50053 50054 50055 9464
STOPSIGNAL SIGTERM
# gRPC health (grpc.health.v1) of this container's service over mTLS, with the `client`
# identity from the certificates directory; exit 1 unless SERVING.
HEALTHCHECK --interval=10s --timeout=8s --start-period=30s --retries=3 \
    CMD ["/bin/sh", "-c", "GATEHOUSE_HOST=127.0.0.1 exec gatehouse health \"$GATEHOUSE_SERVICE\" --timeout 3"]
ENTRYPOINT ["/opt/gatehouse/bin/gatehouse-entrypoint"]
CMD []
