"""A static file server on 127.0.0.1 answering HTTP range requests (RFC 9110 §14: `Range: bytes=a-b` → 206 with
`Content-Range`), as object stores and web servers serve COGs. GET and HEAD; one range per request (what GDAL's
/vsicurl/ sends). Counts requests, body bytes sent and whole-file answers, so tests can show that reads are
windowed. `delay_s` (settable at any time) holds every answer that long, as a slow object store would.

    with RangeFileServer(folder) as server:
        url = server.url("ortho.tif")
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler

from tests.support.local_http import LocalHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeFileServer(LocalHTTPServer):
    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        self.requests = 0
        self.bytes_sent = 0
        self.whole_files = 0  # 200 answers with the whole file as body
        self.delay_s = 0.0
        self._lock = threading.Lock()
        super().__init__(_handler_for(self))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _count(self, status: int, sent: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_sent += sent
            self.whole_files += status == 200 and sent > 0


def _handler_for(server: RangeFileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - silence per-request logging
            pass

        def _answer(self, body_too: bool) -> None:
            if server.delay_s:
                time.sleep(server.delay_s)
            path = (server.folder / self.path.split("?", 1)[0].lstrip("/")).resolve()
            if path.parent != server.folder or not path.is_file():
                return self._send(404, b"not found\n", {}, body_too)
            data = path.read_bytes()
            size = len(data)
            m = _RANGE.match(self.headers.get("Range", ""))
            if not m or (not m[1] and not m[2]):
                return self._send(200, data, {"Accept-Ranges": "bytes"}, body_too)
            if m[1]:
                start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
            else:  # suffix range: the last N bytes
                start, end = max(0, size - int(m[2])), size - 1
            if start >= size or start > end:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"}, body_too)
            return self._send(206, data[start:end + 1], {"Accept-Ranges": "bytes",
                                                         "Content-Range": f"bytes {start}-{end}/{size}"}, body_too)

        def _send(self, status: int, body: bytes, headers: dict, body_too: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "image/tiff" if status in (200, 206) else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if body_too:
                self.wfile.write(body)
            server._count(status, len(body) if body_too else 0)

        def do_GET(self):  # noqa: N802 - http.server API
            self._answer(True)

        def do_HEAD(self):  # noqa: N802 - http.server API
            self._answer(False)

    return Handler
