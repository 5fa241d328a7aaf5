"""Who may use the server: an access token and the Origin check, applied to HTTP and WebSockets alike.

:class:`AccessGuard` is a pure ASGI middleware in front of the whole application. With a token set, every
request except ``/``, ``/static/*`` and ``/health`` must carry it, as the query parameter ``token=`` or the
header ``Authorization: Bearer <token>``; otherwise HTTP answers 401 and a WebSocket gets the ``error``
message and close code 1008. A WebSocket, or an HTTP request other than GET/HEAD/OPTIONS, that carries an
``Origin`` header must come from the server's own origin or one of the allowed ones (403 / 1008); requests
without ``Origin`` (non-browser clients) pass when the token is right.

Without a token (a loopback server), the Origin check alone would trust the ``Host`` header, which a
DNS-rebinding page controls (its own name, now resolving to 127.0.0.1, is then the "server's own origin"):
so every request's ``Host`` must name an address the server listens on (loopback names included) or one
allowed with ``--allow-host`` (403 / 1008 otherwise).
"""
from __future__ import annotations

import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

ENV_VAR = "MUSETALK_TOKEN"
OPEN_PATHS = ("/", "/health")
OPEN_PREFIXES = ("/static/",)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
POLICY_VIOLATION = 1008
MAX_CLOSE_REASON = 123  # bytes a WebSocket close frame's reason may hold
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class AccessPolicy:
    """``token``: required of every non-open request when set. ``allow_origins``: origins allowed besides the
    server's own (``scheme://host[:port]``; ``*`` allows any). ``hosts``: without a token, the host names
    (lower case, no port) a request's ``Host`` may give (None: any; see :func:`served_hosts`)."""

    token: str | None = None
    allow_origins: tuple[str, ...] = ()
    hosts: tuple[str, ...] | None = None

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(HTTP status, one-line reason) when the request in ``scope`` is refused, else None."""
        headers = Headers(scope=scope)
        if self.token and not _is_open(scope["path"]) and not self._has_token(scope, headers):
            return 401, "missing or wrong token: add ?token=<token> or the header 'Authorization: Bearer <token>'"
        host = headers.get("host", "")
        if not self.token and self.hosts is not None and host_name(host) not in self.hosts:
            return 403, (f"host {host[:60]} not allowed: open the page at an address the server listens on "
                         f"({', '.join(self.hosts[:2])}) or add --allow-host")
        origin = headers.get("origin")
        checks_origin = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if checks_origin and origin is not None and not self._origin_allowed(origin, scope, headers):
            return 403, f"origin {origin[:60]} not allowed: open the page from this server or add --allow-origin"
        return None

    def _has_token(self, scope: Scope, headers: Headers) -> bool:
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given.append(auth[7:].strip())
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given)

    def _origin_allowed(self, origin: str, scope: Scope, headers: Headers) -> bool:
        origin = origin.rstrip("/").lower()
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        own = f"{scheme}://{headers.get('host', '')}".lower()
        allowed = {o.rstrip("/").lower() for o in self.allow_origins}
        return origin == own or origin in allowed or "*" in allowed


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def new_token() -> str:
    """A random URL-safe token (128 bits)."""
    return secrets.token_urlsafe(16)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def host_name(host: str) -> str:
    """The name of a ``Host`` header without its port, lower case: ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def served_hosts(listen_host: str, allowed: Iterable[str] = ()) -> tuple[str, ...]:
    """The host names a server listening on ``listen_host`` answers without a token: that address (and the
    loopback names when it is a loopback one), then ``allowed`` (``--allow-host``)."""
    names = [host_name(listen_host)]
    if is_loopback(listen_host):
        names += LOOPBACK_HOSTS
    names += [host_name(h) for h in allowed]
    return tuple(dict.fromkeys(names))


class AccessGuard:
    """ASGI middleware refusing what :meth:`AccessPolicy.refusal` refuses, before the application sees it."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.policy.refusal(scope) if scope["type"] in ("http", "websocket") else None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal
        log.info("refused %s %s: %s", scope["type"], scope["path"], message)
        if scope["type"] == "http":
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            await JSONResponse({"type": "error", "message": message}, status, headers)(scope, receive, send)
        else:
            await refuse_websocket(receive, send, message, POLICY_VIOLATION)


async def refuse_websocket(receive: Receive, send: Send, message: str, code: int) -> None:
    """Accept the WebSocket handshake, send ``{"type": "error", "message"}``, close with ``code`` and the
    message as reason (cut to what a close frame holds)."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "error", "message": message})})
    reason = message.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")
    await send({"type": "websocket.close", "code": code, "reason": reason})
