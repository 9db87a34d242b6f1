"""Serve a bundle directory over real HTTP, with `Range: bytes=N-` resumption, for the tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar, TypeVar, cast


class RangeFiles(BaseHTTPRequestHandler):
    """Serves the files under `root`, honouring `bytes=N-` ranges and noting each in `ranges`.

    Subclasses change how the body goes out (`send_body`) to cut or slow a download.
    """

    root: ClassVar[Path]
    ranges: ClassVar[list[str]]

    def do_GET(self) -> None:
        """Send the file at the request path, from the Range start if one is asked for."""
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        header = self.headers.get("Range")
        start = int(header.removeprefix("bytes=").split("-")[0]) if header else 0
        if header:
            self.ranges.append(header)
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.send_body(data[start:])

    def send_body(self, body: bytes) -> None:
        """Write the (rest of the) file whole."""
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        """Keep the test output quiet."""
        return


H = TypeVar("H", bound=RangeFiles)


@contextmanager
def serving(handler: type[H], root: Path, **attrs: object) -> Iterator[tuple[str, type[H]]]:
    """Serve `root` on a free loopback port with a fresh subclass of `handler`.

    Yields the base URL and that subclass, whose `ranges` (and any `attrs`) the test reads.
    """
    fresh = cast("type[H]", type("Handler", (handler,), {"root": root, "ranges": [], **attrs}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), fresh)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fresh
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
