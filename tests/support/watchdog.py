"""A per-test deadline for the asyncio suite (a pytest plugin, loaded by tests/conftest.py).

A test, or an async fixture's setup or teardown, that runs past ``TEST_TIMEOUT_SECONDS`` (default
180; the slowest test takes about 20 s) is a hang: the watchdog prints the stack of every asyncio
task to the real stderr (so CI's log shows where it waits), then cancels the task pytest-asyncio is
running, and the test fails with "timed out" instead of holding the whole run until CI gives up.
``TEST_TIMEOUT_SECONDS=0`` turns it off (e.g. under a debugger).
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
from collections.abc import Iterator

import pytest

_PLUGIN_FILE = "pytest_asyncio"
_loops: list[asyncio.AbstractEventLoop] = []


def limit_seconds() -> float:
    return float(os.environ.get("TEST_TIMEOUT_SECONDS", "180"))


@pytest.fixture(scope="session", autouse=True)
async def _watchdog_loop() -> None:
    """Remember the session's event loop (pytest-asyncio runs every test and fixture on it)."""
    _loops.append(asyncio.get_running_loop())


def _driving(task: asyncio.Task[object], name: str) -> bool:
    """Is ``task`` the one pytest-asyncio runs for the current phase (the test's coroutine, or its
    fixture setup/finalizer wrapper)?"""
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and (code.co_name == name or _PLUGIN_FILE in code.co_filename)


def _fire(loop: asyncio.AbstractEventLoop, nodeid: str, name: str, seconds: float) -> None:
    out = io.StringIO()
    tasks = asyncio.all_tasks(loop)
    out.write(f"\n=== watchdog: {nodeid} still running after {seconds:.0f} s; {len(tasks)} asyncio tasks ===\n")
    for task in tasks:
        out.write(f"--- {task.get_name()}: {task.get_coro()!r}\n")
        task.print_stack(limit=12, file=out)
    sys.__stderr__.write(out.getvalue())
    sys.__stderr__.flush()
    for task in tasks:
        if _driving(task, name):
            task.cancel(msg=f"{nodeid} timed out after {seconds:.0f} s (tests/support/watchdog.py)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    seconds = limit_seconds()
    timer: threading.Timer | None = None
    if seconds > 0:
        name = getattr(getattr(item, "function", None), "__name__", item.name)

        def expired() -> None:  # in the timer's thread: hand over to the loop (set up by now)
            if _loops:
                _loops[-1].call_soon_threadsafe(_fire, _loops[-1], item.nodeid, name, seconds)

        timer = threading.Timer(seconds, expired)
        timer.daemon = True
        timer.start()
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()
