"""The gateway's lean upstream client (docs/architecture.md "The gateway's upstream client";
docs/performance.md, round two).

Nearly every proxied exchange is small: a token, introspection or API request with no body or a
few hundred bytes, answered with a few hundred bytes of JSON. For those the gateway does not use
aiohttp's general-purpose client: it keeps, per upstream, a LIFO pool of keep-alive HTTP/1.1
connections (plain asyncio protocols), writes the request head and body in one write, and parses
the answer with httptools (llhttp, the C parser of Node.js; uvicorn's too). Streamed uploads, HEAD,
odd request targets and https upstreams still go through aiohttp's client (app.py).

The rules (RFC 9112 section 9 "Connection Management", RFC 9110 9.2.2 "Idempotent Methods"):

- a connection is reused only after its answer was read to the end, when the upstream neither said
  ``Connection: close`` nor answered HTTP/1.0, and nothing else arrived on it; any error, timeout or
  cancellation (the client went away mid-answer) closes it;
- a pooled connection found closed before anything was written is dropped and another one taken;
- a request is tried again (once, on a fresh connection) only when its method is safe (GET,
  OPTIONS) and the reused connection closed before any byte of an answer, as aiohttp's client did;
  never a POST (a token request is not idempotent);
- the timeouts are the ones aiohttp's client had: UPSTREAM_CONNECT_TIMEOUT_SECONDS for a pool slot
  and the connection, UPSTREAM_TIMEOUT_SECONDS of silence while an answer is awaited (paused
  reading, when the client is slower than the upstream, does not count);
- at most UPSTREAM_POOL_SIZE connections are busy at once; idle ones are closed after IDLE_SECONDS.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import httptools
from yarl import URL

# A body of a known length up to this size is answered whole (app.py relays it in one write).
SMALL_BODY = 16 * 1024
NO_BODY_STATUSES = frozenset({204, 304})
SAFE_METHODS = frozenset({"GET", "OPTIONS"})  # RFC 9110 9.2.1; HEAD never takes this path
IDLE_SECONDS = 30.0  # below the services' own keep-alive timeout, so they rarely close one under us
MAX_HEAD = 64 * 1024  # an answer's header section larger than this is refused (llhttp sets no limit)
HIGH_WATER = 256 * 1024  # a streamed answer buffered beyond this pauses reading from the upstream
LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """The exchange with the upstream failed (app.py answers 502)."""


class UpstreamUnavailable(UpstreamError):
    """No connection, or it closed before any byte of an answer."""


class UpstreamBroken(UpstreamError):
    """A malformed answer, or one cut short."""


class Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream, one exchange at a time. While an exchange runs it
    holds the answer: ``status``, ``reason``, ``headers`` (decoded as aiohttp decodes them),
    ``content_length``, and either ``body`` (small answers, read whole) or ``chunks()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self.loop = loop
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False
        self.idle_since = 0.0
        self.idle_in: list[Connection] | None = None
        self.body = b""
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.content_length: int | None = None
        self.connection: list[str] = []  # the answer's Connection header values
        self.small = self.head_done = self.done = self.keep_alive = self.extra = self.encoded = False
        self.got_bytes = self.paused = self.until_eof = False
        self._head_size = 0
        self._reason = b""
        self._parts: list[bytes] = []
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0

    # -- the exchange, driven by app.py ------------------------------------------------------------

    def send(self, message: bytes) -> None:
        """Write the whole request (head and body) in one write and start the read timeout."""
        self._reset()
        self.busy = True
        self._last_read = self.loop.time()
        self._timer = self.loop.call_at(self._last_read + self.read_timeout, self._check_timeout)
        assert self.transport is not None
        self.transport.write(message)

    async def answer(self) -> None:
        """Wait for the answer's head, and for its whole body when it is small."""
        if not (self.done or (self.head_done and not self.small)) and self.error is None:
            await self._wait()
        if self.error is not None:
            raise self.error

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body of a streamed answer, chunk by chunk (reading resumes as the buffer drains)."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self.paused and self._buffered < LOW_WATER:
                    self._resume()
                yield chunk
            elif self.error is not None:
                raise self.error
            elif self.done:
                return
            else:
                await self._wait()

    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.extra and self.error is None and not self.closed

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.done:
            self.extra = True  # nothing may arrive outside an exchange: never reuse this one
            self.close()
            return
        self.got_bytes = True
        self._last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(UpstreamBroken(f"malformed answer: {type(exc).__name__}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.idle_in is not None and self in self.idle_in:
            self.idle_in.remove(self)
        if not self.busy or self.done:
            return
        if self.head_done and self.until_eof:
            self.done = True  # neither a length nor chunked: the answer ends with the connection
            self._wake()
        elif self.got_bytes:
            self._fail(UpstreamBroken("the upstream closed the connection mid-answer"))
        else:
            self._fail(UpstreamUnavailable("the upstream closed the connection before answering"))

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True

    def on_status(self, data: bytes) -> None:
        self._reason += data

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value)
        if self._head_size > MAX_HEAD:
            raise UpstreamBroken("answer header section too large")
        self.headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # informational (RFC 9110 15.2): skipped, the final answer follows
        self.reason = self._reason.decode("utf-8", "surrogateescape")
        self._read_framing()
        self.head_done = True
        if not self.small:
            self._wake()

    def _read_framing(self) -> None:
        """Content-Length, and whether the body is small enough to read whole (app.py's policy: a
        known length up to SMALL_BODY, not encoded, on a status that has a body)."""
        chunked = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == "content-length" and value.strip().isdigit():
                self.content_length = int(value)
            elif lower == "content-encoding":
                self.encoded = True
            elif lower == "transfer-encoding":
                chunked = True
            elif lower == "connection":
                self.connection.append(value)
        no_body = self.status in NO_BODY_STATUSES
        self.until_eof = self.content_length is None and not chunked and not no_body
        length = self.content_length
        self.small = length is not None and length <= SMALL_BODY and not self.encoded and not no_body

    def on_body(self, data: bytes) -> None:
        if self.small:
            self._parts.append(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
            self._stop_timer()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200:
            self.headers, self._reason, self._head_size = [], b"", 0
            return
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()
        self._stop_timer()
        if self.small:
            self.body = b"".join(self._parts)
        self._wake()

    # -- internals -------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None and not self.done:  # after a complete answer: just not reused
            self.error = exc
        self.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _resume(self) -> None:
        self.paused = False
        self._last_read = self.loop.time()
        self._timer = self.loop.call_at(self._last_read + self.read_timeout, self._check_timeout)
        if self.transport is not None:
            self.transport.resume_reading()

    def _check_timeout(self) -> None:
        """aiohttp's sock_read: UPSTREAM_TIMEOUT_SECONDS without a byte while an answer is due."""
        self._timer = None
        if self.done or self.paused or not self.busy:
            return
        due = self._last_read + self.read_timeout
        if due > self.loop.time():
            self._timer = self.loop.call_at(due, self._check_timeout)
        else:
            self._fail(TimeoutError())


class Upstream:
    """The connection pool to one upstream (``http://host:port``)."""

    def __init__(self, base: str, slots: asyncio.Semaphore, connect_timeout: float, read_timeout: float) -> None:
        url = URL(base)
        if url.scheme != "http" or url.raw_host is None or url.port is None:
            raise ValueError(f"the lean client speaks plain http only: {base}")
        self.host, self.port = url.raw_host, url.port
        self.prefix = url.raw_path.rstrip("/")
        self.host_header = f"Host: {url.host_port_subcomponent}\r\n".encode()
        self.slots = slots
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle: list[Connection] = []

    async def acquire(self, fresh: bool = False) -> tuple[Connection, bool]:
        """A connection (an idle one unless ``fresh``) and whether it was reused; holds a slot.
        Waiting for a slot and connecting share UPSTREAM_CONNECT_TIMEOUT_SECONDS (TimeoutError)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        if self.slots.locked():
            async with asyncio.timeout_at(deadline):
                await self.slots.acquire()
        else:
            await self.slots.acquire()
        try:
            conn = None if fresh else self._idle_connection(loop.time())
            if conn is not None:
                return conn, True
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop, self.read_timeout), self.host, self.port
                )
            return conn, False
        except TimeoutError:  # an OSError too: not "unavailable" but too slow, 504 as before
            self.slots.release()
            raise
        except OSError as exc:
            self.slots.release()
            raise UpstreamUnavailable(f"cannot connect: {type(exc).__name__}") from exc
        except BaseException:
            self.slots.release()
            raise

    def _idle_connection(self, now: float) -> Connection | None:
        """The most recently used idle connection still open and fresh, closing stale ones."""
        while self.idle:
            conn = self.idle.pop()
            conn.idle_in = None
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                if now - conn.idle_since < IDLE_SECONDS:
                    return conn
            conn.close()
        return None

    def release(self, conn: Connection) -> None:
        """Back to the pool if its exchange ended cleanly, else closed; frees the slot."""
        self.slots.release()
        conn.busy = False
        if conn.reusable():
            conn.idle_since = conn.loop.time()
            conn.idle_in = self.idle
            conn.body = b""
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class Exchange:
    """``async with Exchange(upstream, method, message) as conn``: the request sent and the answer's
    head read (whole when small); the connection goes back to the pool or is closed on exit."""

    __slots__ = ("upstream", "method", "message", "conn")

    def __init__(self, upstream: Upstream, method: str, message: bytes) -> None:
        self.upstream = upstream
        self.method = method
        self.message = message
        self.conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        try:
            return await self._send()
        except BaseException:
            if self.conn is not None:
                self.conn.close()
                self.upstream.release(self.conn)
                self.conn = None
            raise

    async def _send(self) -> Connection:
        self.conn, reused = await self.upstream.acquire()
        self.conn.send(self.message)
        try:
            await self.conn.answer()
        except UpstreamUnavailable:
            if not (reused and self.method in SAFE_METHODS):
                raise
            self.upstream.release(self.conn)  # closed, so dropped from the pool
            self.conn = None
            self.conn, _ = await self.upstream.acquire(fresh=True)
            self.conn.send(self.message)
            await self.conn.answer()
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            if exc[0] is not None:
                self.conn.close()
            self.upstream.release(self.conn)
            self.conn = None
