"""The gateway's lean upstream client (services/gateway/upstream.py) against real upstreams: an
aiohttp app, and raw asyncio servers for what a well-behaved one never does (close mid-exchange,
answer malformed, trickle). Through the gateway: what is relayed; directly: pooling and retries."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from libs.platform.config import Settings
from libs.platform.web import REQUEST_ID, SETTINGS
from services.gateway import upstream
from services.gateway.app import _PLAIN_TARGET, UPSTREAMS, _forward_headers, _lean_message, build
from services.gateway.upstream import (
    Exchange,
    Upstream,
    UpstreamBroken,
    UpstreamUnavailable,
)
from tests.support.stack import free_port

BIG = 200 * 1024
HUGE = bytes(range(256)) * 8 * 1024  # 2 MiB: past HIGH_WATER, so reading from the upstream pauses


@dataclass
class Seen:
    """What the aiohttp upstream saw: the client port of each request, their headers."""

    ports: list[int] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def upstream_app(seen: Seen) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        seen.ports.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        seen.headers.append({k.lower(): v for k, v in request.headers.items()})
        body = await request.read()
        kind = request.path.rsplit("/", 1)[-1]
        if kind == "cookies":
            resp = web.Response(text="ok", headers=[("X-Dup", "1"), ("X-Dup", "2")])  # type: ignore[arg-type]
            resp.set_cookie("a", "1", httponly=True)
            resp.set_cookie("b", "2")
            resp.set_cookie("c", "3", secure=True)
            return resp
        if kind == "empty":
            return web.Response(status=204)
        if kind == "close":
            resp = web.Response(text="bye")
            resp.force_close()
            return resp
        if kind == "big":
            return web.Response(body=b"b" * BIG)
        if kind == "huge":
            return web.Response(body=HUGE)
        if kind == "chunked":
            return await _chunked(request)
        if kind == "gzip":
            return web.Response(body=gzip.compress(b"{}"), headers={"Content-Encoding": "gzip"})
        if kind == "slow":
            await asyncio.sleep(1.0)
        return web.json_response({"method": request.method, "body": body.decode(), "path": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(5):
        await resp.write(b"%d" % i * 1000)
    await resp.write_eof()
    return resp


@dataclass
class Env:
    base: str  # the gateway
    upstream_base: str  # the aiohttp upstream
    seen: Seen
    gateway: web.Application


@pytest.fixture(scope="module")
async def env(settings: Settings) -> AsyncIterator[Env]:
    seen = Seen()
    up = web.AppRunner(upstream_app(seen))
    await up.setup()
    port = free_port()
    await web.TCPSite(up, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    s = settings.model_copy(
        update={
            "gateway_port": free_port(),
            "authz_url": base,
            "token_url": base,
            "account_url": base,
            "upstream_timeout_seconds": 0.5,
        }
    )
    app = build(s)
    gw = web.AppRunner(app)
    await gw.setup()
    await web.TCPSite(gw, "127.0.0.1", s.gateway_port).start()
    yield Env(f"http://127.0.0.1:{s.gateway_port}", base, seen, app)
    await gw.cleanup()
    await up.cleanup()


def pool(base: str, size: int = 10, connect: float = 1.0, read: float = 0.5) -> Upstream:
    return Upstream(base, asyncio.Semaphore(size), connect, read)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def post(path: str, body: bytes = b"grant_type=x") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)


async def test_keepalive_connections_are_reused(env: Env) -> None:
    up = pool(env.upstream_base)
    env.seen.ports.clear()
    for _ in range(5):
        async with Exchange(up, "POST", post("/api/oauth2/token")) as answer:
            assert answer.status == 200 and answer.small
            assert b'"body": "grant_type=x"' in answer.body
    assert len(set(env.seen.ports)) == 1 and len(up.idle) == 1
    up.close()


async def test_connection_close_is_never_reused(env: Env) -> None:
    up = pool(env.upstream_base)
    env.seen.ports.clear()
    for _ in range(3):
        async with Exchange(up, "GET", get("/x/close")) as answer:
            assert answer.status == 200 and answer.body == b"bye"
    assert len(set(env.seen.ports)) == 3 and up.idle == []


async def test_a_connection_the_upstream_closed_while_idle_is_replaced(settings: Settings) -> None:
    seen = Seen()
    runner = web.AppRunner(upstream_app(seen), keepalive_timeout=0.05)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    up = pool(f"http://127.0.0.1:{port}")
    try:
        for _ in range(2):
            async with Exchange(up, "POST", post("/t")) as answer:
                assert answer.status == 200
            await asyncio.sleep(0.3)  # the upstream's keep-alive timeout closes it
            assert up.idle == []  # dropped from the pool as soon as it closed
        assert len(set(seen.ports)) == 2
    finally:
        up.close()
        await runner.cleanup()


RawHandler = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: RawHandler) -> tuple[asyncio.Server, str, list[int]]:
    """A TCP server calling ``handler(n, reader, writer)`` per request head read (n counts them)."""
    count = [0]

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
                )
                await reader.readexactly(length)
                count[0] += 1
                await handler(count[0], reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", count


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _answer_once_then_drop(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The first request is answered keep-alive; the second one's connection closes unanswered
    (the upstream's keep-alive timeout racing our write); later ones are answered again."""
    if n == 2:
        writer.close()
    else:
        writer.write(OK)


async def test_a_safe_request_is_retried_once_on_a_fresh_connection() -> None:
    server, base, count = await raw_server(_answer_once_then_drop)
    up = pool(base)
    try:
        async with Exchange(up, "GET", get("/a")) as answer:
            assert answer.body == b"ok"
        async with Exchange(up, "GET", get("/a")) as answer:  # reused, dropped, retried fresh
            assert answer.body == b"ok"
        assert count[0] == 3
    finally:
        up.close()
        server.close()


async def test_a_post_that_may_have_reached_the_upstream_is_never_retried() -> None:
    server, base, count = await raw_server(_answer_once_then_drop)
    up = pool(base)
    try:
        async with Exchange(up, "POST", post("/t")) as answer:
            assert answer.body == b"ok"
        with pytest.raises(UpstreamUnavailable):
            async with Exchange(up, "POST", post("/t")):
                pass
        assert count[0] == 2  # seen once: not sent again
    finally:
        up.close()
        server.close()


async def test_an_answer_cut_short_or_malformed_is_broken_and_not_reused() -> None:
    async def bad(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
            writer.close()
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBad Header\r\n\r\nok")

    server, base, _ = await raw_server(bad)
    up = pool(base)
    try:
        for _ in range(2):
            with pytest.raises(UpstreamBroken):
                async with Exchange(up, "GET", get("/a")):
                    pass
        assert up.idle == [] and not up.slots.locked()
    finally:
        up.close()
        server.close()


async def test_an_informational_answer_is_skipped() -> None:
    async def early_hints(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK)

    server, base, _ = await raw_server(early_hints)
    up = pool(base)
    try:
        for _ in range(2):
            async with Exchange(up, "GET", get("/a")) as answer:
                assert answer.status == 200 and answer.body == b"ok"
                assert [name for name, _ in answer.headers] == ["Content-Length"]
        assert len(up.idle) == 1
    finally:
        up.close()
        server.close()


async def test_silence_times_out_but_a_trickle_does_not() -> None:
    async def trickle(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            await asyncio.sleep(0.6)  # silent past the read timeout
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        for b in (b"a", b"b", b"c", b"d"):
            await asyncio.sleep(0.15)  # 0.6 s in all, never 0.3 s silent
            writer.write(b)
            await writer.drain()

    server, base, _ = await raw_server(trickle)
    up = pool(base, read=0.3)
    try:
        with pytest.raises(TimeoutError):
            async with Exchange(up, "GET", get("/a")):
                pass
        async with Exchange(up, "GET", get("/a")) as answer:
            assert answer.body == b"abcd"
    finally:
        up.close()
        server.close()


async def test_no_slot_within_the_connect_timeout_is_a_timeout(env: Env) -> None:
    up = pool(env.upstream_base, size=1, connect=0.2)
    held = Exchange(up, "GET", get("/x/big"))
    await held.__aenter__()
    try:
        with pytest.raises(TimeoutError):
            async with Exchange(up, "GET", get("/a")):
                pass
    finally:
        await held.__aexit__(None, None, None)
    async with Exchange(up, "GET", get("/a")) as answer:  # the slot is back
        assert answer.status == 200
    up.close()


async def test_a_connect_that_hangs_is_a_timeout_not_unavailable() -> None:
    """TimeoutError (504), as aiohttp's ConnectionTimeoutError was, though it is an OSError too."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = [socket.socket() for _ in range(3)]  # fill its accept queue: further SYNs are dropped
    for f in fillers:
        f.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            f.connect(listener.getsockname())
    await asyncio.sleep(0.1)
    up = pool(f"http://127.0.0.1:{listener.getsockname()[1]}", connect=0.3)
    try:
        with pytest.raises(TimeoutError) as caught:
            async with Exchange(up, "GET", get("/a")):
                pass
        assert not isinstance(caught.value, UpstreamUnavailable) and not up.slots.locked()
    finally:
        for f in [*fillers, listener]:
            f.close()


async def test_nothing_listening_is_unavailable() -> None:
    up = pool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamUnavailable):
        async with Exchange(up, "GET", get("/a")):
            pass
    assert not up.slots.locked()


# -- through the gateway ---------------------------------------------------------------------------


async def test_every_set_cookie_and_duplicate_header_is_relayed(env: Env, http) -> None:
    async with http.get(env.base + "/api/oauth2/userinfo/cookies") as r:
        assert r.status == 200 and await r.text() == "ok"
        assert len(r.headers.getall("Set-Cookie")) == 3
        assert r.headers.getall("X-Dup") == ["1", "2"]


async def test_204_and_head_have_no_body(env: Env, http) -> None:
    async with http.get(env.base + "/api/oauth2/userinfo/empty") as r:
        assert r.status == 204 and await r.read() == b""
    async with http.head(env.base + "/api/oauth2/userinfo/big") as r:  # HEAD: aiohttp's client
        assert r.status == 200 and await r.read() == b""
        assert r.headers["Content-Length"] == str(BIG)


@pytest.mark.parametrize(
    ("kind", "expected"), [("big", b"b" * BIG), ("chunked", b"".join(b"%d" % i * 1000 for i in range(5)))]
)
async def test_big_and_chunked_answers_are_streamed(env: Env, http, kind: str, expected: bytes) -> None:
    env.seen.ports.clear()
    for _ in range(2):  # and the connection is reused after a streamed answer
        async with http.get(env.base + f"/api/oauth2/userinfo/{kind}") as r:
            assert r.status == 200 and await r.read() == expected
    assert len(set(env.seen.ports)) == 1
    assert len(env.gateway[UPSTREAMS]["account"].idle) == 1  # the lean client's pool carried it


async def test_a_slow_reader_gets_all_of_a_huge_answer(env: Env, http, monkeypatch) -> None:
    resumed = []
    real_resume = upstream.Connection._resume

    def resume(self: upstream.Connection) -> None:
        resumed.append(self._buffered)
        real_resume(self)

    monkeypatch.setattr(upstream, "HIGH_WATER", 64 * 1024)
    monkeypatch.setattr(upstream, "LOW_WATER", 16 * 1024)
    monkeypatch.setattr(upstream.Connection, "_resume", resume)
    async with http.get(env.base + "/api/oauth2/userinfo/huge") as r:
        got = bytearray()
        while chunk := await r.content.read(256 * 1024):
            got += chunk
            await asyncio.sleep(0.02)
    assert bytes(got) == HUGE
    assert resumed  # reading from the upstream paused, and resumed as the client caught up


async def test_content_encoding_passes_through(env: Env, http) -> None:
    async with http.get(env.base + "/api/oauth2/userinfo/gzip", auto_decompress=False) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await r.read()) == b"{}"


async def test_our_content_length_is_sent_and_transfer_encoding_never(env: Env, http) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"grant_type=client_credentials"

    env.seen.headers.clear()
    async with http.post(env.base + "/api/oauth2/token", data=b"grant_type=x") as r:
        assert (await r.json())["body"] == "grant_type=x"
    async with http.post(env.base + "/api/oauth2/token") as r:
        assert r.status == 200
    sent = env.seen.headers
    assert sent[0]["content-length"] == "12" and sent[1]["content-length"] == "0"
    assert all("transfer-encoding" not in h and h["accept"] == "*/*" for h in sent)


async def test_upstream_timeout_is_504_through_the_gateway(env: Env, http) -> None:
    async with http.post(env.base + "/api/oauth2/token/slow", data=b"x") as r:
        assert r.status == 504
    async with http.post(env.base + "/api/oauth2/token", data=b"x") as r:  # the pool is fine after it
        assert r.status == 200


async def test_a_field_value_with_cr_or_lf_is_never_forwarded(settings: Settings) -> None:
    app = web.Application()
    app[SETTINGS] = settings
    for bad in ("a\r\nX-Smuggled: 1", "a\nb", "a\rb", "a\0b"):
        request = make_mocked_request("GET", "/api/oauth2/userinfo", headers={"X-Evil": bad}, app=app)
        request[REQUEST_ID] = "r1"
        up = pool("http://127.0.0.1:1")
        with pytest.raises(web.HTTPBadRequest):
            _lean_message(request, up, _forward_headers(request, settings), None)


def test_a_plain_target_is_what_aiohttps_client_would_send() -> None:
    """The lean client forwards a target matching _PLAIN_TARGET as is: exactly what aiohttp's client
    (yarl) sent for it before; every other target still goes through aiohttp's client."""
    rng = random.Random(17)
    alphabet = "ABCxyz019-._~!$&'()*+,;=:@/?%é "
    plain = 0
    for _ in range(20_000):
        target = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        dot_segments = {".", ".."} & set(target.split("?")[0].split("/"))  # refused with 400 before
        if _PLAIN_TARGET(target) is not None and not dot_segments:
            plain += 1
            assert URL("http://127.0.0.1:1" + target).raw_path_qs == target, target
    assert plain > 5_000
    for other in ("/a%41", "/caf\u00e9", "/x?", "http://elsewhere/x", "*", "/a b"):
        assert _PLAIN_TARGET(other) is None
