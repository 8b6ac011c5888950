"""A tour of every page of the platform in a real browser (Playwright over Debian's Chromium), in a
language and at a width: the browser tests (tests/browser/test_pages_browser.py) check each page
on it, and `make screenshots` (tests/support/screenshots.py) photographs it.

``seed`` makes the data the pages need through the real code paths: a user with a balance who
is also a developer with apps (one with every trust field, one verified, two with the same name), grants
for the authorized-apps page, a developer token. App logos and redirect targets are on
``*.example.test``, which the browser context answers itself (``route_example_hosts``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import asyncpg

from libs.platform.config import Settings
from services.account.app_rules import NewApp
from services.account.apps import create_app, set_verified
from services.account.developer_tokens import create_developer_token
from services.authz.store import consent_records
from tests.support.factories import make_user

PASSWORD = "correct horse battery"
APP_NAME = "Photo Print"
DEVELOPER_NAME = "Photo Print Ltd."
HOMEPAGE = "https://photos.example.test/"
PRIVACY = "https://photos.example.test/privacy"
TERMS = "https://photos.example.test/terms"
LOGO = "https://photos.example.test/logo.svg"
REDIRECT = "https://photos.example.test/oauth/callback"
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48"><rect width="48" height="48" rx="10" '
    'fill="#e36209"/><circle cx="24" cy="22" r="9" fill="#fff"/><rect x="12" y="34" width="24" height="5" '
    'rx="2" fill="#fff"/></svg>'
)
WIDTHS = {1280: 800, 390: 844}
LANGS = ("zh", "en")
LOCALES = {"zh": "zh-CN", "en": "en-US"}


@dataclass
class TourData:
    username: str
    trusted_client_id: str  # every trust field, unverified
    plain_client_id: str  # no trust field, unverified
    verified_client_id: str


async def seed(db: asyncpg.Pool, settings: Settings) -> TourData:
    """The data every page of the tour shows (see the module)."""
    user = await make_user(db, PASSWORD)
    await db.execute("UPDATE users SET quota = 1000000, used_quota = 250000 WHERE id = $1", user.id)  # $750.00
    developer = user  # the console then shows these apps and the token
    await create_developer_token(db, settings.pepper_bytes, developer.id, "ci")
    limit = settings.max_apps_per_developer

    async def app(name: str, uri: str, **trust: str) -> str:
        new = NewApp(name, "", [uri], "client_secret_post", **trust)
        return str((await create_app(db, settings.pepper_bytes, developer.id, new, limit))["client_id"])

    trusted = await app(
        APP_NAME,
        REDIRECT,
        logo_url=LOGO,
        developer_name=DEVELOPER_NAME,
        homepage_url=HOMEPAGE,
        privacy_url=PRIVACY,
        terms_url=TERMS,
    )
    plain = await app("Notes Sync", "https://notes.example.test/cb")
    verified = await app("Budget Helper", "https://budget.example.test/oauth/callback", developer_name="Budget Co.")
    twin_a = await app("Calendar", "https://calendar-one.example.test/cb")
    twin_b = await app("Calendar", "https://calendar-two.example.test/cb")
    async with db.acquire() as conn:
        await set_verified(conn, verified, True)
        for client_id, scopes in (
            (verified, ["openid", "profile", "balance"]),
            (twin_a, ["profile"]),
            (twin_b, ["profile", "email", "balance"]),
        ):
            await consent_records.upsert(conn, user.id, client_id, scopes)
    return TourData(user.username, trusted, plain, verified)


def authorize_url(client_id: str, redirect_uri: str, scope: str = "openid profile email balance") -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": "tour-state-123456",
    }
    return "/api/oauth2/authorize?" + urlencode(query)


@dataclass(frozen=True)
class Stop:
    """One page of the tour: how to get there and the status its document answers."""

    name: str
    go: Callable[[Any, str, TourData], Awaitable[object]]
    logged_in: bool
    status: int = 200


async def _goto(page: Any, url: str) -> None:
    await page.goto(url, wait_until="load")


async def _rate_limited(page: Any, base: str, data: TourData) -> None:
    """Wrong passwords for one account until the login throttling answers 429."""
    for _ in range(8):
        await _goto(page, f"{base}/login")
        await page.fill("#username", data.username + "_nobody")
        await page.fill("#password", "wrong password")
        async with page.expect_navigation():
            await page.click('form[action="/login"] button[type="submit"]')
        if await page.locator("#rate-limited").count():
            return
    raise AssertionError("the login throttling never answered")


STOPS: tuple[Stop, ...] = (
    Stop("login", lambda p, b, d: _goto(p, f"{b}/login"), logged_in=False),
    Stop(
        "login-for-app",
        lambda p, b, d: _goto(p, b + authorize_url(d.trusted_client_id, REDIRECT)),
        logged_in=False,
    ),
    Stop("register", lambda p, b, d: _goto(p, f"{b}/register"), logged_in=False),
    Stop("password-forgot", lambda p, b, d: _goto(p, f"{b}/password/forgot"), logged_in=False),
    Stop("rate-limited", _rate_limited, logged_in=False, status=429),
    Stop("not-found", lambda p, b, d: _goto(p, f"{b}/no-such-page"), logged_in=False, status=404),
    Stop(
        "authorize-error",
        lambda p, b, d: _goto(p, f"{b}/api/oauth2/authorize?client_id=client_unknown&response_type=code"),
        logged_in=False,
        status=400,
    ),
    Stop("user", lambda p, b, d: _goto(p, f"{b}/user"), logged_in=True),
    Stop("topup", lambda p, b, d: _goto(p, f"{b}/user/topup"), logged_in=True),
    Stop("authorizations", lambda p, b, d: _goto(p, f"{b}/user/authorizations"), logged_in=True),
    Stop(
        "consent",
        lambda p, b, d: _goto(p, b + authorize_url(d.trusted_client_id, REDIRECT)),
        logged_in=True,
    ),
    Stop(
        "consent-plain",
        lambda p, b, d: _goto(p, b + authorize_url(d.plain_client_id, "https://notes.example.test/cb", "profile")),
        logged_in=True,
    ),
    Stop(
        "consent-spend",
        lambda p, b, d: _goto(p, b + authorize_url(d.trusted_client_id, REDIRECT, "profile spend")),
        logged_in=True,
    ),
    Stop("device", lambda p, b, d: _goto(p, f"{b}/device"), logged_in=True),
    Stop("developer", lambda p, b, d: _goto(p, f"{b}/developer"), logged_in=True),
    Stop("logout", lambda p, b, d: _goto(p, f"{b}/logout"), logged_in=True),
)


async def route_example_hosts(context: Any) -> None:
    """The browser context answers ``https://*.example.test`` itself (app logos, app homepages):
    no request leaves the machine."""

    async def fulfil(route: Any) -> None:
        if route.request.url.endswith(".svg"):
            await route.fulfill(status=200, content_type="image/svg+xml", body=LOGO_SVG)
        else:
            await route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>app</title>ok")

    await context.route(re.compile(r"^https://[a-z0-9.-]+\.example\.test/"), fulfil)


async def log_in(page: Any, base: str, username: str) -> None:
    await _goto(page, f"{base}/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    async with page.expect_navigation():
        await page.click('form[action="/login"] button[type="submit"]')


@dataclass
class PageReport:
    """What the browser saw on one stop."""

    stop: str
    url: str
    status: int | None
    scroll_width: int
    inner_width: int
    problems: list[str] = field(default_factory=list)


@dataclass
class Watch:
    """Console errors, page errors and failed requests of a page. A document's own status is
    checked by ``visit`` against the stop's (an error page answers 404 on purpose, and Chromium
    logs that as a console error too), so documents are recorded here, not reported."""

    messages: list[str] = field(default_factory=list)
    documents: dict[str, int] = field(default_factory=dict)

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.messages.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        url = str((msg.location or {}).get("url", ""))
        if str(msg.text).startswith("Failed to load resource") and url in self.documents:
            return
        self.messages.append(f"console error: {msg.text} ({url})")

    def _response(self, response: Any) -> None:
        if response.request.resource_type == "document":
            self.documents[response.url] = response.status
        elif response.status >= 400:
            self.messages.append(f"{response.status} {response.url}")

    def take(self) -> list[str]:
        out, self.messages = self.messages, []
        return out


async def visit(page: Any, watch: Watch, stop: Stop, base: str, data: TourData) -> PageReport:
    """Go to ``stop`` and report what the browser saw (status, horizontal scroll, errors)."""
    watch.take()
    watch.documents.clear()
    await stop.go(page, base, data)
    await page.wait_for_load_state("load")
    widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    status = watch.documents.get(page.url)
    report = PageReport(stop.name, page.url, status, widths[0], widths[1])
    report.problems = watch.take()
    if status != stop.status:
        report.problems.append(f"the page answered {status}, expected {stop.status}")
    if report.scroll_width > report.inner_width:
        report.problems.append(f"horizontal scroll: {report.scroll_width}px wide in {report.inner_width}px")
    report.problems += await header_on_one_row(page)
    return report


HEADER_MAX_HEIGHT = 64  # one row: the brand, the language switch and the links (or the phone menu)


async def header_on_one_row(page: Any) -> list[str]:
    """The site header holds one row at every width (at 390px the links fold into its "Menu")."""
    header = page.locator("header.site-header")
    if not await header.count():
        return []
    box = await header.bounding_box()
    if box is None or box["height"] >= HEADER_MAX_HEIGHT:
        return [f"the header wraps: {box and round(box['height'])}px high (one row is < {HEADER_MAX_HEIGHT}px)"]
    return []
