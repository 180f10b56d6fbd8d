"""Checks every request passes before the app sees it: Host, Origin and body size.

- **Host** must be one the server answers to: the loopback names, the bind address and
  what `--allowed-host` adds (`*`: any). A page on another site that re-points its own
  name at 127.0.0.1 (DNS rebinding) sends its own name as Host, and is refused.
- **Origin**, on a mutating request (POST, PUT, PATCH, DELETE), must be the server's
  own (the console); a browser posting from any other page sends that page's origin,
  and is refused. Clients that are not browsers (curl, velo-cli) send none.
- **Body size** is checked against `max_body` before anything parses it: a declared
  Content-Length over the limit is answered 413 at once, and a body without one is read
  only up to the limit.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from velostream.api.jobs import problem

__all__ = ["DEFAULT_MAX_BODY", "RequestGuard", "allowed_hosts"]

DEFAULT_MAX_BODY = 1024 * 1024
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_log = logging.getLogger("velostream.api")


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host names a server bound to `bind` answers to: loopback, `bind`, `extra`."""
    hosts = {*_LOOPBACK_NAMES, *(h.strip().lower() for h in extra if h.strip())}
    if not _is_wildcard(bind):
        hosts.add(bind.lower())
    return frozenset(hosts)


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """`name` of a Host header `name[:port]` or `[v6]:port`, lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RequestGuard:
    """ASGI middleware refusing foreign hosts, cross-site mutations and large bodies."""

    def __init__(
        self, app: ASGIApp, *, hosts: frozenset[str], max_body: int = DEFAULT_MAX_BODY
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if "*" not in self.hosts and _host_name(host) not in self.hosts:
            await _refuse(400, "Host not allowed", f"this server does not answer to {host!r}")(
                scope, receive, send
            )
            return
        method = scope["method"]
        if method in _MUTATING:
            origin = headers.get("origin")
            if origin is not None and not _same_origin(origin, host):
                detail = f"a request from {origin!r} may not change this server's jobs"
                await _refuse(403, "Cross-origin request refused", detail)(scope, receive, send)
                return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        if method not in _MUTATING:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await self._too_large(scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is over the server's limit of {self.max_body:,} bytes"
        await _refuse(413, "Request body too large", detail)(scope, receive, send)


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _refuse(status: int, title: str, detail: str) -> JSONResponse:
    """The problem document of a refused request, which is also logged: a refusal here
    is most often someone probing the API, and the operator should see it."""
    _log.warning("refused a request (%d %s): %s", status, title, detail)
    response = problem(status, title, detail)
    if status == 413:
        response.headers["Connection"] = "close"  # the rest of the body is not read
    return response
