"""One lifecycle for the local HTTP servers of the tests: a `ThreadingHTTPServer` on 127.0.0.1 at a free port,
served on a daemon thread between `__enter__` and `__exit__`."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHTTPServer(ThreadingHTTPServer):
    """A `ThreadingHTTPServer` that says nothing when a client goes away mid-request (tests of deadlines and
    cancellation do that on purpose); any other handler error is printed as usual."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class LocalHTTPServer:
    """Subclasses call `super().__init__(handler_class)` once their state is set; `port` is the bound port."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self._httpd = QuietHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
