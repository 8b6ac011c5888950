"""What every oauthctl command module shares."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from libs.platform.config import Settings
from libs.platform.migrate import apply_all, ensure_database

from .components import MIGRATIONS


def whole_number(unit: str, low: int, high: int | None = None, *, out_of_range: str) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of ``unit`` from ``low`` to ``high`` (no upper bound when
    None); ``out_of_range`` says what is allowed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {unit}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(out_of_range)
        return value

    return parse


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


async def migrate(settings: Settings, log: Callable[[str], None] = print) -> None:
    """Create the database if needed, apply the migrations, then the data steps SQL cannot do:
    the email skeletons of users created before migration 0005 (services/account/emails.py)."""
    from services.account.users import backfill_email_skeletons

    await ensure_database(settings.database_url)
    await apply_all(settings.database_url, MIGRATIONS, log=log)
    conn = await asyncpg.connect(settings.database_url)
    try:
        done, clashes = await backfill_email_skeletons(conn)
    finally:
        await conn.close()
    if done:
        log(f"migrate: computed the email skeleton of {done} existing user(s)")
    for email in clashes:
        log(f"migrate: warning: {email!r} looks like an earlier user's address; left without a skeleton")
