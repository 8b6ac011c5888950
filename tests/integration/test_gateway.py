"""The gateway against echo upstreams: routing, headers, body limits, 502/504, /internal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from yarl import URL

from libs.platform.config import Settings
from libs.platform.server import start_service
from services.gateway.app import build
from services.gateway.routes import ROUTES, route_for
from tests.support.stack import free_port


def echo_app(name: str) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await asyncio.sleep(2)
        if request.path.endswith("/redirect"):
            resp = web.Response(status=302, headers={"Location": "https://elsewhere.example/"})
            resp.set_cookie("sid", "1", httponly=True)
            resp.set_cookie("other", "2")
            return resp
        body = await request.read()
        return web.json_response(
            {
                "service": name,
                "path": request.path,
                "raw_path": request.raw_path,
                "method": request.method,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body_len": len(body),
            },
            headers={"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "X-Upstream": name},
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@dataclass
class Gw:
    base: str
    settings: Settings


@pytest.fixture(scope="module")
async def gw(settings: Settings) -> AsyncIterator[Gw]:
    runners = []
    ports = {}
    for name in ("authz", "token", "account"):
        runner = web.AppRunner(echo_app(name))
        await runner.setup()
        ports[name] = free_port()
        await web.TCPSite(runner, "127.0.0.1", ports[name]).start()
        runners.append(runner)
    gw_settings = settings.model_copy(
        update={
            "gateway_port": free_port(),
            "authz_url": f"http://127.0.0.1:{ports['authz']}",
            "token_url": f"http://127.0.0.1:{ports['token']}",
            "account_url": f"http://127.0.0.1:{ports['account']}",
            "max_body_bytes": 64 * 1024,
            "upstream_timeout_seconds": 0.5,
        }
    )
    runner = web.AppRunner(build(gw_settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", gw_settings.gateway_port).start()
    runners.append(runner)
    yield Gw(f"http://127.0.0.1:{gw_settings.gateway_port}", gw_settings)
    for r in reversed(runners):
        await r.cleanup()


@pytest.mark.parametrize(("prefix", "service"), sorted(ROUTES.items()))
async def test_every_prefix_routes_to_its_service(gw: Gw, http, prefix, service) -> None:
    for path in (prefix, prefix + "/sub/path"):
        async with http.get(gw.base + path + "?a=1&b=%20") as r:
            got = await r.json()
        assert r.status == 200
        assert got["service"] == service, path
        assert got["path"] == path and got["raw_path"] == path + "?a=1&b=%20"


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/user", "account"),
        ("/user/topup", "account"),
        ("/user/authorizations", "authz"),
        ("/user/authorizations/x", "authz"),
        ("/users", None),
        ("/api/oauth2/tokenx", None),
        ("/api/oauth2/", None),
        ("/.well-known/openid-configuration", "token"),
        ("/internal/quota/consume", None),
        ("/internal", None),
        ("/nope", None),
    ],
)
def test_route_table(path, service) -> None:
    assert route_for(path) == service


async def test_unknown_path_is_404(gw: Gw, http) -> None:
    async with http.get(gw.base + "/api/nope") as r:
        assert r.status == 404
        assert (await r.json())["success"] is False
    async with http.get(gw.base + "/api/oauth2/nope") as r:
        assert r.status == 404
        assert (await r.json())["error"] == "not_found"
    async with http.get(gw.base + "/nope") as r:
        assert r.status == 404 and r.content_type == "text/html"


@pytest.mark.parametrize(
    "raw",
    [
        "/internal/quota/consume",
        "/internal/quota/credit",
        "/internal",
        "/api/oauth_apps/../../internal/quota/consume",
        "/user/..%2f..%2finternal/quota/consume",
        "/user/%2e%2e/internal/quota/consume",
        "/user/%2E%2E/%2E%2E/internal/quota/consume",
        "//internal/quota/consume",
        "/user/..\\internal",
    ],
)
async def test_internal_is_never_reachable(gw: Gw, http, raw) -> None:
    for method in ("GET", "POST"):
        async with http.request(method, URL(gw.base + raw, encoded=True)) as r:
            assert r.status in (400, 404), raw
            text = await r.text()
            assert '"service"' not in text


async def test_request_id_is_propagated_and_echoed(gw: Gw, http) -> None:
    async with http.get(gw.base + "/api/oauth2/token", headers={"X-Request-Id": "req-123.abc"}) as r:
        got = await r.json()
    assert got["headers"]["x-request-id"] == "req-123.abc"
    assert r.headers["X-Request-Id"] == "req-123.abc"
    # a missing or hostile id is replaced by a fresh one
    for bad in (None, "bad id with spaces", "x" * 200, "<script>"):
        headers = {"X-Request-Id": bad} if bad else {}
        async with http.get(gw.base + "/api/oauth2/token", headers=headers) as r:
            got = await r.json()
        rid = r.headers["X-Request-Id"]
        assert rid != bad and len(rid) == 32
        assert got["headers"]["x-request-id"] == rid


async def test_forwarded_headers_and_hop_by_hop(gw: Gw, http) -> None:
    headers = {
        "X-Forwarded-For": "6.6.6.6",
        "Connection": "keep-alive, X-Drop-Me",
        "X-Drop-Me": "1",
        "Proxy-Authorization": "Basic x",
        "Authorization": "Bearer keep-me",
    }
    async with http.get(gw.base + "/api/oauth2/userinfo", headers=headers) as r:
        got = await r.json()
        resp_headers = r.headers
    h = got["headers"]
    assert h["x-forwarded-for"] == "127.0.0.1"  # a client cannot spoof it (no trusted proxy configured)
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"].startswith("127.0.0.1:")
    assert h["authorization"] == "Bearer keep-me"
    assert "x-drop-me" not in h and "proxy-authorization" not in h
    # and in the response: headers named in Connection are dropped, others pass
    assert "X-Secret-Hop" not in resp_headers
    assert resp_headers["X-Upstream"] == "account"
    assert resp_headers["X-Content-Type-Options"] == "nosniff"
    assert resp_headers["Server"] == "oauth-platform"  # no server software version is disclosed


async def test_redirects_and_cookies_pass_through(gw: Gw, http) -> None:
    async with http.get(gw.base + "/login/redirect", allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "https://elsewhere.example/"
        assert len(r.headers.getall("Set-Cookie")) == 2


async def test_body_is_streamed_and_limited(gw: Gw, http) -> None:
    async with http.post(gw.base + "/api/oauth_apps", data=b"x" * 60_000) as r:
        assert r.status == 200 and (await r.json())["body_len"] == 60_000
    async with http.post(gw.base + "/api/oauth_apps", data=b"x" * 70_000) as r:
        assert r.status == 413
        assert (await r.json())["success"] is False

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 10_000

    async with http.post(gw.base + "/api/oauth2/token", data=chunks()) as r:
        assert r.status == 413
        assert (await r.json())["error"] == "request_too_large"


async def test_small_bodies_are_forwarded_whole(gw: Gw, http) -> None:
    """Known-length bodies up to SMALL_BODY skip the streaming path, both ways; HEAD stays bodiless."""
    for size in (1, 100, 16 * 1024, 16 * 1024 + 1):
        async with http.post(gw.base + "/api/oauth2/token", data=b"z" * size) as r:
            assert r.status == 200
            raw = await r.read()
            assert int(r.headers["Content-Length"]) == len(raw)
            assert json.loads(raw)["body_len"] == size
            assert r.headers["Content-Type"].startswith("application/json")
    async with http.head(gw.base + "/api/oauth2/userinfo") as r:
        assert r.status == 200
        assert await r.read() == b""


async def test_slow_upstream_is_504(gw: Gw, http) -> None:
    # /slow is not a routed prefix, so reach it through a routed one on an echo app that sleeps
    async with http.get(gw.base + "/consent") as r:
        assert r.status == 200
    gw_settings = gw.settings
    slow = web.Application()

    async def sleepy(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    slow.router.add_get("/api/oauth2/token", sleepy)
    runner = web.AppRunner(slow)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    s2 = gw_settings.model_copy(update={"token_url": f"http://127.0.0.1:{port}", "gateway_port": free_port()})
    gw2 = web.AppRunner(build(s2))
    await gw2.setup()
    await web.TCPSite(gw2, "127.0.0.1", s2.gateway_port).start()
    try:
        async with http.get(f"http://127.0.0.1:{s2.gateway_port}/api/oauth2/token") as r:
            assert r.status == 504
            body = await r.json()
            assert body["error"] == "server_error" and "did not answer" in body["error_description"]
    finally:
        await gw2.cleanup()
        await runner.cleanup()


async def test_service_down_is_502(settings: Settings, http) -> None:
    dead = free_port()
    s = settings.model_copy(
        update={
            "gateway_port": free_port(),
            "account_url": f"http://127.0.0.1:{dead}",
            "authz_url": f"http://127.0.0.1:{dead}",
            "gateway_admin_port": free_port(),
        }
    )
    runner = await start_service("gateway", build(s), s, host="127.0.0.1")
    base = f"http://127.0.0.1:{s.gateway_port}"
    try:
        async with http.get(base + "/api/oauth_apps") as r:
            assert r.status == 502
            body = await r.json()
            assert body["success"] is False and "account service is unavailable" in body["message"]
        async with http.get(base + "/login") as r:
            assert r.status == 502 and r.content_type == "text/html"
        async with http.get(f"http://127.0.0.1:{s.gateway_admin_port}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"]["account"] == "down"
        async with http.get(base + "/healthz") as r:
            assert r.status == 200
    finally:
        await runner.cleanup()


async def test_keepalive_connections_are_reused(gw: Gw, http) -> None:
    seen = set()
    for _ in range(20):
        async with http.get(gw.base + "/api/oauth2/jwks") as r:
            got = await r.json()
            seen.add(got["headers"].get("x-forwarded-for"))
    assert seen == {"127.0.0.1"}


async def test_real_stack_routes_through_gateway(stack, http) -> None:
    for service in ("authz", "token", "account"):
        async with http.get(f"{stack.url_of(service)}/healthz") as r:
            assert (await r.json())["service"] == service
    async with http.get(f"{stack.admin_url_of('gateway')}/readyz") as r:
        assert r.status == 200, await r.text()
    async with http.get(f"{stack.base}/api/oauth_apps") as r:
        assert r.status == 401  # answered by the account service
    async with http.post(f"{stack.base}/internal/quota/consume", json={}) as r:
        assert r.status == 404


async def test_metrics_report_tokens_caches_and_requests(stack, http, db, settings) -> None:
    """/metrics on the services carries the request, token and cache metrics."""
    from tests.support.codes import make_client, obtain_tokens

    app = await make_client(db, settings)
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    async with http.get(
        f"{stack.base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ) as r:
        assert r.status == 200
    async with http.get(f"{stack.url_of('token')}/metrics") as r:
        text = await r.text()
    assert r.status == 200
    assert 'oauth_tokens_issued_total{grant_type="authorization_code"}' in text
    assert 'http_requests_total{method="POST",route="/api/oauth2/token",service="token",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text
    async with http.get(f"{stack.url_of('account')}/metrics") as r:
        text = await r.text()
    assert 'cache_entries{cache="users"}' in text and 'cache_hits_total{cache="access_tokens"}' in text
    async with http.get(f"{stack.admin_url_of('gateway')}/metrics") as r:
        assert "http_requests_total" in await r.text()  # the gateway's own, on its admin port
