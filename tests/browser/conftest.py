"""Run, skip or fail the browser tests, decided before any fixture starts the stack.

The browser is CHROMIUM_PATH, else Debian's /usr/bin/chromium (`make test` installs it when it can:
root on Debian). Without it a developer's run skips only these tests, with one loud line saying how
to enable them; under CI=true a missing browser fails them, so CI can never pass without them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import pytest

from oauthctl.deps import chromium_path, executable

Verdict = tuple[Literal["skip", "fail"], str]
_SKIPPED = pytest.StashKey[str]()


def is_ci(environ: Mapping[str, str]) -> bool:
    return environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def browser_verdict(environ: Mapping[str, str]) -> Verdict | None:
    """None when the browser is there; else skip (a developer's machine) or fail (CI), and why."""
    path = chromium_path(environ)
    if executable(path):
        return None
    why = (
        f"no Chromium at {path}: browser tests need Debian's chromium; enable them with "
        "`sudo apt-get install -y chromium` (or set CHROMIUM_PATH; never `playwright install`)"
    )
    return ("fail", f"{why} [CI=true: a missing browser is a failure]") if is_ci(environ) else ("skip", why)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    verdict = browser_verdict(os.environ)
    if verdict is None:
        return
    kind, why = verdict
    if kind == "fail":
        pytest.fail(why, pytrace=False)
    item.config.stash[_SKIPPED] = why
    pytest.skip(why)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    why = config.stash.get(_SKIPPED, None)
    if why:
        terminalreporter.write_line(f"BROWSER TESTS SKIPPED: {why}", yellow=True, bold=True)
