"""A small local HTTP endpoint: Prometheus text on /metrics, a JSON /health, and the page.

Plain asyncio streams: a few GET routes do not justify a web framework on a gateway. Every
request is bounded (header bytes, read time) and so is the number of open connections. The
page's routes (everything but /metrics and /health) come from `routes`, wired by the app.
With `http_token` set (required beyond loopback), every request but /health must carry it,
as a bearer token or as the password of basic auth (so a browser can log in).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple, Self

import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_agent.core import metrics
from edge_agent.core.errors import ConfigError
from edge_agent.core.logs import RateLimited
from edge_agent.daemon.service.settings import ServiceSettings

log = structlog.get_logger(__name__)

MAX_HEADER_BYTES = 8192
READ_TIMEOUT_S = 5.0
_PATHS = ("/metrics", "/health", "/", "/api", "/report", "/static")  # metric labels
_REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized"}
_REASONS |= {404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """What /health reports; `ready` false answers 503 so container health checks fail.

    `connected` holds every link by name: the uplink and each configured source.
    """

    ready: bool
    connected: dict[str, bool] = msgspec.field(default_factory=dict)
    last_reading_age_s: float | None = None
    outbox_depth: int = 0
    outbox_store: str = "disk"  # or "memory (<why>)" while the outbox file cannot be written
    backend: str | None = None
    degraded: bool = False
    # Learning on the gateway (only with `learn` profiles): counts by state, each asset's.
    learning: dict[str, object] | None = None


HealthSource = Callable[[], Health]


class Response(NamedTuple):
    """One answer of a route."""

    code: int
    ctype: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


# (path, query string) -> the answer, or None for 404. Called on the event loop.
Routes = Callable[[str, str], Response | None]


def _not_ready() -> Health:
    return Health(ready=False)


class HttpEndpoint:
    """Serve /metrics, /health and `routes` on `http_host:http_port` in the with-block."""

    def __init__(
        self,
        service: ServiceSettings,
        health: HealthSource = _not_ready,
        routes: Routes | None = None,
    ) -> None:
        self._settings = service
        self._health = health
        self._routes = routes
        token = service.http_token
        self._token = token.get_secret_value().encode() if token is not None else None
        self._server: asyncio.Server | None = None
        self._open = 0
        # Open connections, closed on exit so that no handler is left waiting for a request
        # (a cancelled handler task makes asyncio log an error under Python 3.11).
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False
        self._limit = RateLimited(60.0)
        self.port: int | None = None

    async def __aenter__(self) -> Self:
        if not self._settings.http_enabled:
            log.info("metrics endpoint off (EDGE_SERVICE__HTTP_ENABLED=false)")
            return self
        if self._token is None and not self._settings.http_loopback:
            raise ConfigError(
                f"EDGE_SERVICE__HTTP_HOST={self._settings.http_host} is not loopback: "
                "set EDGE_SERVICE__HTTP_TOKEN first"
            )
        try:
            self._server = await asyncio.start_server(
                self._serve,
                self._settings.http_host,
                self._settings.http_port,
                limit=MAX_HEADER_BYTES,
            )
        except OSError as exc:
            where = f"{self._settings.http_host}:{self._settings.http_port}"
            raise ConfigError(
                f"EDGE_SERVICE__HTTP_HOST/EDGE_SERVICE__HTTP_PORT={where}: cannot listen ({exc})"
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics endpoint up", host=self._settings.http_host, port=self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        for writer in self._writers:
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=READ_TIMEOUT_S)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self._settings.http_max_connections:
            self._count("other", 503, "too many connections")
            writer.close()
            return
        self._open += 1
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        try:
            await self._answer(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            if not self._closing:
                self._count("other", 400, "bad or slow request")
        finally:
            self._open -= 1
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError):  # the peer may be gone; nothing left to tell it
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(READ_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        method, target = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        path, _, query = target.partition("?")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            answer = Response(405, "text/plain", b"only GET\n")
        elif path != "/health" and not self._authorized(headers.get("authorization", "")):
            answer = Response(
                401,
                "text/plain",
                b"this endpoint needs EDGE_SERVICE__HTTP_TOKEN (bearer, or basic password)\n",
                (("WWW-Authenticate", 'Basic realm="edge-agent", charset="UTF-8"'),),
            )
        else:
            answer = self._route(path, query)
        code, ctype, body, extra = answer
        label = "/" + path.split("/", 2)[1] if path.startswith("/") else "other"
        metrics.HTTP_REQUESTS.labels(
            path=label if label in _PATHS else "other", code=str(code)
        ).inc()
        reason = _REASONS.get(code, "Unavailable")
        more = "".join(f"{k}: {v}\r\n" for k, v in extra)
        header = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{more}Connection: close\r\n\r\n"
        ).encode()
        writer.write(header if method == "HEAD" else header + body)
        async with asyncio.timeout(READ_TIMEOUT_S):
            await writer.drain()

    def _route(self, path: str, query: str) -> Response:
        if path == "/metrics":
            return Response(200, CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY))
        if path == "/health":
            health = self._health()
            body = msgspec.json.encode(health) + b"\n"
            return Response(200 if health.ready else 503, "application/json", body)
        found = self._routes(path, query) if self._routes is not None else None
        if found is None:
            return Response(404, "text/plain", b"try /, /metrics or /health\n")
        return found

    def _authorized(self, value: str) -> bool:
        """No token configured, or the request carries it (bearer or basic password)."""
        if self._token is None:
            return True
        scheme, _, credential = value.partition(" ")
        given = b""
        if scheme.lower() == "bearer":
            given = credential.strip().encode("latin-1")
        elif scheme.lower() == "basic":
            with contextlib.suppress(binascii.Error, ValueError):  # malformed: not authorized
                given = base64.b64decode(credential.strip(), validate=True).partition(b":")[2]
        return hmac.compare_digest(given, self._token)

    def _count(self, path: str, code: int, why: str) -> None:
        metrics.HTTP_REQUESTS.labels(path=path, code=str(code)).inc()
        held = self._limit.allow(why)
        if held is not None:
            log.warning("metrics endpoint refused a request", reason=why, suppressed=held)
