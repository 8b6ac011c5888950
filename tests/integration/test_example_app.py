"""The example third-party app (examples/third_party_app) against a fake platform, both in-process.

The fake implements just enough of the platform (authorize redirect, token with PKCE and refresh
rotation, userinfo, top-up, revoke) to drive the app through the guide's server-side flow.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from examples.third_party_app.app import SESSION_COOKIE, SESSIONS, Config, Session, build_app
from tests.support.stack import free_port

CLIENT_ID = "client_example_test"
CLIENT_SECRET = "secret_example_test_value"
USER = {
    "id": 12345,
    "sub": "12345",
    "username": "user123",
    "email": "user@example.com",
    "quota": 1000000,
    "used_quota": 250000,
    "balance_formatted": "750.00",
    "created_time": 1640995200,
    "status": 1,
}
STATIC = Path(__file__).resolve().parents[2] / "examples" / "third_party_app" / "static"


@dataclass
class FakePlatform:
    base: str = ""
    redirect_uri: str = ""
    expires_in: int = 7200
    iss: str | None = None  # None: send the real issuer
    refuse_codes: bool = False
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    authorize_params: dict[str, str] = field(default_factory=dict)
    revoked: list[str] = field(default_factory=list)
    counter: int = 0

    def _next(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def _issue(self) -> dict[str, object]:
        access, refresh = self._next("at"), self._next("rt")
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": refresh,
            "scope": "profile balance",
        }

    def _bearer(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        return token if auth.startswith("Bearer ") and token in self.access_tokens else None

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        self.authorize_params = dict(q)
        self.events.append("authorize")
        assert q["client_id"] == CLIENT_ID and q["redirect_uri"] == self.redirect_uri
        code = self._next("code")
        self.codes[code] = {"challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"]}
        params = {"code": code, "state": q["state"], "iss": self.iss if self.iss is not None else self.base}
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(params)}")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.events.append(f"token:{form['grant_type']}")
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form["grant_type"] == "authorization_code":
            code = self.codes.pop(str(form["code"]), None)
            if self.refuse_codes or code is None or form.get("redirect_uri") != code["redirect_uri"]:
                return web.json_response({"error": "invalid_grant"}, status=400)
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != code["challenge"]:
                return web.json_response({"error": "invalid_grant", "error_description": "PKCE"}, status=400)
            return web.json_response(self._issue())
        if form["grant_type"] == "refresh_token":
            refresh = str(form.get("refresh_token"))
            if refresh not in self.refresh_tokens:
                return web.json_response({"error": "invalid_grant"}, status=400)
            self.refresh_tokens.discard(refresh)  # rotation
            return web.json_response(self._issue())
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    async def userinfo(self, request: web.Request) -> web.Response:
        token = self._bearer(request)
        self.events.append(f"userinfo:{request.headers.get('Authorization', '').removeprefix('Bearer ')}")
        if token is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response(USER)

    async def topup(self, request: web.Request) -> web.Response:
        self.events.append("topup")
        if self._bearer(request) is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({"topup_url": f"{self.base}/user/topup?client_id={CLIENT_ID}"})

    async def revoke(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.revoked.append(str(form.get("token")))
        self.refresh_tokens.discard(str(form.get("token")))
        return web.Response(status=200)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/oauth2/authorize", self.authorize)
        app.router.add_post("/api/oauth2/token", self.token)
        app.router.add_get("/api/oauth2/userinfo", self.userinfo)
        app.router.add_get("/api/oauth2/topup", self.topup)
        app.router.add_post("/api/oauth2/revoke", self.revoke)
        return app


@dataclass
class Env:
    fake: FakePlatform
    fake_runner: web.AppRunner
    app: web.Application
    base: str
    client: aiohttp.ClientSession

    async def get(self, path: str, **kw: object) -> aiohttp.ClientResponse:
        kw.setdefault("allow_redirects", False)
        return await self.client.get(self.base + path, **kw)  # type: ignore[arg-type]

    async def page(self, path: str = "/") -> str:
        async with await self.get(path) as r:
            assert r.status == 200
            return await r.text()

    async def login(self) -> None:
        """Start -> fake authorize -> callback, without following the final redirect to /."""
        async with await self.get("/auth/oauth/start") as r:
            assert r.status == 302
            authorize = r.headers["Location"]
        async with self.client.get(authorize, allow_redirects=False) as r:
            callback = r.headers["Location"]
        async with self.client.get(callback, allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == "/?login=success"

    def session(self) -> Session:
        sid = self.client.cookie_jar.filter_cookies(URL(self.base))[SESSION_COOKIE].value
        session = self.app[SESSIONS].get(sid)
        assert session is not None
        return session


async def _start(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    fake_port, app_port = free_port(), free_port()
    base = f"http://127.0.0.1:{app_port}"
    fake = FakePlatform(base=f"http://127.0.0.1:{fake_port}", redirect_uri=f"{base}/oauth/callback")
    fake_runner = await _start(fake.app(), fake_port)
    config = Config(
        oauth_server=fake.base,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=fake.redirect_uri,
        port=app_port,
    )
    app = build_app(config)
    app_runner = await _start(app, app_port)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        yield Env(fake, fake_runner, app, base, client)
    await app_runner.cleanup()
    await fake_runner.cleanup()


def _csrf(page: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m, "no CSRF token in the page"
    return m.group(1)


async def test_healthz(env: Env) -> None:
    async with await env.get("/healthz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok"}


async def test_start_redirects_with_state_and_pkce(env: Env) -> None:
    async with await env.get("/auth/oauth/start") as r:
        assert r.status == 302
        location = urlsplit(r.headers["Location"])
        cookie = r.headers["Set-Cookie"]
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{env.fake.base}/api/oauth2/authorize"
    q = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == env.fake.redirect_uri
    assert q["response_type"] == "code"
    assert q["scope"] == "profile balance"
    assert q["auto_authorize"] == "true"
    assert q["code_challenge_method"] == "S256"
    assert len(q["state"]) >= 43 and len(q["code_challenge"]) == 43
    assert SESSION_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    session = env.session()
    assert session.oauth_state == q["state"]
    expected = base64.urlsafe_b64encode(hashlib.sha256(session.code_verifier.encode()).digest()).rstrip(b"=")
    assert expected.decode() == q["code_challenge"]


async def test_callback_state_mismatch(env: Env) -> None:
    async with await env.get("/oauth/callback?code=abc&state=xyz") as r:  # no session at all
        assert r.headers["Location"] == "/?error=invalid_state"
    async with await env.get("/auth/oauth/start") as r:
        pass
    async with await env.get("/oauth/callback?code=abc&state=not-the-state") as r:
        assert r.status == 302
        assert r.headers["Location"] == "/?error=invalid_state"
    assert not any(e.startswith("token:") for e in env.fake.events)
    assert "state 不匹配" in await env.page("/?error=invalid_state")


async def test_callback_errors_and_missing_parameters(env: Env) -> None:
    async with await env.get("/oauth/callback?error=access_denied&state=s") as r:
        assert r.headers["Location"] == "/?error=access_denied"
    async with await env.get("/oauth/callback?code=abc") as r:
        assert r.headers["Location"] == "/?error=missing_parameters"
    page = await env.page("/?error=access_denied")
    assert "您拒绝了授权" in page and 'id="login"' in page
    page = await env.page("/?error=%3Cscript%3Ealert(1)%3C/script%3E")
    assert "<script>alert" not in page and "&lt;script&gt;" in page


async def test_callback_rejects_other_issuer_and_refused_code(env: Env) -> None:
    env.fake.iss = "http://evil.example"
    async with await env.get("/auth/oauth/start", allow_redirects=True) as r:
        assert r.url.path == "/" and r.url.query.get("error") == "invalid_issuer"
    assert "token:authorization_code" not in env.fake.events
    env.fake.iss = None
    env.fake.refuse_codes = True
    async with await env.get("/auth/oauth/start", allow_redirects=True) as r:
        assert r.url.query.get("error") == "invalid_grant"
        assert "授权码无效" in await r.text()


async def test_happy_path(env: Env) -> None:
    async with await env.get("/auth/oauth/start") as r:
        first_sid = r.cookies[SESSION_COOKIE].value
    async with await env.get("/auth/oauth/start", allow_redirects=True) as r:
        assert r.status == 200
        assert str(r.url).endswith("/?login=success")
        page = await r.text()
    assert '<span id="username">user123</span>' in page
    assert '<span id="email">user@example.com</span>' in page
    assert '<span id="balance">750.00</span>' in page
    assert "登录成功" in page and 'action="/logout"' in page
    session = env.session()
    assert session.sid != first_sid  # rotated on login
    assert session.access_token in env.fake.access_tokens and session.refresh_token in env.fake.refresh_tokens
    assert session.oauth_state is None and session.code_verifier is None
    assert session.token_expires_at is not None
    assert session.access_token not in page and CLIENT_SECRET not in page
    async with await env.get("/api/user/info") as r:
        assert r.status == 200
        assert await r.json() == USER
    page = await env.page("/?refresh=1")
    assert "余额已更新" in page
    # The state was single use: replaying the callback does not log in again.
    async with await env.get("/oauth/callback?code=code-1&state=anything") as r:
        assert r.headers["Location"] == "/?error=invalid_state"


async def test_user_info_requires_login(env: Env) -> None:
    async with await env.get("/api/user/info") as r:
        assert r.status == 401
        assert await r.json() == {"error": "Not authenticated"}


async def test_user_info_refreshes_after_401(env: Env) -> None:
    await env.login()
    old = env.session().access_token
    env.fake.access_tokens.discard(old)  # e.g. revoked or expired early
    env.fake.events.clear()
    async with await env.get("/api/user/info") as r:
        assert r.status == 200
        assert await r.json() == USER
    new = env.session().access_token
    assert new != old
    assert env.fake.events == [f"userinfo:{old}", "token:refresh_token", f"userinfo:{new}"]


async def test_user_info_refreshes_before_expiry(env: Env) -> None:
    env.fake.expires_in = 60  # within the 5-minute margin
    await env.login()
    old = env.session().access_token
    env.fake.expires_in = 7200
    env.fake.events.clear()
    async with await env.get("/api/user/info") as r:
        assert r.status == 200
    new = env.session().access_token
    assert env.fake.events == ["token:refresh_token", f"userinfo:{new}"]
    assert new != old and old not in env.fake.events
    env.fake.events.clear()
    async with await env.get("/api/user/info") as r:
        assert r.status == 200
    assert env.fake.events == [f"userinfo:{new}"]  # no second refresh


async def test_refresh_failure_clears_tokens(env: Env) -> None:
    await env.login()
    env.fake.access_tokens.clear()
    env.fake.refresh_tokens.clear()
    async with await env.get("/api/user/info") as r:
        assert r.status == 401
        assert await r.json() == {"error": "Not authenticated"}
    assert env.session().access_token is None and env.session().refresh_token is None
    env.fake.events.clear()
    async with await env.get("/api/user/info") as r:
        assert r.status == 401
    assert env.fake.events == []
    page = await env.page("/")
    assert 'id="login"' in page and 'id="username"' not in page


async def test_session_expired_shown_on_page(env: Env) -> None:
    await env.login()
    env.fake.access_tokens.clear()
    env.fake.refresh_tokens.clear()
    page = await env.page("/")
    assert "登录已过期" in page and 'href="/auth/oauth/start"' in page


async def test_topup_redirects_to_platform(env: Env) -> None:
    async with await env.get("/topup") as r:
        assert r.headers["Location"] == "/?error=not_logged_in"
    await env.login()
    async with await env.get("/topup") as r:
        assert r.status == 302
        assert r.headers["Location"] == f"{env.fake.base}/user/topup?client_id={CLIENT_ID}"


async def test_logout(env: Env) -> None:
    await env.login()
    page = await env.page("/")
    refresh_token = env.session().refresh_token
    async with env.client.post(env.base + "/logout", data={"csrf_token": "wrong"}, allow_redirects=False) as r:
        assert r.headers["Location"] == "/?error=invalid_csrf"
    async with await env.get("/api/user/info") as r:
        assert r.status == 200  # still logged in
    async with env.client.post(env.base + "/logout", data={"csrf_token": _csrf(page)}, allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/?logout=1"
    async with await env.get("/api/user/info") as r:
        assert r.status == 401
    assert env.fake.revoked == [refresh_token]
    page = await env.page("/?logout=1")
    assert "已退出登录" in page and 'id="login"' in page
    assert len(env.app[SESSIONS]) == 0


async def test_platform_down_is_readable(env: Env) -> None:
    await env.login()
    await env.fake_runner.cleanup()
    async with await env.get("/api/user/info") as r:
        assert r.status == 502
        assert await r.json() == {"error": "Platform unavailable"}
    page = await env.page("/")
    assert "无法连接授权服务器" in page
    async with await env.get("/topup") as r:
        assert r.headers["Location"] == "/?error=platform_unavailable"
    assert env.session().access_token is not None  # an outage does not log the user out


async def test_guide_browser_pages(env: Env) -> None:
    sdk = await env.page("/sdk/")
    guide = (STATIC / "sdk.html").read_text(encoding="utf-8")
    assert f"authServer: '{env.fake.base}'," in sdk
    assert f"clientId: '{CLIENT_ID}'," in sdk
    assert f"clientSecret: '{CLIENT_SECRET}', // 生产环境应该在后端处理" in sdk
    assert "redirectUri: window.location.origin + '/oauth/callback.html'," in sdk
    changed = [(a, b) for a, b in zip(guide.splitlines(), sdk.splitlines(), strict=True) if a != b]
    assert len(changed) == 3
    assert await env.page("/oauth/callback.html") == (STATIC / "callback.html").read_text(encoding="utf-8")
    # The guide's callback.html sends the SDK's code to "/?code=": the SDK page handles it there.
    assert await env.page("/?code=abc&state=def") == sdk
    # ... but not while a server-side login is pending in this session.
    async with await env.get("/auth/oauth/start"):
        pass
    assert 'id="login"' in await env.page("/?code=abc&state=def")


async def test_concurrent_requests_share_one_refresh(env: Env) -> None:
    await env.login()
    env.fake.access_tokens.clear()  # every request of the session sees a 401 first
    env.fake.events.clear()

    async def info() -> int:
        async with await env.get("/api/user/info") as r:
            return r.status

    assert await asyncio.gather(*(info() for _ in range(5))) == [200] * 5
    assert env.fake.events.count("token:refresh_token") == 1  # rotation would log a second refresher out


async def test_start_moves_to_the_callback_host_first(env: Env) -> None:
    other = env.base.replace("127.0.0.1", "localhost")
    async with env.client.get(other + "/auth/oauth/start", allow_redirects=False) as r:
        assert r.headers["Location"] == f"{env.base}/auth/oauth/start?same_host=1"
        assert SESSION_COOKIE not in r.cookies


async def test_the_page_in_english_too(env: Env) -> None:
    page = await env.page("/")
    assert "一键登录" in page and 'lang="zh-CN"' in page and 'href="/?lang=en"' in page
    page = await env.page("/?lang=en&error=access_denied")
    assert "One-click login" in page and "You declined the authorization" in page and 'lang="en"' in page
    page = await env.page("/")  # the choice is kept (example_lang cookie)
    assert "One-click login" in page and "一键登录" not in page
    page = await env.page("/?lang=zh&error=weird_code")
    assert "登录出错:weird_code" in page


async def test_favicon(env: Env) -> None:
    for path in ("/favicon.svg", "/favicon.ico"):
        async with await env.get(path) as r:
            assert r.status == 200 and r.content_type == "image/svg+xml"
