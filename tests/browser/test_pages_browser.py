"""Every page in Chromium, in Chinese and English, at 1280x800 and 390x844 (the tour of
tests/support/tour.py, also what `make screenshots` photographs): no page scrolls sideways, no
console error or failed request anywhere (the favicon included), and the pages people have to trust
say what they must: the login page names the app, the consent page shows every trust field, the
authorized-apps page tells apps of one name apart and keeps its revoke buttons on screen."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from libs.platform.config import Settings
from tests.browser.test_one_click_browser import TIMEOUT_MS, Chromium, chromium  # noqa: F401 - the fixture
from tests.support.stack import Stack
from tests.support.tour import (
    APP_NAME,
    DEVELOPER_NAME,
    HOMEPAGE,
    LOCALES,
    LOGO,
    PRIVACY,
    REDIRECT,
    STOPS,
    TERMS,
    WIDTHS,
    PageReport,
    TourData,
    Watch,
    authorize_url,
    log_in,
    route_example_hosts,
    seed,
    visit,
)

HEADINGS = {"zh": f"登录以继续使用 {APP_NAME}", "en": f"Sign in to continue to {APP_NAME}"}
BALANCE = "$750.00"


@pytest.fixture(scope="module")
async def tour(db: asyncpg.Pool, settings: Settings) -> TourData:
    return await seed(db, settings)


class Browsing:
    """An anonymous and a logged-in page in one language and width, each watched for errors."""

    def __init__(self, browser: Any, lang: str, width: int, **context_args: Any) -> None:
        self.browser, self.lang, self.width, self.args = browser, lang, width, context_args
        self.contexts: list[Any] = []
        self.pages: dict[bool, Any] = {}
        self.watches: dict[bool, Watch] = {}

    async def open(self, base: str, username: str) -> Browsing:
        for logged_in in (False, True):
            context = await self.browser.new_context(
                viewport={"width": self.width, "height": WIDTHS[self.width]},
                locale=LOCALES[self.lang],
                extra_http_headers={"Accept-Language": LOCALES[self.lang]},
                **self.args,
            )
            context.set_default_timeout(TIMEOUT_MS)
            await route_example_hosts(context)
            self.contexts.append(context)
            page = await context.new_page()
            self.watches[logged_in] = Watch()
            self.watches[logged_in].attach(page)
            self.pages[logged_in] = page
        await log_in(self.pages[True], base, username)
        return self

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def browsing(
    chromium: Chromium,  # noqa: F811 - the fixture imported above
    stack: Stack,
    tour: TourData,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Browsing]:
    lang, width = request.param
    session = await Browsing(chromium.get(), lang, width).open(stack.base, tour.username)
    yield session
    await session.close()


async def inside_viewport(page: Any, selector: str) -> list[str]:
    """The elements matching ``selector`` that stick out of the viewport sideways."""
    return list(
        await page.eval_on_selector_all(
            selector,
            "els => els.filter(e => { const r = e.getBoundingClientRect();"
            " return r.left < 0 || r.right > window.innerWidth + 0.5; }).map(e => e.outerHTML.slice(0, 120))",
        )
    )


async def check_login_for_app(page: Any, lang: str) -> list[str]:
    problems = []
    heading = (await page.inner_text("#login-heading")).strip()
    if heading != HEADINGS[lang]:
        problems.append(f"login heading {heading!r}, expected {HEADINGS[lang]!r}")
    logo = page.locator(f'#login img.app-logo[src="{LOGO}"]')
    if await logo.count() != 1 or not await logo.evaluate("img => img.complete && img.naturalWidth > 0"):
        problems.append("the app's logo is not shown on the login page")
    # the show-password button (JavaScript on): shows and hides the password
    await page.fill("#password", "secret words")
    await page.click("button.reveal[data-for=password]")
    if await page.get_attribute("#password", "type") != "text":
        problems.append("the show-password button does not show the password")
    await page.click("button.reveal[data-for=password]")
    if await page.get_attribute("#password", "type") != "password":
        problems.append("the show-password button does not hide it again")
    return problems


async def check_consent(page: Any) -> list[str]:
    problems = []
    expected_links = {"#homepage": HOMEPAGE, "#privacy-link": PRIVACY, "#terms-link": TERMS}
    for selector, href in expected_links.items():
        if await page.get_attribute(selector, "href") != href:
            problems.append(f"{selector} does not link {href}")
    if DEVELOPER_NAME not in await page.inner_text("#developer"):
        problems.append("no developer name")
    if not await page.locator("#unverified-notice").is_visible():
        problems.append("no unverified notice")
    if "photos.example.test" not in await page.inner_text("#redirect-host"):
        problems.append("no redirect host")
    shares = await page.eval_on_selector_all("#shares li", "els => els.map(e => e.dataset.share)")
    if shares != ["identity", "username", "email", "balance"]:
        problems.append(f"shared items {shares}")
    if await page.locator('a[href="/developer"], a[href="/user/topup"]').count():
        problems.append("the consent page shows the site navigation")
    logo = page.locator(f'#consent img.app-logo[src="{LOGO}"]')
    if await logo.count() != 1 or not await logo.evaluate("img => img.complete && img.naturalWidth > 0"):
        problems.append("the app's logo is not shown")
    problems += [f"sticks out: {h}" for h in await inside_viewport(page, "#allow, #deny")]
    return problems


async def check_authorizations(page: Any) -> list[str]:
    problems = []
    rows = page.locator("#authorizations tbody tr")
    if await rows.count() != 3:
        problems.append(f"{await rows.count()} authorized apps listed, expected 3")
    hosts = await page.eval_on_selector_all("#authorizations .app-host", "els => els.map(e => e.textContent.trim())")
    if len(set(hosts)) != 3:
        problems.append(f"apps of one name cannot be told apart: {hosts}")
    ids = await page.eval_on_selector_all("#authorizations .app-client-id", "els => els.map(e => e.textContent)")
    if len(set(ids)) != 3:
        problems.append(f"app ids not shown: {ids}")
    problems += [f"sticks out: {h}" for h in await inside_viewport(page, "#authorizations button, #authorizations td")]
    texts = await page.eval_on_selector_all("#authorizations li", "els => els.map(e => e.textContent)")
    if any(text.count("email") + text.count("邮箱") > 1 for text in texts):
        problems.append("the email is listed twice")
    return problems


async def check_money(page: Any) -> list[str]:
    shown = (await page.inner_text("#balance")).strip()
    return [] if shown == BALANCE else [f"balance {shown!r}, expected {BALANCE!r}"]


CHECKS = {
    "login-for-app": lambda page, lang: check_login_for_app(page, lang),
    "consent": lambda page, lang: check_consent(page),
    "authorizations": lambda page, lang: check_authorizations(page),
    "user": lambda page, lang: check_money(page),
    "topup": lambda page, lang: check_money(page),
}
COMBINATIONS = [(lang, width) for lang in ("zh", "en") for width in (1280, 390)]


@pytest.mark.parametrize("browsing", COMBINATIONS, indirect=True, ids=[f"{lang}-{w}" for lang, w in COMBINATIONS])
async def test_every_page(browsing: Browsing, stack: Stack, tour: TourData) -> None:
    """Each page of the tour: the status it should answer, no sideways scroll, no console error
    or failed request, and the page's own checks."""
    reports: list[PageReport] = []
    for stop in STOPS:
        page = browsing.pages[stop.logged_in]
        report = await visit(page, browsing.watches[stop.logged_in], stop, stack.base, tour)
        check = CHECKS.get(stop.name)
        if check is not None:
            report.problems += await check(page, browsing.lang)
        report.problems += browsing.watches[stop.logged_in].take()
        reports.append(report)
    failures = [f"{r.stop} ({r.url}): {p}" for r in reports for p in r.problems]
    assert not failures, f"{browsing.lang} at {browsing.width}px:\n" + "\n".join(failures)
    # the authorized-apps page, above all, fits a phone
    apps = next(r for r in reports if r.stop == "authorizations")
    assert apps.scroll_width <= apps.inner_width == browsing.width


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_verified_app_shows_its_badge(chromium: Chromium, stack: Stack, tour: TourData, lang: str) -> None:  # noqa: F811
    session = await Browsing(chromium.get(), lang, 390).open(stack.base, tour.username)
    try:
        page = session.pages[True]
        url = authorize_url(tour.verified_client_id, "https://budget.example.test/oauth/callback") + "&prompt=consent"
        await page.goto(stack.base + url)
        assert await page.locator("#verified").is_visible()
        assert await page.locator("#unverified-notice").count() == 0
        assert "Budget Co." in await page.inner_text("#developer")
        assert not session.watches[True].take()
    finally:
        await session.close()


MENU = {"zh": ("菜单", "开发者"), "en": ("Menu", "Developers")}


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_the_phone_menu(chromium: Chromium, stack: Stack, tour: TourData, lang: str) -> None:  # noqa: F811
    """At 390px the header's links fold into a "Menu" disclosure (<details>) that the keyboard opens,
    walks and closes; at 1280px they stay inline and the menu is not shown."""
    from playwright.async_api import expect

    name, developers = MENU[lang]
    session = await Browsing(chromium.get(), lang, 390).open(stack.base, tour.username)
    try:
        page = session.pages[True]
        await page.goto(f"{stack.base}/user")
        summary = page.locator("header details.nav-menu > summary")
        await expect(summary).to_have_accessible_name(name)
        link = page.get_by_role("link", name=developers, exact=True)
        await expect(link).to_be_hidden()
        await summary.focus()
        await page.keyboard.press("Enter")
        await expect(link).to_be_visible()
        await page.keyboard.press("Tab")  # the first link of the menu, the current page
        assert await page.evaluate("document.activeElement.getAttribute('aria-current')") == "page"
        assert not await inside_viewport(page, "details.nav-menu nav a, details.nav-menu nav button")
        await page.keyboard.press("Escape")  # site.js: closes the menu, focus back on its summary
        await expect(link).to_be_hidden()
        await expect(summary).to_be_focused()
        await page.keyboard.press("Enter")
        await link.focus()
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{stack.base}/developer")
        assert not session.watches[True].take()
    finally:
        await session.close()
    session = await Browsing(chromium.get(), lang, 1280).open(stack.base, tour.username)
    try:
        page = session.pages[True]
        await page.goto(f"{stack.base}/user")
        await expect(page.locator("header details.nav-menu")).to_be_hidden()
        await expect(page.get_by_role("link", name=developers, exact=True)).to_be_visible()
    finally:
        await session.close()


async def test_without_javascript(chromium: Chromium, stack: Stack, tour: TourData) -> None:  # noqa: F811
    """No JavaScript: the password is a plain password field (no button), times read in UTC, the
    phone menu opens."""
    from playwright.async_api import expect

    session = await Browsing(chromium.get(), "en", 390, java_script_enabled=False).open(stack.base, tour.username)
    try:
        anonymous = session.pages[False]
        await anonymous.goto(stack.base + authorize_url(tour.trusted_client_id, REDIRECT))
        assert await anonymous.get_attribute("#password", "type") == "password"
        assert not await anonymous.locator("button.reveal").is_visible()
        # the phone menu is a <details>: it opens without JavaScript
        await anonymous.goto(f"{stack.base}/login")
        await anonymous.click("header details.nav-menu > summary")
        await expect(anonymous.locator('header details.nav-menu a[href="/register"]')).to_be_visible()
        page = session.pages[True]
        await page.goto(f"{stack.base}/user/authorizations")
        first = page.locator("#authorizations time").first
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", (await first.inner_text()).strip())
    finally:
        await session.close()


async def test_times_in_the_browsers_time_zone(chromium: Chromium, stack: Stack, tour: TourData) -> None:  # noqa: F811
    session = await Browsing(chromium.get(), "zh", 1280, timezone_id="Asia/Shanghai").open(stack.base, tour.username)
    try:
        page = session.pages[True]
        await page.goto(f"{stack.base}/user/authorizations")
        first = page.locator("#authorizations time").first
        shown = (await first.inner_text()).strip()
        assert "UTC" not in shown and "GMT+8" in shown, shown
        assert (await first.get_attribute("datetime") or "").endswith("Z")
        assert "UTC" in (await first.get_attribute("title") or "")  # the UTC text kept as a tooltip
    finally:
        await session.close()
