"""Deleting dead rows in small batches (docs/operations.md "Retention").

The owner of a table states which of its rows are dead as a ``PurgeRule`` (its SQL lives in the
owner's store, or ``libs/oauth`` for the platform's own tables); this module only runs such rules:
a count for ``oauthctl purge --dry-run``, and deletes of at most ``batch_size`` rows, each batch
its own short transaction with its own ``statement_timeout`` and ``lock_timeout``. So a purge
never holds locks for long, never writes one huge WAL burst, and an interrupted purge keeps
what it already deleted (each rule only ever matches rows that stay dead).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

# One batch is one statement: bounded by this, and it gives up rather than wait behind a lock
# a request holds (the next run retries the rows).
BATCH_STATEMENT_TIMEOUT = "60s"
BATCH_LOCK_TIMEOUT = "5s"
CLIENT_TIMEOUT = 65.0  # seconds: past the server's bound (a pool's command_timeout is much shorter)


@dataclass(frozen=True)
class PurgeRule:
    """The dead rows of one table.

    ``count_sql`` counts them with parameters ``$1..$n`` = ``args``; ``delete_sql`` deletes at
    most ``$n+1`` of them (``FOR UPDATE SKIP LOCKED``: a row a request holds is left for later)
    and returns how many it deleted.

    A rule whose dead rows cannot be read from an index of dead rows only (a dead token family is
    told apart by its refresh tokens) walks its table in index order instead, so that a run reads
    it once rather than once per batch: it gives ``start``, the cursor before the first row (a
    tuple of key values), its ``delete_sql`` takes the cursor as ``$n+2...`` (rows from there on)
    and returns ``(deleted, *cursor)``, the cursor being the last key it deleted (NULLs if none).
    """

    table: str
    owner: str
    rule: str  # the rule in plain words (docs/operations.md "Retention" has the reasoning)
    count_sql: str
    delete_sql: str
    args: tuple[Any, ...] = ()
    start: tuple[Any, ...] | None = None  # the first cursor of a rule that walks its table

    @classmethod
    def keyed(cls, table: str, owner: str, rule: str, key: str, dead: str, args: tuple[Any, ...] = ()) -> PurgeRule:
        """The usual rule: ``dead`` is ``FROM <table> WHERE ...`` (parameters ``$1..$n`` = ``args``),
        ``key`` the column(s) naming a row (``"id"``, ``"consumer, event_id"``); a batch locks and
        deletes at most ``$n+1`` of those rows by key."""
        limit = f"${len(args) + 1}"
        return cls(
            table=table,
            owner=owner,
            rule=rule,
            count_sql=f"SELECT count(*) {dead}",
            delete_sql=f"""WITH doomed AS (SELECT {key} {dead} LIMIT {limit} FOR UPDATE SKIP LOCKED),
                gone AS (DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM doomed) RETURNING 1)
                SELECT count(*) FROM gone""",
            args=args,
        )


async def count_dead(conn: asyncpg.Connection, rule: PurgeRule) -> int:
    async with conn.transaction(readonly=True):
        await _bound(conn)
        return int(await conn.fetchval(rule.count_sql, *rule.args, timeout=CLIENT_TIMEOUT))


async def delete_batch(
    conn: asyncpg.Connection, rule: PurgeRule, batch_size: int, cursor: tuple[Any, ...] | None = None
) -> tuple[int, tuple[Any, ...] | None]:
    """Delete at most ``batch_size`` dead rows in one short transaction: how many went, and where
    the next batch of a rule that walks its table starts (``cursor``; None: at ``rule.start``)."""
    async with conn.transaction():
        await _bound(conn)
        if rule.start is None:
            return int(await conn.fetchval(rule.delete_sql, *rule.args, batch_size, timeout=CLIENT_TIMEOUT)), None
        at = cursor or rule.start
        row = await conn.fetchrow(rule.delete_sql, *rule.args, batch_size, *at, timeout=CLIENT_TIMEOUT)
        assert row is not None
        following = tuple(row)[1:]
        return int(row[0]), at if following[0] is None else following


async def purge_batches(
    conn: asyncpg.Connection, rule: PurgeRule, batch_size: int, pause_seconds: float = 0.0
) -> AsyncIterator[int]:
    """Delete the rule's dead rows batch after batch, yielding each batch's count, until a batch
    comes back short (the rule matches nothing more). ``pause_seconds`` between batches lets
    replicas, WAL archiving and autovacuum keep up."""
    cursor: tuple[Any, ...] | None = None
    while True:
        deleted, cursor = await delete_batch(conn, rule, batch_size, cursor)
        yield deleted
        if deleted < batch_size:
            return
        if pause_seconds > 0:
            await asyncio.sleep(pause_seconds)


async def _bound(conn: asyncpg.Connection) -> None:
    await conn.execute(
        f"SET LOCAL statement_timeout = '{BATCH_STATEMENT_TIMEOUT}'; SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}';"
        # Batches are many small statements: compiling each with JIT cost more than it ran.
        " SET LOCAL jit = off"
    )
