# syntax=docker/dockerfile:1
# The telephony media gateway as a container (docs/deploy.md).
#
#   docker build -t realtime-gateway .
#   docker run --network host -e OPENAI_API_KEY=... realtime-gateway
#
# Every setting is an environment variable GATEWAY_<SETTING> (see `gateway serve --help`), so the
# image needs no config file. RTP uses a UDP port range: run with host networking; publishing
# 10000 ports through Docker's proxy is slow and the EXPOSE range below is documentation only.
#
# Draining: SIGTERM starts a graceful drain (new calls get 503, live calls finish for up to
# GATEWAY_DRAIN_TIMEOUT, 300 s). Give the container more than that before SIGKILL:
# `docker stop -t 330`, compose `stop_grace_period: 330s`, Kubernetes
# `terminationGracePeriodSeconds: 330`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install the project and its dependencies into a virtualenv (wheels only)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/gateway
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY codecs ./codecs
RUN /opt/gateway/bin/pip install --no-cache-dir --only-binary=:all: --no-compile . \
    && /opt/gateway/bin/python -m compileall -q /opt/gateway/lib

# ---- runtime: slim Python, espeak-ng for the local provider's voice, a non-root user
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="realtime-gateway" \
      org.opencontainers.image.description="SIP and WebRTC calls bridged to speech-to-speech Realtime AI models" \
      org.opencontainers.image.licenses="Apache-2.0"

# Bookworm's point releases move these versions; pinning them would break rebuilds that should
# pick up security fixes, so the versions come from the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/gateway \
       --create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/gateway/recordings \
    && chown -R gateway:gateway /var/lib/gateway

COPY --from=build /opt/gateway /opt/gateway

ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HTTP_LISTEN=0.0.0.0:8080 \
    GATEWAY_SIP_LISTEN=0.0.0.0:5060 \
    GATEWAY_RTP_PORTS=10000-20000 \
    GATEWAY_LOG_FORMAT=json \
    GATEWAY_DRAIN_TIMEOUT=300

WORKDIR /var/lib/gateway
USER 10001:10001

# SIP (UDP and TCP), HTTP (WebRTC page, call API, /healthz, /readyz, /metrics) and RTP.
EXPOSE 5060/udp 5060/tcp 8080/tcp 10000-20000/udp

# Liveness of the HTTP listener, wherever GATEWAY_HTTP_LISTEN puts it; no curl needed.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; h, _, p = os.environ.get('GATEWAY_HTTP_LISTEN', '0.0.0.0:8080').rpartition(':'); h = h.strip('[]'); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; h = '[' + h + ']' if ':' in h else h; u.urlopen('http://' + h + ':' + p + '/healthz', timeout=2)"]

STOPSIGNAL SIGTERM
CMD ["gateway", "serve"]
