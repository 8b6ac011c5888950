"""Helpers for end-to-end tests that drive the platform and the guide's example app like a browser.

    dev_token = await developer_token_over_http(stack.base, dev.username, PASSWORD)
    async with example_app(stack.base, dev_token) as example:   # on http://localhost:<free port>
        page = await browse(http, f"{example.base}/auth/oauth/start")
        form = find_form(page.text, action="/login")
        page = await submit(http, page, form, username=..., password=...)

The example app is served on ``localhost`` and the platform on ``127.0.0.1``: cookies ignore ports,
so two different host names are what keeps the two sites' cookies apart in one cookie jar (and in
a real browser), exactly as on two real domains.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import asyncpg
from aiohttp import web
from yarl import URL

from examples.third_party_app.app import SESSION_COOKIE, SESSIONS, Config, Session, build_app
from services.account.apps import set_verified
from tests.support.oauth import csrf_from
from tests.support.stack import free_port

# The guide's "2. 创建 OAuth 应用" request body, field for field (only redirect_uri differs).
GUIDE_APP_NAME = "我的第三方应用"
GUIDE_APP_DESCRIPTION = "应用描述信息"
GUIDE_APP_FIELDS = {"id", "name", "client_id", "client_secret", "redirect_uri", "created_time"}
# The guide's "3. 用户信息端点" response fields (we add ``sub``, OIDC Core 5.3.2).
GUIDE_USERINFO_FIELDS = {
    "id",
    "username",
    "email",
    "quota",
    "used_quota",
    "balance_formatted",
    "created_time",
    "status",
    "sub",
}
GUIDE_TOKEN_FIELDS = {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}


def new_browser() -> aiohttp.ClientSession:
    """A cookie-keeping client like a browser (``unsafe=True``: keep cookies of IP-address hosts)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


# --- following redirects, keeping every hop ---------------------------------------------------------
@dataclass(frozen=True)
class Hop:
    method: str
    url: str
    status: int
    location: str | None  # absolute


@dataclass
class Page:
    """Where a navigation ended: the final response and every hop on the way."""

    url: str
    status: int
    text: str
    headers: dict[str, str]
    hops: list[Hop] = field(default_factory=list)
    stopped_at: str | None = None  # the redirect target ``stop`` refused to follow

    @property
    def urls(self) -> list[str]:
        return [h.url for h in self.hops]

    def hop_to(self, prefix: str) -> Hop:
        """The first hop whose URL starts with ``prefix`` (fails with the whole chain otherwise)."""
        for hop in self.hops:
            if hop.url.startswith(prefix):
                return hop
        raise AssertionError(f"no request to {prefix!r} in the redirect chain: {self.chain()}")

    def chain(self) -> str:
        return " -> ".join(f"{h.method} {h.url} [{h.status}]" for h in self.hops)


async def browse(
    http: aiohttp.ClientSession,
    url: str,
    *,
    method: str = "GET",
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    stop: Callable[[str], bool] | None = None,
    max_hops: int = 12,
) -> Page:
    """Navigate like a browser: follow redirects one by one (302/303 turn a POST into a GET),
    recording each hop. ``stop(url)`` true for a redirect target: stop before requesting it."""
    hops: list[Hop] = []
    for _ in range(max_hops):
        async with http.request(method, url, data=data, headers=headers, allow_redirects=False) as r:
            text = await r.text()
            location = r.headers.get("Location")
            target = urljoin(url, location) if location else None
            hops.append(Hop(method, url, r.status, target))
            if r.status not in REDIRECT_STATUSES or target is None:
                return Page(url, r.status, text, dict(r.headers), hops)
            if stop is not None and stop(target):
                return Page(url, r.status, text, dict(r.headers), hops, stopped_at=target)
        if r.status in (301, 302, 303) and method != "HEAD":
            method, data = "GET", None
        url = target
    raise AssertionError(f"more than {max_hops} redirects: {' -> '.join(h.url for h in hops)}")


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- HTML forms -----------------------------------------------------------------------------------
@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]  # inputs (hidden, text, password...) with their current values
    buttons: list[tuple[str, str]]  # (name, value) of named submit buttons


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), (a.get("method") or "get").upper(), {}, [])
            self.forms.append(self._current)
        elif self._current is None or "name" not in a:
            return
        elif tag == "button" and a.get("type", "submit") == "submit":
            self._current.buttons.append((a["name"], a.get("value", "")))
        elif tag == "input" and a.get("type", "text") in ("submit", "image"):
            self._current.buttons.append((a["name"], a.get("value", "")))
        elif tag == "input" and a.get("type", "text") in ("checkbox", "radio"):
            if "checked" in a:
                self._current.fields[a["name"]] = a.get("value", "on")
        elif tag in ("input", "textarea", "select"):
            self._current.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def find_form(html: str, action: str) -> Form:
    """The page's form posting to ``action`` (its path), with a readable failure otherwise."""
    forms = parse_forms(html)
    for form in forms:
        if urlsplit(form.action).path == action:
            return form
    raise AssertionError(f"no form with action {action!r}; forms: {[f.action for f in forms]}; page: {html[:800]}")


async def submit(
    http: aiohttp.ClientSession,
    page: Page,
    form: Form,
    *,
    button: tuple[str, str] | None = None,
    stop: Callable[[str], bool] | None = None,
    **values: str,
) -> Page:
    """Submit ``form`` of ``page`` like a browser: its fields, ``values`` typed in, ``button`` clicked."""
    missing = set(values) - set(form.fields)
    assert not missing, f"form {form.action!r} has no field(s) {missing}; it has {sorted(form.fields)}"
    data = form.fields | values
    if button is not None:
        assert button in form.buttons, f"no button {button} in form {form.action!r}: {form.buttons}"
        data = data | {button[0]: button[1]}
    url = urljoin(page.url, form.action or page.url)
    if form.method == "GET":
        return await browse(http, str(URL(url).with_query(data)), stop=stop)
    return await browse(http, url, method="POST", data=data, stop=stop)


# --- the developer side (guide "接入准备") ----------------------------------------------------------
async def developer_token_over_http(base: str, username: str, password: str) -> str:
    """Log a developer in on the platform and get a developer token the documented way
    (``POST /api/user/developer_token`` with the session cookie and the page's CSRF token)."""
    async with new_browser() as http:
        token = await csrf_from(http, f"{base}/login")
        data = {"csrf_token": token, "username": username, "password": password}
        async with http.post(f"{base}/login", data=data, allow_redirects=False) as r:
            assert r.status == 302, (r.status, (await r.text())[:500])
        csrf = await csrf_from(http, f"{base}/developer")
        async with http.post(
            f"{base}/api/user/developer_token", json={"name": "e2e"}, headers={"X-CSRF-Token": csrf}
        ) as r:
            body = await r.json(content_type=None)
            assert r.status == 200 and body.get("success") is True, (r.status, body)
        return str(body["data"]["token"])


async def create_oauth_app(
    base: str,
    developer_token: str,
    redirect_uri: str,
    *,
    name: str = GUIDE_APP_NAME,
    description: str = GUIDE_APP_DESCRIPTION,
) -> dict[str, Any]:
    """``POST /api/oauth_apps`` exactly as the guide's curl does (JSON body, Bearer developer token);
    checks the guide's envelope and returns ``data``."""
    body = {"name": name, "description": description, "redirect_uri": redirect_uri}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {developer_token}"}
    async with aiohttp.ClientSession() as http, http.post(f"{base}/api/oauth_apps", json=body, headers=headers) as r:
        answer = await r.json(content_type=None)
    assert r.status == 200, (r.status, answer)
    assert answer["success"] is True and answer["message"] == "应用创建成功", answer
    data = answer["data"]
    assert set(data) >= GUIDE_APP_FIELDS, data
    assert data["name"] == name and data["redirect_uri"] == redirect_uri, data
    assert data["client_id"].startswith("client_") and data["client_secret"].startswith("secret_"), data
    return dict(data)


async def set_redirect_uris(base: str, developer_token: str, app_id: int, redirect_uris: list[str]) -> None:
    """``PUT /api/oauth_apps/{id}`` with ``redirect_uris`` (docs/api.md: the developer API's list form)."""
    headers = {"Authorization": f"Bearer {developer_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{base}/api/oauth_apps/{app_id}", json={"redirect_uris": redirect_uris}, headers=headers) as r,
    ):
        answer = await r.json(content_type=None)
    assert r.status == 200 and answer["success"] is True, (r.status, answer)
    assert answer["data"]["redirect_uris"] == redirect_uris, answer


# --- the guide's example app, in-process ----------------------------------------------------------
@dataclass
class ExampleApp:
    base: str  # http://localhost:<port>
    config: Config
    app: web.Application
    app_id: int

    @property
    def redirect_uri(self) -> str:
        return self.config.redirect_uri

    @property
    def client_id(self) -> str:
        return self.config.client_id

    @property
    def client_secret(self) -> str:
        return self.config.client_secret

    def session_of(self, http: aiohttp.ClientSession) -> Session:
        """The example app's server-side session of this browser (found by its ``example_sid`` cookie)."""
        cookies = http.cookie_jar.filter_cookies(URL(self.base + "/"))
        morsel = cookies.get(SESSION_COOKIE)
        assert morsel is not None, f"the browser has no {SESSION_COOKIE} cookie for {self.base}"
        session = self.app[SESSIONS].get(morsel.value)
        assert session is not None, "the example app does not know this browser's session"
        return session


async def start_example(config: Config) -> web.AppRunner:
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    return runner


@contextlib.asynccontextmanager
async def example_app(
    oauth_server: str,
    developer_token: str,
    *,
    sdk_callback: bool = False,
    verify_with: asyncpg.Pool | None = None,
    resource_server_url: str = "",
    **app_kw: str,
) -> AsyncIterator[ExampleApp]:
    """Register an app through the developer API for ``http://localhost:<free port>/oauth/callback``
    and serve the example app with its credentials on that port (stopped on exit). ``sdk_callback``:
    also register ``/oauth/callback.html``, the redirect URI of the guide's browser SDK page.
    ``verify_with``: then verify the app in that database, as an operator does with
    `oauthctl app verify` (and `make run` for its example app), so one-click login skips consent;
    without it the app stays unverified, as every self-registered app is."""
    port = free_port()
    base = f"http://localhost:{port}"
    created = await create_oauth_app(oauth_server, developer_token, f"{base}/oauth/callback", **app_kw)
    if sdk_callback:
        uris = [created["redirect_uri"], f"{base}/oauth/callback.html"]
        await set_redirect_uris(oauth_server, developer_token, int(created["id"]), uris)
    if verify_with is not None:
        async with verify_with.acquire() as conn:
            await set_verified(conn, created["client_id"], True)
    config = Config(
        oauth_server=oauth_server,
        client_id=created["client_id"],
        client_secret=created["client_secret"],
        redirect_uri=created["redirect_uri"],
        port=port,
        host="127.0.0.1",
        resource_server_url=resource_server_url,
    )
    runner = await start_example(config)
    try:
        yield ExampleApp(base, config, runner.app, int(created["id"]))
    finally:
        await runner.cleanup()
