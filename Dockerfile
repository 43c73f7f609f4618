# syntax=docker/dockerfile:1
# dynamiq-otel container image.
#
#   docker build -t dynamiq-otel .
#   docker run -p 127.0.0.1:8080:8080 -e DYNAMIQ_OTEL_ACCESS_KEYS=<key> \
#     -e DYNAMIQ_OTEL_OTLP_ENDPOINT=http://collector:4318 -v dynamiq-otel-data:/var/lib/dynamiq-otel dynamiq-otel
#
# Not built by the dynamiq-otel team (no Docker engine on its machines): tests/test_deploy_files.py
# checks it structurally. See docs/deployment.md.

# --- build stage: install the project (and only its runtime dependencies) into a venv -------------
FROM python:3.11-slim AS build
# DYNAMIQ_OTEL_USE_MYPYC=1: setup.py compiles the mapping with mypyc (about 10 % less CPU per run,
# docs/performance.md), which needs a C compiler here; the runtime stage gets only the result.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DYNAMIQ_OTEL_USE_MYPYC=1
RUN apt-get update \
 && apt-get install --yes --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/dynamiq-otel
ENV PATH=/opt/dynamiq-otel/bin:$PATH
WORKDIR /src
# Only what `pip install .` needs (.dockerignore keeps the rest, tests and venvs included, out).
# README.m[d]: a wildcard, so a checkout without README.md still builds (setuptools only warns).
COPY pyproject.toml setup.py README.m[d] ./
COPY adapter ./adapter
COPY config ./config
COPY mapping ./mapping
RUN pip install .

# --- runtime stage ----------------------------------------------------------------------------------
FROM python:3.11-slim
# A fixed, unprivileged user: the UID the Kubernetes manifests (runAsUser/fsGroup) expect.
RUN groupadd --system --gid 10001 dynamiq \
 && useradd --system --uid 10001 --gid dynamiq --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin dynamiq \
 && mkdir -p /var/lib/dynamiq-otel \
 && chown dynamiq:dynamiq /var/lib/dynamiq-otel \
 && chmod 0750 /var/lib/dynamiq-otel
COPY --from=build /opt/dynamiq-otel /opt/dynamiq-otel
ENV PATH=/opt/dynamiq-otel/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DYNAMIQ_OTEL_HOST=0.0.0.0 \
    DYNAMIQ_OTEL_DATA_DIR=/var/lib/dynamiq-otel
# The durable store (SQLite). Mount a named volume or a persistent disk here: batches that were
# answered 200 but not yet exported live only in this directory.
VOLUME ["/var/lib/dynamiq-otel"]
USER 10001:10001
EXPOSE 8080
# No curl in the slim image: ask /healthz with Python's urllib (DYNAMIQ_OTEL_PORT if the port is moved).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DYNAMIQ_OTEL_PORT', '8080'), timeout=4)"]
# SIGTERM (docker stop, Kubernetes) drains: new batches get 503 + Retry-After, the export under way
# finishes (shutdown_grace), and the process exits 0. Give it longer than the default 10 s:
# docker stop --time 60 / stop_grace_period in compose / terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dynamiq-otel"]
CMD ["serve"]
