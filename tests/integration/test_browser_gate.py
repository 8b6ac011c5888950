"""The browser suite's gate end to end: tests/browser run in a child pytest with no Chromium
(CHROMIUM_PATH points nowhere) skips with one loud line, and fails under CI=true. A child pytest
takes seconds, so it lives here rather than in tests/unit (the rule itself, `browser_verdict`, is
tested there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_browser_tests(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "CI"} | {"CHROMIUM_PATH": str(tmp_path / "none"), **env}
    cmd = [sys.executable, "-m", "pytest", "tests/browser", "-q", "-p", "no:cacheprovider", "-rs"]
    return subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def test_the_suite_skips_them_with_one_loud_line(tmp_path: Path) -> None:
    done = run_browser_tests(tmp_path)
    assert done.returncode == 0, done.stdout[-2000:]
    assert " passed" not in done.stdout and " skipped" in done.stdout
    assert done.stdout.count("BROWSER TESTS SKIPPED: no Chromium at") == 1
    assert "sudo apt-get install -y chromium" in done.stdout


def test_under_ci_the_suite_fails_them(tmp_path: Path) -> None:
    done = run_browser_tests(tmp_path, CI="true")
    assert done.returncode == 1, done.stdout[-2000:]
    assert " skipped" not in done.stdout and "BROWSER TESTS SKIPPED" not in done.stdout
    assert "a missing browser is a failure" in done.stdout
