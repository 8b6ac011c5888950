"""The browser tests without a browser: skipped with one loud line on a developer's machine, failed
under CI=true (tests/browser/conftest.py). Chromium stays installed: CHROMIUM_PATH points elsewhere.
The child-pytest runs of tests/browser are in tests/integration/test_browser_gate.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import browser_verdict


def test_a_present_browser_runs(tmp_path: Path) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    assert browser_verdict({"CHROMIUM_PATH": str(browser)}) is None
    assert browser_verdict({"CHROMIUM_PATH": str(browser), "CI": "true"}) is None


@pytest.mark.parametrize("ci, kind", [(None, "skip"), ("", "skip"), ("false", "skip"), ("true", "fail"), ("1", "fail")])
def test_a_missing_browser_skips_unless_ci(tmp_path: Path, ci: str | None, kind: str) -> None:
    env = {"CHROMIUM_PATH": str(tmp_path / "nowhere")} | ({"CI": ci} if ci is not None else {})
    verdict = browser_verdict(env)
    assert verdict is not None and verdict[0] == kind
    assert "apt-get install -y chromium" in verdict[1]


def test_a_file_that_is_not_executable_is_no_browser(tmp_path: Path) -> None:
    (tmp_path / "chromium").write_text("")
    assert browser_verdict({"CHROMIUM_PATH": str(tmp_path / "chromium")}) is not None


@pytest.mark.parametrize("may_install, installs", [(True, True), (False, False)])
def test_make_test_installs_debians_chromium_only_when_it_may(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], may_install: bool, installs: bool
) -> None:
    """`make test` (oauthctl.deps --browser) with no /usr/bin/chromium: apt-get as root on Debian,
    else the loud line. The commands are recorded, not run: Chromium stays installed here."""
    from oauthctl import deps

    ran: list[list[str]] = []

    def record(cmd: list[str], timeout: float, env: object = None) -> bool:
        ran.append(list(cmd))
        return True

    monkeypatch.setattr(deps, "executable", lambda path: False)
    monkeypatch.setattr(deps, "can_apt_install", lambda: may_install)
    monkeypatch.setattr(deps, "run", record)
    deps.ensure_chromium({})
    expected = [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]] if installs else []
    assert ran == expected
    # Here the install "succeeded" but the browser is still not executable: the loud line either way.
    assert "the browser tests will be SKIPPED (FAIL under CI=true)" in capsys.readouterr().out
