"""The device flow as a user lives it (RFC 8628; docs/device.md): ``examples/cli_login.py`` runs as
a real subprocess against the stack, prints the URL and the code and polls, while headless
Chromium (Playwright, a phone-sized viewport) opens the URL, signs in, confirms the code on /device
and approves on the consent page. The CLI then stores the tokens (0600 in $XDG_CONFIG_HOME),
prints userinfo, refreshes them, refreshes on its own once the access token has expired, and logs
out (revoking them)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from libs.platform.config import Settings
from services.account.users import User
from tests.browser.test_one_click_browser import TIMEOUT_MS, Chromium, Steps, chromium  # noqa: F401 - fixture
from tests.support.codes import ClientApp
from tests.support.device import device_app
from tests.support.factories import make_user
from tests.support.stack import Stack

PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "examples" / "cli_login.py"
CODE_RE = re.compile(r"enter the code: ([A-Z]{4}-[A-Z]{4})")
URL_RE = re.compile(r"\(or open (\S+)\)")
PHONE = {"width": 390, "height": 844}
CLI_SECONDS = 60  # a CLI run, polling included (the interval is 5 s)


async def run_cli(stack: Stack, client_id: str, home: Path, *args: str) -> asyncio.subprocess.Process:
    """Start the CLI against the stack (asynchronously: the stack serves from this event loop)."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config"), "HOME": str(home)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLI),
        "--issuer",
        stack.base,
        "--client-id",
        client_id,
        "--name",
        "device-test",
        *args,
        cwd=str(ROOT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), CLI_SECONDS)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def read_prompt(proc: asyncio.subprocess.Process) -> tuple[str, str, str]:
    """The CLI's first lines: (user code, verification_uri_complete, everything read)."""
    seen = ""
    assert proc.stdout is not None
    while not (CODE_RE.search(seen) and URL_RE.search(seen)):
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            _, err = await proc.communicate()
            pytest.fail(f"the CLI stopped before printing the code:\n{seen}\n{err.decode()}")
        seen += line.decode()
    code, url = CODE_RE.search(seen), URL_RE.search(seen)
    assert code and url
    return code.group(1), url.group(1), seen


async def phone_context(browser: Any, locale: str) -> Any:
    """A phone-sized browser context (the page is laid out for phones first)."""
    context = await browser.new_context(locale=locale, viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    return context


async def start_login(
    stack: Stack, db: asyncpg.Pool, settings: Settings, home: Path, name: str = "Device CLI"
) -> tuple[ClientApp, User, asyncio.subprocess.Process]:
    """A public app allowed the device grant, a user, and ``cli_login.py login`` running for it."""
    app = await device_app(db, settings, method="none", name=name)
    user = await make_user(db, PASSWORD)
    return app, user, await run_cli(stack, app.client_id, home, "login")


async def sign_in(step: Steps, page: Any, username: str) -> None:
    """On the login page: the platform's form, as a user fills it."""
    await step("type the username", lambda: page.fill("#username", username))
    await step("type the password", lambda: page.fill("#password", PASSWORD))
    await step("submit the login form", lambda: page.click('form[action="/login"] button[type="submit"]'))


async def test_cli_login_approved_in_chromium(
    chromium: Chromium,  # noqa: F811 - the imported fixture
    stack: Stack,
    db: asyncpg.Pool,
    settings: Settings,
    tmp_path: Path,
) -> None:
    browser = chromium.get()
    from playwright.async_api import expect

    app, user, proc = await start_login(stack, db, settings, tmp_path, name="Terminal CLI")
    try:
        user_code, complete_url, printed = await read_prompt(proc)
        assert f"{settings.public_base_url}/device" in printed
        context = await phone_context(browser, "en-US")
        page = await context.new_page()
        step = Steps(page, tmp_path)
        try:
            await step("open the URL the CLI printed", lambda: page.goto(complete_url))
            await step(
                "land on the login page", lambda: expect(page).to_have_url(re.compile(r"/login\?next=%2Fdevice"))
            )
            await sign_in(step, page, user.username)
            await step("come back to /device", lambda: expect(page).to_have_url(re.compile(r"/device\?user_code=")))
            await step("see the code prefilled", lambda: expect(page.locator("#user_code")).to_have_value(user_code))
            fits = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            assert fits, "the /device page scrolls sideways on a phone"
            await step("continue", lambda: page.click('form[action="/device"] button[type="submit"]'))
            await step(
                "see the app on the consent page", lambda: expect(page.locator("h1")).to_contain_text("Terminal CLI")
            )
            await step(
                "see the same code as the terminal",
                lambda: expect(page.locator("code.user-code")).to_have_text(user_code),
            )
            await step("see the device", lambda: expect(page.locator(".device")).to_contain_text("cli_login.py"))
            await step("allow", lambda: page.click('form[action="/device/consent"] button[value="allow"]'))
            await step("see the approval", lambda: expect(page.locator('[data-step="approved"]')).to_be_visible())
        finally:
            await context.close()
        code, out, err = await finish(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, (out, err)
    assert "Logged in." in out and f'"username": "{user.username}"' in out

    tokens_path = tmp_path / "config" / "device-test" / "tokens.json"
    assert stat.S_IMODE(tokens_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tokens_path.parent.stat().st_mode) == 0o700
    first = json.loads(tokens_path.read_text())
    assert first["refresh_token"] and first["client_id"] == app.client_id

    # refresh: the tokens rotate, the file stays private
    code, out, err = await finish(await run_cli(stack, app.client_id, tmp_path, "refresh"))
    assert code == 0, (out, err)
    second = json.loads(tokens_path.read_text())
    assert second["refresh_token"] != first["refresh_token"]
    assert stat.S_IMODE(tokens_path.stat().st_mode) == 0o600

    # userinfo with an expired access token: the CLI refreshes on its own first
    tokens_path.write_text(json.dumps(second | {"expires_at": 0}))
    code, out, err = await finish(await run_cli(stack, app.client_id, tmp_path, "userinfo"))
    assert code == 0 and f'"username": "{user.username}"' in out, (out, err)
    third = json.loads(tokens_path.read_text())
    assert third["refresh_token"] != second["refresh_token"]
    assert stat.S_IMODE(tokens_path.stat().st_mode) == 0o600

    # logout revokes the refresh token and forgets the file
    code, out, err = await finish(await run_cli(stack, app.client_id, tmp_path, "logout"))
    assert code == 0 and not tokens_path.exists(), (out, err)
    family_revoked = await db.fetchval(
        """SELECT f.revoked_at IS NOT NULL FROM token_families f
           JOIN device_codes d ON d.family_id = f.id WHERE d.client_id = $1""",
        app.client_id,
    )
    assert family_revoked


async def test_cli_reports_a_denied_login(
    chromium: Chromium,  # noqa: F811 - the imported fixture
    stack: Stack,
    db: asyncpg.Pool,
    settings: Settings,
    tmp_path: Path,
) -> None:
    browser = chromium.get()
    from playwright.async_api import expect

    _, user, proc = await start_login(stack, db, settings, tmp_path)
    try:
        user_code, _, _ = await read_prompt(proc)
        context = await phone_context(browser, "zh-CN")
        page = await context.new_page()
        step = Steps(page, tmp_path)
        try:
            await step("open /device", lambda: page.goto(f"{stack.base}/device"))
            await sign_in(step, page, user.username)
            await step(
                "type the code in lower case, no dash",
                lambda: page.fill("#user_code", user_code.lower().replace("-", "")),
            )
            await step("continue", lambda: page.click('form[action="/device"] button[type="submit"]'))
            await step("deny", lambda: page.click('form[action="/device/consent"] button[value="deny"]'))
            await step("see 已拒绝", lambda: expect(page.locator('[data-step="denied"]')).to_contain_text("已拒绝"))
        finally:
            await context.close()
        code, out, err = await finish(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 1 and "denied" in err, (out, err)
    assert not (tmp_path / "config" / "device-test" / "tokens.json").exists()
