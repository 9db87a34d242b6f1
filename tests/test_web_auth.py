"""Beyond loopback the endpoint needs a token, and a request without it is refused."""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request

import pytest
from pydantic import SecretStr, ValidationError

from edge_agent.core.errors import ConfigError
from edge_agent.daemon.service.http import Health, HttpEndpoint, Response
from edge_agent.daemon.service.settings import ServiceSettings
from edge_agent.daemon.settings import load_settings

TOKEN = "s3cret-token"


def _get(port: int, path: str, auth: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_a_host_beyond_loopback_without_a_token_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="EDGE_SERVICE__HTTP_TOKEN"):
        ServiceSettings(http_host="0.0.0.0")
    monkeypatch.setenv("EDGE_SERVICE__HTTP_HOST", "gateway.local")
    with pytest.raises(ConfigError, match="EDGE_SERVICE__HTTP_TOKEN"):
        load_settings([])
    # Loopback in any spelling needs none; off needs none.
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert ServiceSettings(http_host=host).http_loopback
    ServiceSettings(http_host="0.0.0.0", http_enabled=False)


async def test_beyond_loopback_every_request_but_health_needs_the_token() -> None:
    settings = ServiceSettings(
        http_host="0.0.0.0",
        http_port=0,
        http_token=SecretStr(TOKEN),
    )

    def routes(path: str, _query: str) -> Response | None:
        return Response(200, "text/html", b"<p>page</p>") if path == "/" else None

    async with HttpEndpoint(settings, lambda: Health(ready=True), routes) as ep:
        assert ep.port
        port = ep.port
        for path in ("/", "/metrics", "/api/state", "/report/x"):
            code, headers, body = await asyncio.to_thread(_get, port, path)
            assert code == 401, path
            assert headers["WWW-Authenticate"].startswith("Basic")  # a browser asks for it
            assert b"EDGE_SERVICE__HTTP_TOKEN" in body
        for wrong in ("Bearer nope", "Basic !!!", "Token " + TOKEN, "Bearer"):
            assert (await asyncio.to_thread(_get, port, "/", wrong))[0] == 401, wrong
        code, _, body = await asyncio.to_thread(_get, port, "/", f"Bearer {TOKEN}")
        assert (code, body) == (200, b"<p>page</p>")
        basic = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
        assert (await asyncio.to_thread(_get, port, "/metrics", f"Basic {basic}"))[0] == 200
        # A liveness probe (the container's health check) needs no secret.
        assert (await asyncio.to_thread(_get, port, "/health"))[0] == 200
        assert (await asyncio.to_thread(_get, port, "/nothing", f"Bearer {TOKEN}"))[0] == 404
