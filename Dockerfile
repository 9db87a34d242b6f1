# syntax=docker/dockerfile:1
# edge-agent in a container: installed the way the README installs it (`pip install .` into a
# virtual environment), run as an unprivileged user, state on a volume, health from /health.
#   docker build -t edge-agent .
#   podman build --format docker -t edge-agent .      (podman keeps HEALTHCHECK in docker format)
#   docker run -d --name edge-agent -v edge-agent-state:/var/lib/edge-agent \
#     --stop-timeout 30 --env-file /etc/edge-agent/edge-agent.env edge-agent
# The base is a build argument: any Debian-like image with Python 3.11, `python` on the PATH
# and its venv module (`make image` makes one with debootstrap where no registry is
# reachable). Behind a TLS-intercepting proxy, hand pip the proxy's CA bundle as a build
# secret: --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
# Wheels exist for x86_64 and aarch64 (Raspberry Pi 4/5 on a 64-bit OS, Jetson); 32-bit ARM
# would need compilers in the build stage.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core/ core/
COPY daemon/ daemon/
COPY connectors/ connectors/
COPY models/ models/
COPY rules/ rules/
COPY simulator/ simulator/
COPY systemd/ systemd/
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python -m venv /opt/edge-agent \
    && /opt/edge-agent/bin/pip install . \
    && /opt/edge-agent/bin/edge-agent check-config

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="edge-agent" \
      org.opencontainers.image.description="Industrial IoT edge agent: explains sensor anomalies and turns them into maintenance advice" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid so that a volume's ownership survives an image update.
RUN groupadd --system --gid 10001 edge-agent \
    && useradd --system --uid 10001 --gid edge-agent --home-dir /var/lib/edge-agent \
        --shell /usr/sbin/nologin edge-agent \
    && install -d -o edge-agent -g edge-agent -m 0700 /var/lib/edge-agent
COPY --from=build /opt/edge-agent /opt/edge-agent
ENV PATH=/opt/edge-agent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGE_AGENT__STATE_DIR=/var/lib/edge-agent \
    EDGE_LOG__FORMAT=json \
    EDGE_SERVICE__HTTP_PORT=9108
VOLUME ["/var/lib/edge-agent"]
USER edge-agent:edge-agent
WORKDIR /var/lib/edge-agent
# The endpoint listens on the container's loopback, where the health check reads it. To
# publish /metrics and the page, set EDGE_SERVICE__HTTP_HOST=0.0.0.0 and a token
# (EDGE_SERVICE__HTTP_TOKEN, a secret): the agent refuses to listen beyond loopback without.
EXPOSE 9108
# /health answers 503 until the broker is connected and the model loaded, 200 after.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('EDGE_SERVICE__HTTP_PORT', '9108'), timeout=4)"]
# The agent stops cleanly on SIGTERM (docker stop) within EDGE_AGENT__SHUTDOWN_TIMEOUT_S.
STOPSIGNAL SIGTERM
ENTRYPOINT ["edge-agent"]
CMD ["run"]
