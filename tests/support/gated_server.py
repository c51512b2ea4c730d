"""A local stand-in for a gated Hugging Face file URL: 401 without `Authorization`, 403 for a token that was
not granted access, 200 with the file's bytes for the granted token. Records the Authorization headers seen.

    with GatedFileServer(b"...", granted_token="hf_ok") as server:
        url = server.url("sam3.pt")
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

from tests.support.local_http import LocalHTTPServer


class GatedFileServer(LocalHTTPServer):
    def __init__(self, body: bytes, granted_token: str):
        self.body = body
        self.granted = granted_token
        self.auth_headers: list[str | None] = []
        super().__init__(_handler_for(self))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/facebook/sam3/resolve/main/{name}"


def _handler_for(server: GatedFileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - silence per-request logging
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            auth = self.headers.get("Authorization")
            server.auth_headers.append(auth)
            if not auth:
                status, body = 401, b'{"error":"Access to model facebook/sam3 is restricted. You must have access '
                body += b'to it and be authenticated to access it. Please log in."}'
            elif auth != f"Bearer {server.granted}":
                status, body = 403, b'{"error":"Access to model facebook/sam3 is restricted and you are not in '
                body += b'the authorized list. Visit https://huggingface.co/facebook/sam3 to ask for access."}'
            else:
                status, body = 200, server.body
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream" if status == 200 else "application/json")
            self.end_headers()
            self.wfile.write(body)

    return Handler
