"""The guide's one-click login and top-up in a real browser (headless Debian Chromium, Playwright).

The platform (all four services behind the gateway, http://127.0.0.1:<port>) and the guide's example
app (http://localhost:<port>) run in-process; the browser does what a user does: 一键登录 on the
example app, the platform's login form, back through one-click authorize to the example app showing
username / email / balance, 账户充值 to the platform's top-up page, a top-up code, 刷新余额.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from libs.platform.config import Settings
from oauthctl.deps import chromium_path
from services.account import store as account_store
from services.account.topup import create_codes
from tests.support.e2e import developer_token_over_http, example_app
from tests.support.factories import make_user
from tests.support.stack import Stack

CHROMIUM = chromium_path()  # tests/browser/conftest.py skips or fails the tests without it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
PASSWORD = "correct horse battery"


class Chromium:
    """The module's browser, or why there is none: ``get()`` fails the calling test (a missing
    browser must fail the suite, not skip it; failing inside the test reports it as FAILED)."""

    def __init__(self, browser: Any = None, error: str | None = None) -> None:
        self._browser, self._error = browser, error

    def get(self) -> Any:
        if self._browser is None:
            pytest.fail(self._error or "no browser", pytrace=False)
        return self._browser


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Chromium]:
    """One headless Chromium for the module (each test gets its own context: no shared cookies)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        yield Chromium(error="the playwright package is missing: pip install -e '.[dev]'")
        return
    async with async_playwright() as p:
        try:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
            )
        except Exception as exc:  # any launch failure becomes a readable test failure
            yield Chromium(error=f"{CHROMIUM} did not start under Playwright: {exc}")
            return
        try:
            yield Chromium(browser)
        finally:
            await browser.close()


def is_broken(response: Any) -> bool:
    """A failed response other than the favicon the browser asks for on its own."""
    return response.status >= 400 and not response.url.endswith("/favicon.ico")


class Steps:
    """Run named steps on a page; a failing step fails the test with the step, the URL and the page."""

    def __init__(self, page: Any, shots: Path) -> None:
        self.page = page
        self.shots = shots

    async def __call__(self, name: str, action: Callable[[], Awaitable[object]]) -> None:
        try:
            await action()
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).strip()[:600]}"
        url, shot = self.page.url, self.shots / "failure.png"
        try:
            body = (await self.page.inner_text("body", timeout=2_000))[:800]
            await self.page.screenshot(path=str(shot), full_page=True)
        except Exception:
            body = "(page content unavailable)"
        pytest.fail(
            f"browser step {name!r} failed at {url}: {error}\npage text: {body}\n(screenshot: {shot})", pytrace=False
        )


async def test_one_click_login_and_topup_in_chromium(
    chromium: Chromium, stack: Stack, db: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    browser = chromium.get()
    from playwright.async_api import expect

    developer = await make_user(db, PASSWORD)
    token = await developer_token_over_http(stack.base, developer.username, PASSWORD)
    user = await make_user(db, PASSWORD)
    await account_store.set_balance(db, user.id, 1000000, 250000)  # 750.00
    code = (await create_codes(db, settings.pepper_bytes, 50_000))[0]  # +50.00

    async with example_app(stack.base, token, verify_with=db) as example:
        context = await browser.new_context(locale="zh-CN")
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        page = await context.new_page()
        step = Steps(page, tmp_path)
        platform, app = re.escape(stack.base), re.escape(example.base)
        try:
            await step("open the example app", lambda: page.goto(f"{example.base}/"))
            await step("click 一键登录", lambda: page.get_by_role("link", name=re.compile("一键登录")).click())
            await step(
                "land on the platform's login page",
                lambda: expect(page).to_have_url(re.compile(f"^{platform}/login\\?"), timeout=TIMEOUT_MS),
            )
            await step("type the username", lambda: page.fill("#username", user.username))
            await step("type the password", lambda: page.fill("#password", PASSWORD))
            await step("submit the login form", lambda: page.click('form[action="/login"] button[type="submit"]'))
            await step(
                "come back to the example app logged in",
                lambda: expect(page).to_have_url(f"{example.base}/?login=success", timeout=TIMEOUT_MS),
            )
            await step(
                "see the username",
                lambda: expect(page.locator("#username")).to_have_text(user.username, timeout=TIMEOUT_MS),
            )
            await step(
                "see the email", lambda: expect(page.locator("#email")).to_have_text(user.email, timeout=TIMEOUT_MS)
            )
            await step(
                "see the balance", lambda: expect(page.locator("#balance")).to_have_text("750.00", timeout=TIMEOUT_MS)
            )

            await step("click 账户充值", lambda: page.get_by_role("link", name="账户充值").click())
            await step(
                "land on the platform's top-up page, already logged in",
                lambda: expect(page).to_have_url(re.compile(f"^{platform}/user/topup\\?from="), timeout=TIMEOUT_MS),
            )
            await step(
                "see the old balance on the top-up page",
                lambda: expect(page.locator("#balance")).to_have_text("$750.00", timeout=TIMEOUT_MS),
            )
            await step("type the top-up code", lambda: page.fill("#code", code))
            await step("redeem it", lambda: page.click('form[action="/user/topup"] button[type="submit"]'))
            await step("see the success message", lambda: expect(page.locator("#success")).to_be_visible())
            await step(
                "see the new balance on the top-up page",
                lambda: expect(page.locator("#balance")).to_have_text("$800.00", timeout=TIMEOUT_MS),
            )

            await step("go back to the example app", lambda: page.goto(f"{example.base}/"))
            await step("click 刷新余额", lambda: page.get_by_role("link", name="刷新余额").click())
            await step(
                "see the refreshed page",
                lambda: expect(page).to_have_url(re.compile(f"^{app}/\\?refresh=1$"), timeout=TIMEOUT_MS),
            )
            await step(
                "see the new balance in the example app",
                lambda: expect(page.locator("#balance")).to_have_text("800.00", timeout=TIMEOUT_MS),
            )
            await step("still see the username", lambda: expect(page.locator("#username")).to_have_text(user.username))
            shot = tmp_path / "example-app-final.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 1000, "the screenshot is empty"
        finally:
            await context.close()


async def test_the_guides_browser_sdk_page_as_written(
    chromium: Chromium, stack: Stack, db: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    """The guide's JavaScript SDK page (/sdk/, verbatim but for OAUTH_CONFIG) and callback.html:
    一键登录 in a popup, the code exchanged from the page (CORS on the token endpoint), userinfo and
    goToTopup from the page (CORS with a Bearer header), 刷新余额 (docs/architecture.md "Browsers and CORS")."""
    browser = chromium.get()
    from playwright.async_api import expect

    developer = await make_user(db, PASSWORD)
    token = await developer_token_over_http(stack.base, developer.username, PASSWORD)
    user = await make_user(db, PASSWORD)
    await account_store.set_balance(db, user.id, 1000000, 250000)
    code = (await create_codes(db, settings.pepper_bytes, 50_000))[0]

    async with example_app(stack.base, token, sdk_callback=True, verify_with=db) as example:
        context = await browser.new_context(locale="zh-CN")
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        page = await context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # refreshBalance() alerts 余额已更新
        js_errors: list[str] = []
        page.on("pageerror", lambda exc: js_errors.append(str(exc)))
        page.on("response", lambda r: js_errors.append(f"{r.status} {r.url}") if is_broken(r) else None)
        step = Steps(page, tmp_path)
        platform = re.escape(stack.base)
        popups: list[Any] = []
        try:
            await step("open the SDK page", lambda: page.goto(f"{example.base}/sdk/"))
            await step("see the login section", lambda: expect(page.locator("#login-section")).to_be_visible())

            async def open_login_popup() -> None:
                async with page.expect_popup(timeout=TIMEOUT_MS) as info:
                    await page.get_by_role("button", name=re.compile("一键登录")).click()
                popups.append(await info.value)

            await step("click 一键登录 (opens the authorize popup)", open_login_popup)
            popup = popups[0]
            popup_step = Steps(popup, tmp_path)
            await popup_step(
                "popup shows the platform's login page",
                lambda: expect(popup).to_have_url(re.compile(f"^{platform}/login\\?"), timeout=TIMEOUT_MS),
            )
            await popup_step("type the username", lambda: popup.fill("#username", user.username))
            await popup_step("type the password", lambda: popup.fill("#password", PASSWORD))
            await popup_step("submit", lambda: popup.click('form[action="/login"] button[type="submit"]'))
            await step(
                "the SDK page shows the username (code exchanged in the page)",
                lambda: expect(page.locator("#username")).to_have_text(user.username, timeout=TIMEOUT_MS),
            )
            await step("see the email", lambda: expect(page.locator("#email")).to_have_text(user.email))
            await step("see the balance", lambda: expect(page.locator("#balance")).to_have_text("750.00"))

            async def open_topup() -> None:
                async with context.expect_page(timeout=TIMEOUT_MS) as info:
                    await page.get_by_role("button", name="账户充值").click()
                popups.append(await info.value)

            await step("click 账户充值 (goToTopup opens the top-up page)", open_topup)
            topup = popups[1]
            topup_step = Steps(topup, tmp_path)
            await topup_step(
                "the top-up page, already logged in",
                lambda: expect(topup).to_have_url(re.compile(f"^{platform}/user/topup\\?from="), timeout=TIMEOUT_MS),
            )
            await topup_step("type the code", lambda: topup.fill("#code", code))
            await topup_step("redeem", lambda: topup.click('form[action="/user/topup"] button[type="submit"]'))
            await topup_step("see the new balance", lambda: expect(topup.locator("#balance")).to_have_text("$800.00"))
            await step("click 刷新余额", lambda: page.get_by_role("button", name="刷新余额").click())
            await step(
                "the SDK page shows the new balance", lambda: expect(page.locator("#balance")).to_have_text("800.00")
            )
            await page.screenshot(path=str(tmp_path / "sdk-page-final.png"), full_page=True)
        finally:
            await context.close()
        assert not js_errors, f"JavaScript errors or failed requests on the SDK page: {js_errors}"
