"""paho's socket driven from the running event loop: no paho thread.

paho's socket callbacks become `loop.add_reader/add_writer`; `loop_misc` (keep-alive,
retries) runs from a task. paho calls `on_socket_open` from the thread that connects (the
default executor), so callbacks hop onto the loop's thread before they touch it.

Reading is ours: a readable socket is read `_RECV_BYTES` at a time into a buffer, and the
packets in it are taken a burst at a time. A QoS 0 PUBLISH without properties (what sensors
send) goes straight to the handler; every other packet (acks, QoS 1/2, anything with
properties, CONNACK, PINGRESP) goes to paho, which reads it from the buffer instead of the
socket (its `_sock_recv` is ours). paho itself reads one packet with at least three
`recv()` calls and builds a message object, a lock and a condition per PUBLISH: the fast
path costs a fifth of that.
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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

_MISC_INTERVAL_S: Final = 1.0
_QUICKACK: Final[int | None] = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_CORK: Final[int | None] = getattr(socket, "TCP_CORK", None)  # Linux only
# Packets taken per turn of the loop before others get one (fairness vs. overhead).
_READ_BUDGET: Final = 64
_RECV_BYTES: Final = 65536  # one recv(); the buffer holds at most this plus a packet
_PUBLISH_QOS0: Final = 0x30  # packet type 3, QoS bits 0 (DUP and RETAIN may be set)
_PUBLISH_MASK: Final = 0xF6
_PUBACK: Final = 0x40
# PUBACK outcomes that are no failure, shared: paho builds a ReasonCode and a Properties per
# ack otherwise (~15 us). Anything else (a failure, properties) is paho's to decode.
_ACKED: Final = {
    code: ReasonCode(PacketTypes.PUBACK, identifier=code)
    for code in (0x00, 0x10)  # Success, No matching subscribers
}
_NO_PROPERTIES: Final = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class LoopSocket:
    """The socket of one paho client, read and written by the event loop."""

    def __init__(
        self, client: paho.Client, on_publish: Callable[[str, bytes], None], *, v5: bool
    ) -> None:
        self._client = client
        self._on_publish = on_publish
        self._v5 = v5
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.sock: Any = None  # the open socket (plain or TLS), None between connections
        self._buf = b""  # bytes read from the socket, not yet taken from `_pos` on
        self._pos = 0
        self._limit = 0  # paho may read up to here: the one packet handed to it
        self._eof = False
        self._error: OSError | None = None
        self._again = False  # a continuation of the buffer is scheduled
        # paho reads what we hand it from our buffer (see `_recv`).
        client._sock_recv = self._recv  # type: ignore[method-assign]  # noqa: SLF001
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
        self._reset()
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
            self._reset()

    def _reset(self) -> None:
        self._buf, self._pos, self._limit, self._eof, self._error = b"", 0, 0, False, None

    def _on_register_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() >= 0:
            self._loop.add_writer(sock, self._write)

    def _write(self) -> None:
        """Paho's loop_write, corked.

        The packets queued since the last turn (a burst of publishes) leave in as few TCP
        segments as fit instead of one each, which wakes the broker once, not per packet.
        """
        sock = self.sock
        cork = _CORK is not None and sock is not None
        if cork:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
        try:
            self._client.loop_write()
        finally:
            if cork:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)

    def _on_unregister_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() >= 0:
            self._loop.remove_writer(sock)

    # -- reading ---------------------------------------------------------------------------
    def _recv(self, bufsize: int) -> bytes:
        """Paho's `_sock_recv`: the packet handed to it; EOF, errors and EAGAIN as a socket."""
        pos = self._pos
        if pos < self._limit:
            end = min(pos + bufsize, self._limit)
            self._pos = end
            return self._buf[pos:end]
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._eof:
            return b""
        raise BlockingIOError

    def _on_readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        taken = self._take(_READ_BUDGET)
        if taken < _READ_BUDGET and sock is self.sock:
            # No whole packet left in the buffer: read more (a packet larger than one read
            # grows the buffer to its size, as paho's own reading would).
            self._fill(sock)
            taken += self._take(_READ_BUDGET - taken)
        if taken >= _READ_BUDGET and not self._again and self.sock is sock:
            # Packets may be left in the buffer with none in the socket: come back for them.
            self._again = True
            assert self._loop is not None
            self._loop.call_soon(self._resume)
        if _QUICKACK is not None and sock is self.sock:
            # Brokers with Nagle on (mosquitto's default) hold the next PUBACKs until we ACK
            # the last at TCP level, and Linux delays that ACK up to 40 ms while we have
            # nothing to send: publish+ack of the outbox measured ~2k msg/s without this,
            # 5-9k with it. Quick-ack mode lapses, so it is set again after every read.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def _resume(self) -> None:
        self._again = False
        self._on_readable()

    def _fill(self, sock: Any) -> None:
        """One recv() into the buffer; EOF or an error is handed to paho to act on."""
        try:
            data = sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except ssl.SSLWantWriteError:
            self._client._call_socket_register_write()  # noqa: SLF001 - what paho does here
            return
        except OSError as exc:
            self._error = exc
            self._limit = self._pos
            self._client.loop_read()  # paho sees the error and closes the connection
            return
        if not data:
            self._eof = True
            self._limit = self._pos
            self._client.loop_read()  # paho sees the EOF and closes the connection
            return
        if isinstance(sock, ssl.SSLSocket):
            # Records already decrypted wait in the SSL object, not in the socket: epoll
            # would not tell us about them.
            while (pending := sock.pending()) > 0:
                data += sock.recv(pending)
        rest = self._buf[self._pos :]
        self._buf, self._pos = (rest + data if rest else data), 0

    def _take(self, budget: int) -> int:
        """Take up to `budget` whole packets from the buffer; return how many."""
        sock = self.sock
        client = self._client
        taken = 0
        while taken < budget and sock is self.sock:
            buf, pos = self._buf, self._pos
            size = _packet_size(buf, pos)
            if size is None:
                return taken  # not a whole packet yet
            taken += 1
            end = pos + size
            if buf[pos] & _PUBLISH_MASK == _PUBLISH_QOS0:
                found = self._publish(buf, pos, end)
                if found is not None:
                    self._pos = end
                    self._on_publish(*found)
                    continue
            elif buf[pos] == _PUBACK and self._puback(buf, pos, end):
                continue
            # paho reads exactly this packet from the buffer and handles it.
            self._limit = end
            rc = client.loop_read()
            self._limit = 0
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return taken
            self._pos = end  # paho read it all (its packets never span our reads)
        return taken

    def _puback(self, buf: bytes, pos: int, end: int) -> bool:
        """Complete the publish a plain PUBACK acknowledges, as paho would; False: paho's."""
        size = end - pos - 2  # one length byte: a PUBACK without properties is short
        if buf[pos + 1] & 0x80 or size < 2 or (size > 2 and not self._v5):
            return False
        mid = buf[pos + 2] << 8 | buf[pos + 3]
        if size == 2:
            reason = _ACKED[0]
        elif size == 3 or (size == 4 and buf[pos + 5] == 0):  # a reason, empty properties
            found = _ACKED.get(buf[pos + 4])
            if found is None:
                return False
            reason = found
        else:
            return False
        self._pos = end
        client = self._client
        # What paho's _handle_pubackcomp does once it has decoded the packet.
        with client._out_message_mutex:  # noqa: SLF001
            out = client._out_messages  # noqa: SLF001
            if mid in out:
                # Paho then scans every message in flight for one queued behind its limit
                # (~25 us an ack at 100 in flight); with none queued, the scan finds nothing.
                limit = client._max_inflight_messages  # noqa: SLF001
                if len(out) <= client._inflight_messages:  # noqa: SLF001
                    client._max_inflight_messages = 0  # noqa: SLF001
                try:
                    rc = client._do_on_publish(mid, reason, _NO_PROPERTIES)  # noqa: SLF001
                finally:
                    client._max_inflight_messages = limit  # noqa: SLF001
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    client._loop_rc_handle(rc)  # noqa: SLF001
        return True

    def _publish(self, buf: bytes, pos: int, end: int) -> tuple[str, bytes] | None:
        """Topic and payload of a QoS 0 PUBLISH at `pos`, or None to leave it to paho."""
        i = pos + 1
        while buf[i] & 0x80:  # the remaining length, already checked whole
            i += 1
        i += 1
        if i - pos > 5 or i + 2 > end:
            return None
        t0 = i + 2
        t1 = t0 + (buf[i] << 8 | buf[i + 1])
        if t1 > end or t0 == t1:
            return None  # malformed, or a topic alias (MQTT 5): paho's business
        payload_at = t1
        if self._v5:
            if t1 >= end or buf[t1] != 0:
                return None  # properties: paho decodes them
            payload_at += 1
        try:
            topic = buf[t0:t1].decode("utf-8")
        except UnicodeDecodeError:
            return None
        return topic, buf[payload_at:end]


def _packet_size(buf: bytes, pos: int) -> int | None:
    """Bytes of the whole MQTT packet at `pos`, or None if the buffer does not hold it yet."""
    n = len(buf)
    i = pos + 1
    length = 0
    shift = 0
    while True:
        if i >= n:
            return None
        byte = buf[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            # Not MQTT (a fifth length byte): paho reads it and closes the connection.
            return i - pos + 1 if i < n else None
    size = i - pos + length
    return size if pos + size <= n else None
