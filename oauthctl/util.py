"""What every oauthctl command module shares."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import asyncpg

from libs.common.config import Settings


def die(msg: str, code: int = 1) -> int:
    """Print ``oauthctl: msg`` to stderr and return the exit code."""
    print(f"oauthctl: {msg}", file=sys.stderr)
    return code


async def with_conn(settings: Settings, fn: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    """Run ``fn`` with one database connection, closed afterwards."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await fn(conn)
    finally:
        await conn.close()
