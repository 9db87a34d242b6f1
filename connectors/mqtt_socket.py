"""paho's socket driven from the running event loop: no paho thread.

paho's socket callbacks become `loop.add_reader/add_writer`; a readable socket is drained
a burst at a time; `loop_misc` (keep-alive, retries) runs from a task. paho calls
`on_socket_open` from the thread that connects (the default executor), so callbacks hop
onto the loop's thread before they touch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

_MISC_INTERVAL_S: Final = 1.0
_QUICKACK: Final[int | None] = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# Packets read per readable event before the loop gets a turn (fairness vs. syscalls).
_READ_BUDGET: Final = 64


class LoopSocket:
    """The socket of one paho client, read and written by the event loop."""

    def __init__(self, client: paho.Client) -> None:
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.sock: Any = None  # the open socket (plain or TLS), None between connections
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def attach(self) -> None:
        """Bind to the running loop; call it from the loop before the first connect."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def drop(self) -> None:
        """Stop watching the socket (the client is closing)."""
        if self.sock is not None:
            self._remove(self.sock)

    async def run_misc(self, connecting: Callable[[], bool]) -> None:
        """Call paho's `loop_misc` (keep-alive, timeouts) every second until cancelled."""
        while True:
            await asyncio.sleep(_MISC_INTERVAL_S)
            if not connecting() and self.sock is not None:
                self._client.loop_misc()

    # -- paho's callbacks (on the loop thread, except socket-open during connect) ---------
    def _in_loop(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        assert loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _on_open(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(self._add, sock)

    def _add(self, sock: Any) -> None:
        assert self._loop is not None
        self.sock = sock
        # paho leaves Nagle on: the last publish of a burst would wait for the broker's ACK.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, self._on_readable)

    def _on_close(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(self._remove, sock)

    def _remove(self, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        if self.sock is sock:
            self.sock = None

    def _on_register_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() >= 0:
            self._loop.add_writer(sock, self._client.loop_write)

    def _on_unregister_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() >= 0:
            self._loop.remove_writer(sock)

    # -- reading ---------------------------------------------------------------------------
    def _on_readable(self) -> None:
        sock = self.sock
        self._drain(sock)
        if _QUICKACK is not None and sock is self.sock and sock is not None:
            # Brokers with Nagle on (mosquitto's default) hold the next PUBACKs until we ACK
            # the last at TCP level, and Linux delays that ACK up to 40 ms while we have
            # nothing to send: publish+ack of the outbox measured ~2k msg/s without this,
            # 5-9k with it. Quick-ack mode lapses, so it is set again after every read.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def _drain(self, sock: Any) -> None:
        client = self._client
        for _ in range(_READ_BUDGET):
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is not self.sock:
                return
            # paho reads one packet per call; peek so that a burst costs one loop turn.
            if isinstance(sock, ssl.SSLSocket):
                if sock.pending() == 0:
                    return
                continue
            try:
                if not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the next loop_read reports it and paho closes the connection
