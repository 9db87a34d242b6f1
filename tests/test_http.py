"""The metrics/health endpoint, scraped over real HTTP and parsed as Prometheus text."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.core import metrics
from edge_agent.core.errors import ConfigError
from edge_agent.daemon.service.http import Health, HttpEndpoint
from edge_agent.daemon.service.settings import ServiceSettings

SERVICE = ServiceSettings(http_port=0)


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def _closed_without_answer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:  # closed with our request unread: a reset, not a FIN
        return True


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_scrape_shows_counters_moving() -> None:
    async with HttpEndpoint(SERVICE) as endpoint:
        assert endpoint.port
        status, ctype, body = await asyncio.to_thread(_get, endpoint.port, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain")
        before = _samples(body.decode())
        metrics.READINGS_IN.labels(connector="http-test").inc(7)
        metrics.READINGS_DROPPED.labels(reason="http-test").inc(2)
        _, _, body = await asyncio.to_thread(_get, endpoint.port, "/metrics")
        after = _samples(body.decode())
    key_in = ("edge_readings_total", (("connector", "http-test"),))
    key_drop = ("edge_readings_dropped_total", (("reason", "http-test"),))
    assert after[key_in] - before.get(key_in, 0.0) == 7
    assert after[key_drop] - before.get(key_drop, 0.0) == 2
    # The endpoint counts its own scrapes.
    assert after[("edge_http_requests_total", (("code", "200"), ("path", "/metrics")))] >= 1


async def test_health_is_json_and_503_until_ready() -> None:
    state = {"ready": False}

    def health() -> Health:
        return Health(
            ready=state["ready"],
            connected={"ingest": state["ready"]},
            last_reading_age_s=1.5,
            outbox_depth=3,
            outbox_store="memory (disk full)",
            backend="onnx:CPUExecutionProvider",
        )

    async with HttpEndpoint(SERVICE, health) as endpoint:
        assert endpoint.port
        status, ctype, body = await asyncio.to_thread(_get, endpoint.port, "/health")
        assert (status, ctype) == (503, "application/json")
        assert json.loads(body)["ready"] is False
        state["ready"] = True
        status, _, body = await asyncio.to_thread(_get, endpoint.port, "/health")
    assert status == 200
    assert json.loads(body) == {
        "ready": True,
        "connected": {"ingest": True},
        "last_reading_age_s": 1.5,
        "outbox_depth": 3,
        "outbox_store": "memory (disk full)",
        "backend": "onnx:CPUExecutionProvider",
        "degraded": False,
        "learning": None,  # no asset of a learn profile: nothing learning, nothing learned
    }


async def test_unknown_path_and_method() -> None:
    async with HttpEndpoint(SERVICE) as endpoint:
        assert endpoint.port
        assert (await asyncio.to_thread(_get, endpoint.port, "/nope"))[0] == 404
        assert (await asyncio.to_thread(_get, endpoint.port, "/metrics", "POST"))[0] == 405
        status, _, body = await asyncio.to_thread(_get, endpoint.port, "/metrics", "HEAD")
        assert (status, body) == (200, b"")


async def test_off_switch_serves_nothing() -> None:
    async with HttpEndpoint(ServiceSettings(http_enabled=False)) as endpoint:
        assert endpoint.port is None


async def test_busy_port_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="EDGE_SERVICE__HTTP_PORT"):
            async with HttpEndpoint(ServiceSettings(http_port=port)):
                pass


async def test_connections_beyond_the_cap_are_refused() -> None:
    async with HttpEndpoint(ServiceSettings(http_port=0, http_max_connections=1)) as endpoint:
        assert endpoint.port
        # A client that connects and says nothing holds the only slot ...
        _, idle = await asyncio.open_connection("127.0.0.1", endpoint.port)
        await asyncio.sleep(0)  # let the server accept it
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        await writer.drain()
        # ... so the next one is closed without an answer.
        assert await _closed_without_answer(reader)
        writer.close()
        idle.close()
        # With the slot free again, scrapes work.
        assert (await asyncio.to_thread(_get, endpoint.port, "/metrics"))[0] == 200


async def test_oversized_request_is_dropped() -> None:
    async with HttpEndpoint(SERVICE) as endpoint:
        assert endpoint.port
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()
        assert await _closed_without_answer(reader)
        writer.close()


async def test_exit_ends_handlers_of_idle_clients() -> None:
    endpoint = HttpEndpoint(SERVICE)
    async with endpoint:
        assert endpoint.port
        _, idle = await asyncio.open_connection("127.0.0.1", endpoint.port)
        for _ in range(100):  # until the server has picked the connection up
            if endpoint._handlers:
                break
            await asyncio.sleep(0.01)
        assert endpoint._handlers
    assert not endpoint._handlers
    idle.close()
