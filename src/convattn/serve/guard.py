"""What every request passes before a route sees it, and what no response may carry.

- Host: a server on 127.0.0.1 answers only requests addressed to it (127.0.0.1, localhost,
  [::1]) or to a name given with --allow-host. A web page elsewhere cannot drive the API by
  pointing its own domain name at 127.0.0.1 (DNS rebinding): its requests carry that name.
  A server on every address (0.0.0.0 or ::) also answers requests addressed to any IP.
- Origin: a request a browser sends from another site's page (its Origin names that site,
  or is "null" for a sandboxed frame or a local file) is refused, so no page can spend this
  server's CPU on uploads of its own.
- Body: at most MAX_BYTES plus the form around it on the upload routes, BODY_SLACK elsewhere,
  counted as it streams in, whether or not Content-Length is sent (and refused at once when
  Content-Length is over).
- Errors: a route that raises an unexpected exception answers a 500 with a sentence; the
  traceback is logged once, here.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers

from convattn.serve.images import MAX_BYTES, megabytes, too_large

BODY_SLACK = 64 * 1024  # form fields and boundaries around the file; any other route's body
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("convattn.serve")


class BodyTooLarge(HTTPException):
    """Raised from inside the body's stream: FastAPI passes HTTPExceptions on unchanged."""


class Hosts:
    """The names a request may address this server by."""

    def __init__(self, host: str = "127.0.0.1", allow: tuple[str, ...] = ()):
        bound = host.strip("[]").lower()
        self.any_ip = bound in ("0.0.0.0", "::", "")
        self.names = {bound} | {name.lower() for name in allow}
        if bound in LOOPBACK_NAMES or is_loopback(bound):
            self.names |= set(LOOPBACK_NAMES)
        self.names.discard("")

    def allows(self, value: str | None) -> bool:
        """A Host header ("127.0.0.1:8000", "[::1]:8000", "localhost") or an Origin's host."""
        if not value:
            return False
        try:
            name = urlsplit("//" + value).hostname
        except ValueError:
            return False
        return name is not None and (name in self.names or (self.any_ip and is_ip(name)))

    def describe(self) -> str:
        names = sorted(self.names)
        return ", ".join(names) + (" or any IP address" if self.any_ip else "")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def is_loopback(name: str) -> bool:
    return is_ip(name) and ipaddress.ip_address(name).is_loopback


class Guard:
    """ASGI middleware: the Host and Origin checks, the streaming body limit, the last
    resort for exceptions (see the module's doc)."""

    def __init__(self, app, hosts: Hosts, upload_paths: tuple[str, ...]):
        self.app, self.hosts, self.upload_paths = app, hosts, upload_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        refusal = self.refusal(headers, scope["path"])
        if refusal is not None:
            return await respond(send, *refusal)
        limit, started, received = self.limit(scope["path"]), False, 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(413, self.over(scope["path"]))
            return message

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except Exception:
            log.exception("while answering %s %s", scope["method"], scope["path"])
            if not started:
                await respond(send, 500, "internal error; the server's log has the details")

    def limit(self, path: str) -> int:
        return MAX_BYTES + BODY_SLACK if path in self.upload_paths else BODY_SLACK

    def over(self, path: str, length: int | None = None) -> str:
        """The sentence for a body over the limit (length: its Content-Length, if sent)."""
        if path in self.upload_paths:
            return too_large("the upload", length) if length else \
                f"the upload is over the limit of {megabytes(MAX_BYTES)}"
        return f"{path} takes no upload; the request's body is over the limit of {BODY_SLACK // 1024} KB"

    def refusal(self, headers: Headers, path: str) -> tuple[int, str] | None:
        """(status, sentence) when the request is refused before it is read, else None."""
        if not self.hosts.allows(headers.get("host")):
            return 403, (f"this server answers only requests addressed to {self.hosts.describe()} "
                         f"(this one: Host {headers.get('host', '(none)')[:100]!r}); start it with "
                         "--allow-host NAME to reach it by another name")
        origin = headers.get("origin")
        if origin and (origin == "null" or not self.hosts.allows(urlsplit(origin).netloc)):
            return 403, (f"requests from pages of other sites are refused (Origin "
                         f"{origin[:100]!r}); open the page from this server itself")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit(path):
            return 413, self.over(path, int(length))
        return None


async def respond(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
