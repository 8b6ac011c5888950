"""`make screenshots`: every page of the platform (tests/support/tour.py) in Chinese and English at
1280x800 and 390x844, photographed by headless Chromium into build/screenshots/ (git-ignored).

It starts a stack of its own (a fresh database, Redis prefix and exchange on the configured
PostgreSQL, Redis and RabbitMQ, as the tests do), seeds it, prints each page as it goes and
what the browser found wrong (console errors, failed requests, horizontal scroll); exit status 1
when something was.

    make screenshots                 # or: python -m tests.support.screenshots [OUT_DIR]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from oauthctl.deps import chromium_path
from tests.support.infra import infra
from tests.support.isolated import isolated_settings
from tests.support.stack import Stack
from tests.support.tour import LANGS, LOCALES, STOPS, WIDTHS, Watch, log_in, route_example_hosts, seed, visit

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
DEFAULT_OUT = Path("build/screenshots")


async def new_context(browser: Any, lang: str, width: int) -> Any:
    context = await browser.new_context(
        viewport={"width": width, "height": WIDTHS[width]},
        locale=LOCALES[lang],
        extra_http_headers={"Accept-Language": LOCALES[lang]},
        device_scale_factor=1,
    )
    context.set_default_timeout(15_000)
    await route_example_hosts(context)
    return context


async def shoot(out: Path) -> int:
    from playwright.async_api import async_playwright

    problems = 0
    started = time.monotonic()
    with infra() as urls:
        async with isolated_settings(urls) as settings:
            print(f"screenshots: starting a stack on {settings.public_base_url} ...", flush=True)
            stack = Stack(settings)
            await stack.start_all()
            db = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=3)
            try:
                data = await seed(db, settings)
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                    total = len(LANGS) * len(WIDTHS) * len(STOPS)
                    n = 0
                    for lang in LANGS:
                        for width in WIDTHS:
                            anonymous = await new_context(browser, lang, width)
                            member = await new_context(browser, lang, width)
                            pages = {False: await anonymous.new_page(), True: await member.new_page()}
                            watches = {False: Watch(), True: Watch()}
                            for logged_in, page in pages.items():
                                watches[logged_in].attach(page)
                            await log_in(pages[True], stack.base, data.username)
                            for stop in STOPS:
                                n += 1
                                page = pages[stop.logged_in]
                                report = await visit(page, watches[stop.logged_in], stop, stack.base, data)
                                path = out / f"{width}-{lang}-{stop.name}.png"
                                await page.screenshot(path=str(path), full_page=True)
                                flag = "ok" if not report.problems else "PROBLEM"
                                print(f"[{n:>2}/{total}] {width}px {lang} {stop.name:<16} {flag}  {path}", flush=True)
                                for problem in report.problems:
                                    problems += 1
                                    print(f"        - {problem}", flush=True)
                            await anonymous.close()
                            await member.close()
                    await browser.close()
            finally:
                await db.close()
                await stack.stop_all()
    print(f"screenshots: {total} pages in {time.monotonic() - started:.0f}s into {out}/; {problems} problem(s)")
    return 1 if problems else 0


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(shoot(out))


if __name__ == "__main__":
    sys.exit(main())
