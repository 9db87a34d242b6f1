# syntax=docker/dockerfile:1
# edge-agent in a container: installed the way the README installs it (`pip install .` into a
# virtual environment), run as an unprivileged user, state on a volume, health from /health.
#   docker build -t edge-agent .
#   docker run -d --name edge-agent -v edge-agent-state:/var/lib/edge-agent \
#     --stop-timeout 30 --env-file /etc/edge-agent/edge-agent.env -p 127.0.0.1:9108:9108 \
#     edge-agent
# Wheels exist for x86_64 and aarch64 (Raspberry Pi 4/5 on a 64-bit OS, Jetson); 32-bit ARM
# would need compilers in the build stage.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon/ daemon/
COPY connectors/ connectors/
COPY models/ models/
COPY rules/ rules/
COPY simulator/ simulator/
COPY systemd/ systemd/
RUN python -m venv /opt/edge-agent \
    && /opt/edge-agent/bin/pip install . \
    && /opt/edge-agent/bin/edge-agent check-config

FROM ${PYTHON_IMAGE}
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
    EDGE_SERVICE__HTTP_HOST=0.0.0.0 \
    EDGE_SERVICE__HTTP_PORT=9108
VOLUME ["/var/lib/edge-agent"]
USER edge-agent:edge-agent
WORKDIR /var/lib/edge-agent
EXPOSE 9108
# /health answers 503 until the broker is connected and the model loaded, 200 after.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('EDGE_SERVICE__HTTP_PORT', '9108'), timeout=4)"]
# The agent stops cleanly on SIGTERM (docker stop) within EDGE_AGENT__SHUTDOWN_TIMEOUT_S.
STOPSIGNAL SIGTERM
ENTRYPOINT ["edge-agent"]
CMD ["run"]
