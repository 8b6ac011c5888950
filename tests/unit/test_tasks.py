"""libs/platform/tasks.cancel_and_wait: a background loop stops even when Python 3.11's
asyncio.wait_for swallows the cancellation (CPython gh-86296): the race that hung a service's
shutdown in CI (a relay loop woken in the same iteration as its cancel)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from libs.platform.tasks import cancel_and_wait


async def _relay_like_loop(wake: asyncio.Event) -> None:
    while True:  # the shape of libs/oauth/events/relay.OutboxRelay._run
        try:
            await asyncio.wait_for(wake.wait(), timeout=5)
        except TimeoutError:
            pass
        wake.clear()


async def _woken_then_cancelled(stop) -> bool:
    """Wake the loop and cancel it in the same iteration, then stop it with ``stop``; True if it ended."""
    wake = asyncio.Event()
    task = asyncio.create_task(_relay_like_loop(wake))
    await asyncio.sleep(0.01)
    wake.set()
    try:
        await asyncio.wait_for(stop(task), timeout=2)
    except TimeoutError:
        pass
    ended = task.done()
    task.cancel()
    await asyncio.sleep(0)
    await cancel_and_wait([task])  # never leave it running
    return ended


async def _plain_cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task], timeout=1)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the race exists only on Python 3.11 (gh-86296)")
async def test_the_race_is_real_on_python_3_11() -> None:
    """Without the helper, one cancel is swallowed: the loop lives on (why cancel_and_wait exists)."""
    assert not await _woken_then_cancelled(_plain_cancel)


async def test_cancel_and_wait_stops_the_loop_anyway() -> None:
    assert await _woken_then_cancelled(lambda task: cancel_and_wait([task]))


async def test_failed_and_finished_tasks_are_collected() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fail())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait([failed, finished, None])  # no "exception never retrieved", no error
    assert failed.done() and finished.done()
