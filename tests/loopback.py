"""An HTTP server on 127.0.0.1 for download tests: files from memory, range requests that can
be switched off, responses cut short or failed on purpose, and a log of what was asked.

    with Loopback() as server:
        server.files["/a/b.jpg"] = b"..."
        server.url("/a/b.jpg")            -> "http://127.0.0.1:PORT/a/b.jpg"
        server.cut["/big.zip"] = 1000     # the next response for it stops after 1000 bytes
        server.fail["/a/c.jpg"] = 503     # every request for it answers 503
        server.ranges = False             # answer a range request with the whole file (200)
        server.log                        -> [(path, Range header or None), ...]
"""

from __future__ import annotations

import http.server
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server.owner
        range_ = self.headers.get("Range")
        server.log.append((self.path, range_))
        if self.path in server.fail:
            return self._empty(server.fail[self.path])
        body = server.files.get(self.path)
        if body is None:
            return self._empty(404)
        start = 0
        if range_ and server.ranges:
            start = int(range_.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                return self._empty(416)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Connection", "close")
        self.end_headers()
        cut = server.cut.pop(self.path, None)
        self.wfile.write(body[start:start + cut] if cut is not None else body[start:])
        self.close_connection = True

    def _empty(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True


class Loopback:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.fail: dict[str, int] = {}
        self.ranges = True
        self.log: list[tuple[str, str | None]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.httpd.daemon_threads = True

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "Loopback":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
