"""The HTTP server under every service: aiohttp's, with the protections it lacks.

aiohttp (3.9-3.14) has no knob for these, so a small ``RequestHandler``/``Server`` subclass adds them:

- a request-head deadline: the request line and headers must arrive within HEADER_TIMEOUT_SECONDS
  of the connection opening or of the first byte of a following request (slowloris). aiohttp only
  closes connections idle for ``keepalive_timeout`` and lets a trickled head run on forever;
- a cap on concurrent connections per client address (the gateway: GATEWAY_MAX_CONNECTIONS_PER_IP);
  the connection over the cap gets a short 429 and is closed before anything is parsed;
- errors raised before the application sees the request (a header line over aiohttp's 8190-byte
  limit, a malformed request line) answered with a short JSON body that echoes nothing of the
  request, logged as one line. aiohttp's own answer is text/plain echoing the start of the offending
  line (part of a credential, for an oversized Authorization header) and logs a traceback.

Body deadlines are the gateway's (services/gateway/app.py): only it reads bodies from the internet.
The subclasses read a few of aiohttp's private attributes (``_waiter``, ``_messages``,
``_request_count``, ``Server._kwargs``); tests/integration/test_gateway_limits.py fails if an
aiohttp upgrade changes them. ``start_service`` wires it all up, with the admin port of a public service (``run_service`` and the
test stack both use it, so the tests run the production server).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from prometheus_client import Counter

from .config import Settings

log = logging.getLogger("oauth.server")
# Under attack these happen by the thousand: counted here, logged at DEBUG (oversize headers and
# malformed requests, rarer and worth a look, log one WARNING line each).
CUT = Counter("http_connections_cut_total", "Connections refused or closed by the server's guards", ["reason"])

# aiohttp's limits on one request line / header field (its defaults, stated here for the message).
MAX_LINE = 8190


class GuardedRequestHandler(RequestHandler):
    """One connection: aiohttp's protocol plus the request-head deadline and clean early errors."""

    __slots__ = ("_head_timeout", "_head_timer")

    def __init__(self, manager: GuardedServer, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if isinstance(manager, GuardedServer) and not manager.admit(self, transport):
            transport.write(_raw_refusal())  # type: ignore[attr-defined]
            self.force_close()
            return
        self._arm_head_timer()  # the first request's head must arrive in time too

    def data_received(self, data: bytes) -> None:
        # Bytes arriving while the handler waits for a request start a new request head; bytes
        # arriving while a request is handled are its body (the gateway's body deadline) or a
        # pipelined head (bounded by the keep-alive timer once the response is out).
        idle = self._waiter is not None and not self._waiter.done() and not self._messages
        super().data_received(data)
        if self._messages:
            self._disarm_head_timer()
        elif idle and self._head_timer is None:
            self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self._loop.call_later(self._head_timeout, self._head_deadline)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline(self) -> None:
        self._head_timer = None
        waiting = self._waiter is not None and not self._waiter.done()
        if not self._messages and (waiting or self._request_count == 0):
            CUT.labels("head_timeout").inc()
            log.debug("request head not received in time; connection closed", extra={"peer": _peer(self)})
            self.force_close()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """Errors the application never saw: a request aiohttp could not parse, or a handler failure
        that escaped every middleware. RFC 6749 5.2-style JSON, nothing of the request echoed back."""
        if status >= 500:
            log.error("request failed outside the application", exc_info=exc)
            description = "The request timed out" if status == 504 else "Internal error"
        elif isinstance(exc, LineTooLong):
            # RFC 6585 section 5: 431 Request Header Fields Too Large.
            CUT.labels("header_too_large").inc()
            log.warning("request header too large", extra={"peer": _peer(self), "limit": MAX_LINE})
            status, description = 431, f"A request line or header is longer than {MAX_LINE} bytes"
        else:
            CUT.labels("malformed").inc()
            # Like aiohttp: a bad method is usually TLS or a scanner talking to a plain HTTP port.
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
            log.log(level, "malformed request", extra={"peer": _peer(self), "error": type(exc).__name__})
            status, description = 400, "Malformed HTTP request"
        resp = web.Response(
            body=orjson.dumps({"error": "invalid_request", "error_description": description}),
            status=status,
            content_type="application/json",
            # Set here: the app's response hook (which names the server the same way) never runs
            # for a request it did not route.
            headers={"Cache-Control": "no-store", "Server": "oauth-platform", "X-Content-Type-Options": "nosniff"},
        )
        resp.force_close()
        return resp


class GuardedServer(Server):
    """aiohttp's connection factory, making guarded handlers and counting connections per address."""

    def __init__(self, *args: Any, head_timeout: float, max_per_ip: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = head_timeout
        self._max_per_ip = max_per_ip
        self._per_ip: dict[str, int] = {}
        self._counted: dict[RequestHandler, str] = {}

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, head_timeout=self._head_timeout, **self._kwargs)

    def admit(self, handler: RequestHandler, transport: asyncio.BaseTransport) -> bool:
        """Count the new connection; False when its address is over the cap."""
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        count = self._per_ip.get(ip, 0) + 1
        self._per_ip[ip] = count
        self._counted[handler] = ip
        if self._max_per_ip and count > self._max_per_ip:
            CUT.labels("connections_per_ip").inc()
            log.debug("too many connections from one address", extra={"peer": ip, "limit": self._max_per_ip})
            return False
        return True

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        ip = self._counted.pop(handler, None)
        if ip is not None:
            left = self._per_ip.get(ip, 1) - 1
            if left > 0:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)
        super().connection_lost(handler, exc)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`GuardedServer` (same arguments, same lifecycle)."""

    def __init__(self, app: web.Application, *, head_timeout: float, max_per_ip: int = 0, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = {"head_timeout": head_timeout, "max_per_ip": max_per_ip}

    async def _make_server(self) -> Server:
        # AppRunner's own server starts and freezes the app; rebuild it as a GuardedServer with the
        # very same handler, request factory and handler arguments (aiohttp has no server-class knob).
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
            **self._guard,  # type: ignore[arg-type]
        )


def _peer(handler: RequestHandler) -> str:
    peer = handler.peername
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _raw_refusal() -> bytes:
    """The whole answer to a connection over the per-address cap (nothing was parsed yet)."""
    body = orjson.dumps({"error": "too_many_requests", "error_description": "Too many connections from your address"})
    head = (
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        f"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _public_handler_args(service: str, settings: Settings) -> dict[str, Any]:
    """aiohttp handler arguments of the public service (the gateway); internal ones keep aiohttp's."""
    if service != "gateway":
        return {"max_per_ip": 0}
    # lingering_time: after an early answer aiohttp reads (and drops) the rest of the body so the
    # client sees the answer rather than a reset; no longer than a body may take anyway.
    return {
        "max_per_ip": settings.gateway_max_connections_per_ip,
        "keepalive_timeout": settings.gateway_keepalive_timeout_seconds,
        "lingering_time": settings.gateway_body_timeout_seconds,
    }


async def start_service(
    service: str,
    app: web.Application,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    shutdown_timeout: float = 60.0,
    reuse_port: bool | None = None,
) -> web.AppRunner:
    """Serve ``app`` on its port (and the admin app on its admin port, if it has one) with the
    guarded server above. Cleaning up the returned runner stops both."""
    from .web import create_admin_app  # web.py's _serve imports this module lazily

    head_timeout = settings.header_timeout_seconds
    runner = GuardedRunner(
        app,
        head_timeout=head_timeout,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        **_public_handler_args(service, settings),
    )
    admin_port = admin_port or settings.admin_port_of(service)
    admin = GuardedRunner(create_admin_app(app), head_timeout=head_timeout) if admin_port else None
    if admin is not None:

        async def stop_admin(_: web.Application) -> None:
            await admin.cleanup()

        app.on_cleanup.append(stop_admin)
    await runner.setup()
    host = host or settings.bind_host
    await web.TCPSite(runner, host, port or settings.port_of(service), reuse_port=reuse_port).start()
    if admin is not None and admin_port:
        await admin.setup()
        await web.TCPSite(admin, settings.admin_bind_host or host, admin_port, reuse_port=reuse_port).start()
    return runner
