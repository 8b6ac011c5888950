"""CORS at the gateway (docs/architecture.md "Browsers and CORS"): the token, userinfo, top-up and revocation endpoints
(and the public metadata) answer the origins of the apps' registered redirect URIs and no others;
authorize, pages, the developer API and introspection never answer CORS. The origin set is kept in
Redis by the account service (rebuilt on every app change through the developer API)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from libs.oauth.cors import origins_key
from libs.platform.config import Settings
from services.account import cors_origins
from services.gateway import cors
from services.gateway.app import build as build_gateway
from tests.support.factories import make_developer
from tests.support.oauth import make_app
from tests.support.stack import Stack, free_port

TOKEN = "/api/oauth2/token"
USERINFO = "/api/oauth2/userinfo"
TOPUP = "/api/oauth2/topup"
REVOKE = "/api/oauth2/revoke"


def unique_host() -> str:
    return f"spa-{secrets.token_hex(4)}.example"


@pytest.fixture(scope="module")
async def developer(db: asyncpg.Pool, settings: Settings) -> str:
    _, token = await make_developer(db, settings)
    return token


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


async def api(http: aiohttp.ClientSession, stack: Stack, developer: str, method: str, path: str, body=None) -> dict:
    headers = {"Authorization": f"Bearer {developer}"}
    async with http.request(method, f"{stack.base}{path}", json=body, headers=headers) as r:
        answer = await r.json(content_type=None)
        assert r.status == 200, answer
        return answer


async def create_app(http, stack, developer, uris: list[str]) -> dict:
    body = {"name": "SPA", "redirect_uris": uris}
    return (await api(http, stack, developer, "POST", "/api/oauth_apps", body))["data"]


@pytest.fixture(scope="module")
async def spa(stack: Stack, developer: str) -> dict:
    """A registered app with an https origin (mixed case, default port) and a localhost one."""
    host = unique_host()
    async with aiohttp.ClientSession() as http:
        data = await create_app(
            http, stack, developer, [f"https://{host.upper()}:443/callback", "http://localhost:5173/cb"]
        )
    return {"origin": f"https://{host}", "local": "http://localhost:5173", "app": data}


async def preflight(
    http: aiohttp.ClientSession, stack: Stack, path: str, origin: str | None, method: str = "POST", headers: str = ""
) -> tuple[int, Any]:
    h = {"Access-Control-Request-Method": method}
    if origin is not None:
        h["Origin"] = origin
    if headers:
        h["Access-Control-Request-Headers"] = headers
    async with http.options(f"{stack.base}{path}", headers=h) as r:
        await r.read()
        return r.status, r.headers


def assert_no_cors(headers) -> None:
    assert not [h for h in headers if h.lower().startswith("access-control-")], dict(headers)


# --- preflight ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, method, request_headers",
    [
        (TOKEN, "POST", "content-type"),
        (USERINFO, "GET", "authorization"),
        (USERINFO, "POST", "authorization"),
        (TOPUP, "GET", "authorization"),
        (REVOKE, "POST", "content-type"),
        ("/.well-known/openid-configuration", "GET", ""),
        ("/api/oauth2/jwks", "GET", ""),
    ],
)
async def test_preflight_allowed_for_a_registered_origin(stack, http, spa, path, method, request_headers) -> None:
    status, headers = await preflight(http, stack, path, spa["origin"], method, request_headers)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == spa["origin"]
    assert method in [m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "origin" in headers["Vary"].lower()
    assert "Access-Control-Allow-Credentials" not in headers


async def test_preflight_for_the_other_registered_origin(stack, http, spa) -> None:
    status, headers = await preflight(http, stack, USERINFO, spa["local"], "GET", "authorization")
    assert status == 204 and headers["Access-Control-Allow-Origin"] == spa["local"]


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://localhost:5174",  # another port
        "http://127.0.0.1:5173",  # another host name for the same machine
        "null",
        "https://{host}/",
        "https://{host}:443",
        "http://{host}",  # another scheme
        "https://{host}.evil.example",
        "https://evil.example?https://{host}",
        "https://sub.{host}",
    ],
)
async def test_preflight_refused_for_other_origins(stack, http, spa, origin) -> None:
    origin = origin.format(host=spa["origin"].removeprefix("https://"))
    status, headers = await preflight(http, stack, TOKEN, origin)
    assert status == 403
    assert_no_cors(headers)


async def test_preflight_without_origin_is_refused(stack, http) -> None:
    status, headers = await preflight(http, stack, TOKEN, None)
    assert status == 403
    assert_no_cors(headers)


@pytest.mark.parametrize("path, method", [(TOKEN, "GET"), (TOKEN, "DELETE"), (TOPUP, "POST"), (USERINFO, "PUT")])
async def test_preflight_for_a_method_the_endpoint_does_not_take(stack, http, spa, path, method) -> None:
    status, headers = await preflight(http, stack, path, spa["origin"], method)
    assert status == 403
    assert_no_cors(headers)


@pytest.mark.parametrize(
    "path",
    [
        "/api/oauth2/authorize",
        "/api/oauth2/introspect",
        "/api/oauth_apps",
        "/login",
        "/user",
        "/api/oauth2/token/extra",
        "/api/oauth2/userinfo/",
    ],
)
async def test_never_cors_elsewhere(stack, http, spa, path) -> None:
    status, headers = await preflight(http, stack, path, spa["origin"], "GET", "authorization")
    assert status != 204
    assert_no_cors(headers)
    async with http.get(f"{stack.base}{path}", headers={"Origin": spa["origin"]}, allow_redirects=False) as r:
        assert_no_cors(r.headers)


async def test_authorize_never_answers_cors(stack, http, spa) -> None:
    params = {
        "client_id": spa["app"]["client_id"],
        "redirect_uri": spa["app"]["redirect_uris"][0],
        "response_type": "code",
        "state": "s",
        "prompt": "none",
    }
    async with http.get(
        f"{stack.base}/api/oauth2/authorize", params=params, headers={"Origin": spa["origin"]}, allow_redirects=False
    ) as r:
        assert r.status == 302
        assert_no_cors(r.headers)


# --- actual requests ----------------------------------------------------------------------------------
async def test_token_error_is_readable_by_a_registered_origin(stack, http, spa) -> None:
    form = {"grant_type": "authorization_code", "code": "nope", "redirect_uri": "x", "client_id": "client_x"}
    async with http.post(f"{stack.base}{TOKEN}", data=form, headers={"Origin": spa["origin"]}) as r:
        assert r.status == 401
        assert r.headers["Access-Control-Allow-Origin"] == spa["origin"]
        assert "origin" in r.headers["Vary"].lower()
        assert "Access-Control-Allow-Credentials" not in r.headers


async def test_userinfo_exposes_www_authenticate(stack, http, spa) -> None:
    headers = {"Origin": spa["local"], "Authorization": "Bearer nope"}
    async with http.get(f"{stack.base}{USERINFO}", headers=headers) as r:
        assert r.status == 401
        assert r.headers["Access-Control-Allow-Origin"] == spa["local"]
        assert "www-authenticate" in r.headers["Access-Control-Expose-Headers"].lower()


async def test_no_cors_headers_for_another_origin(stack, http) -> None:
    async with http.get(f"{stack.base}{USERINFO}", headers={"Origin": "https://evil.example"}) as r:
        assert r.status in (400, 401)
        assert "Access-Control-Allow-Origin" not in r.headers
        assert "origin" in r.headers["Vary"].lower()  # caches must not reuse it for another origin


async def test_the_whole_exchange_from_a_browser_origin(stack, http, db, settings, redis) -> None:
    """A public client's code exchange and userinfo, as a browser would send them (with Origin)."""
    from tests.support.codes import issue_code, pkce_pair
    from tests.support.factories import make_user

    owner, _ = await make_developer(db, settings)
    host = unique_host()
    redirect = f"https://{host}/cb"
    cid, _ = await make_app(db, settings, owner.id, [redirect], token_endpoint_auth_method="none")
    await cors_origins.rebuild(db, redis, settings)  # make_app bypasses the developer API's hook
    user = await make_user(db)
    verifier, challenge = pkce_pair()
    code = await issue_code(
        db, settings, client_id=cid, user_id=user.id, redirect_uri=redirect, code_challenge=challenge
    )
    origin = f"https://{host}"
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect,
        "client_id": cid,
        "code_verifier": verifier,
    }
    async with http.post(f"{stack.base}{TOKEN}", data=form, headers={"Origin": origin}) as r:
        body = await r.json()
        assert r.status == 200, body
        assert r.headers["Access-Control-Allow-Origin"] == origin
    headers = {"Origin": origin, "Authorization": f"Bearer {body['access_token']}"}
    async with http.get(f"{stack.base}{USERINFO}", headers=headers) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == origin
    async with http.get(f"{stack.base}{TOPUP}", headers=headers) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == origin


# --- the origin set follows the apps --------------------------------------------------------------------
async def test_origins_follow_app_changes(stack, http, developer) -> None:
    first, second = unique_host(), unique_host()
    data = await create_app(http, stack, developer, [f"https://{first}/cb"])
    status, _ = await preflight(http, stack, TOKEN, f"https://{first}")
    assert status == 204  # at once after creation
    await api(
        http, stack, developer, "PUT", f"/api/oauth_apps/{data['id']}", {"redirect_uris": [f"https://{second}/cb"]}
    )
    status, _ = await preflight(http, stack, TOKEN, f"https://{second}")
    assert status == 204
    await asyncio.sleep(cors.CACHE_SECONDS + 0.3)  # the gateway's per-origin cache
    status, _ = await preflight(http, stack, TOKEN, f"https://{first}")
    assert status == 403  # no longer registered
    await api(http, stack, developer, "DELETE", f"/api/oauth_apps/{data['id']}")
    await asyncio.sleep(cors.CACHE_SECONDS + 0.3)
    status, _ = await preflight(http, stack, TOKEN, f"https://{second}")
    assert status == 403


async def test_an_origin_shared_by_two_apps_stays_while_one_remains(stack, http, developer) -> None:
    host = unique_host()
    a = await create_app(http, stack, developer, [f"https://{host}/a"])
    await create_app(http, stack, developer, [f"https://{host}/b"])
    await api(http, stack, developer, "DELETE", f"/api/oauth_apps/{a['id']}")
    await asyncio.sleep(cors.CACHE_SECONDS + 0.3)
    status, _ = await preflight(http, stack, TOKEN, f"https://{host}")
    assert status == 204


async def test_rebuild_repairs_a_lost_set(stack, http, db, settings, redis, spa) -> None:
    """Apps written behind the API's back (oauthctl demo, SQL) and a Redis that lost the key are
    repaired by a full rebuild (at account start and periodically)."""
    owner, _ = await make_developer(db, settings)
    host = unique_host()
    await make_app(db, settings, owner.id, [f"https://{host}/cb"])  # no API: no rebuild yet
    await redis.delete(origins_key(settings))
    origins = await cors_origins.rebuild(db, redis, settings)
    assert f"https://{host}" in origins and spa["origin"] in origins
    assert await redis.sismember(origins_key(settings), f"https://{host}")
    status, _ = await preflight(http, stack, TOKEN, f"https://{host}")
    assert status == 204


async def test_gateway_readiness_includes_redis(stack, http) -> None:
    async with http.get(f"{stack.admin_url_of('gateway')}/readyz") as r:
        body = await r.json()
        assert r.status == 200 and body["checks"]["redis"] == "ok"


async def test_redis_down_fails_closed(settings: Settings) -> None:
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        assert await cors.AllowedOrigins(dead, settings).allows("https://app.example") is False
    finally:
        await dead.aclose()


async def test_upstream_cors_headers_are_dropped(settings: Settings, redis) -> None:
    """Only the gateway answers CORS: an upstream that sends CORS headers is overruled."""

    async def sloppy(request: web.Request) -> web.Response:
        return web.json_response(
            {}, headers={"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
        )

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", sloppy)
    runner = web.AppRunner(upstream)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gw_settings = settings.model_copy(
        update={
            "gateway_port": free_port(),
            "authz_url": f"http://127.0.0.1:{port}",
            "token_url": f"http://127.0.0.1:{port}",
            "account_url": f"http://127.0.0.1:{port}",
        }
    )
    gw = web.AppRunner(build_gateway(gw_settings))
    await gw.setup()
    await web.TCPSite(gw, "127.0.0.1", gw_settings.gateway_port).start()
    await redis.sadd(origins_key(settings), "https://ok.example")
    base = f"http://127.0.0.1:{gw_settings.gateway_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/oauth2/authorize", headers={"Origin": "https://ok.example"}) as r:
                assert_no_cors(r.headers)
            async with http.get(f"{base}{USERINFO}", headers={"Origin": "https://evil.example"}) as r:
                assert_no_cors(r.headers)
            async with http.get(f"{base}{USERINFO}", headers={"Origin": "https://ok.example"}) as r:
                assert r.headers["Access-Control-Allow-Origin"] == "https://ok.example"
                assert "Access-Control-Allow-Credentials" not in r.headers
    finally:
        await redis.srem(origins_key(settings), "https://ok.example")
        await gw.cleanup()
        await runner.cleanup()
