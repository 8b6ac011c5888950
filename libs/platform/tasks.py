"""Stopping background tasks for sure.

``task.cancel()`` followed by ``await task`` is not enough on Python 3.11: ``asyncio.wait_for``
swallows a cancellation that arrives in the same loop iteration as the completion of what it waits
for (CPython gh-86296, fixed in 3.12 where ``wait_for`` is built on ``asyncio.timeout``). A loop
such as ``while True: await asyncio.wait_for(event.wait(), ...)`` then survives the cancel and the
``await task`` waits forever: a service that never finishes its shutdown (seen as a hung test).
``cancel_and_wait`` cancels again until every task has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

# How long to wait for a cancelled task to end before cancelling it again.
RECANCEL_SECONDS = 0.05


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object] | None]) -> None:
    """Cancel ``tasks`` (``None`` entries are ignored) and return once all of them have ended.

    Their outcomes are retrieved, so a task that failed does not log "exception was never
    retrieved"; the caller's own cancellation still propagates."""
    owned = [t for t in tasks if t is not None]
    pending = {t for t in owned if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
    for task in owned:
        if not task.cancelled():
            task.exception()
