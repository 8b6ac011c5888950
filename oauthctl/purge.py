"""``oauthctl purge``: delete dead rows in small batches (docs/operations.md "Retention").

    oauthctl purge [--dry-run] [--batch-size N] [--table T ...] [--max-seconds S]

Each table's rule is its owner's (services/token/store.py, services/authz/store/retention.py,
services/account/store.py, libs/oauth/retention.py); libs/platform/retention.py runs them, every
batch its own short transaction. Safe to run at any time, next to the services and twice at once
(``FOR UPDATE SKIP LOCKED``); the Kubernetes CronJob runs it hourly (deploy/k8s/purge-cronjob.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import asyncpg

from libs.platform.config import Settings
from libs.platform.retention import BATCH_LOCK_TIMEOUT, BATCH_STATEMENT_TIMEOUT, PurgeRule, count_dead, purge_batches
from oauthctl.util import die, whole_number, with_conn

PROGRESS_EVERY_SECONDS = 5.0


def rules(token_retention: float, access_ttl: float, code_retention: float, outbox_retention: float) -> list[PurgeRule]:
    """Every table's rule, in the order they run: the ones an index of dead rows serves first (so a
    long token backlog stopped by --max-seconds never starves them), then refresh tokens before
    their families."""
    from libs.oauth.retention import purge_rules as oauth_rules
    from services.account.store import purge_rules as account_rules
    from services.authz.store.retention import purge_rules as authz_rules
    from services.token.store import purge_rules as token_rules

    return [
        *authz_rules(code_retention),
        *account_rules(code_retention),
        *oauth_rules(outbox_retention),
        *token_rules(token_retention, access_ttl),
    ]


TABLES = [rule.table for rule in rules(0, 0, 0, 0)]


def rules_of(settings: Settings, tables: list[str] | None) -> list[PurgeRule]:
    every = rules(
        settings.purge_token_retention_seconds,
        settings.access_token_ttl_seconds,
        settings.purge_code_retention_seconds,
        settings.events_outbox_retention_seconds,
    )
    return [r for r in every if not tables or r.table in tables]


async def dry_run(conn: asyncpg.Connection, chosen: list[PurgeRule]) -> int:
    print("purge: dry run, nothing is deleted; rows each rule would delete now:")
    total = 0
    for rule in chosen:
        n = await count_dead(conn, rule)
        total += n
        print(f"  {rule.table:<22} {n:>12}  {rule.rule} ({rule.owner})", flush=True)
    print(f"  {'total':<22} {total:>12}")
    return 0


class Progress:
    """One line per table every PROGRESS_EVERY_SECONDS while it runs, and one when it is done."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.deleted = 0
        self.batches = 0
        self.started = self.last = time.monotonic()

    def add(self, deleted: int) -> None:
        self.deleted += deleted
        self.batches += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_SECONDS:
            self.last = now
            rate = self.deleted / max(now - self.started, 1e-9)
            print(
                f"purge: {self.table}: {self.deleted} deleted so far ({self.batches} batches, {rate:.0f}/s)", flush=True
            )

    def done(self, note: str = "") -> None:
        took = time.monotonic() - self.started
        print(f"purge: {self.table}: {self.deleted} deleted ({self.batches} batches, {took:.1f} s){note}", flush=True)


async def purge_all(conn: asyncpg.Connection, chosen: list[PurgeRule], settings: Settings, args: Any) -> int:
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    total = 0
    for rule in chosen:
        progress = Progress(rule.table)
        try:
            async for deleted in purge_batches(conn, rule, args.batch_size, settings.purge_batch_pause_seconds):
                progress.add(deleted)
                if deadline is not None and time.monotonic() > deadline:
                    progress.done(" - stopped: --max-seconds reached; the next run continues")
                    return 0
        except (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError) as exc:
            progress.done(" - stopped")
            return die(
                f"{rule.table}: a batch of {args.batch_size} rows took longer than {BATCH_STATEMENT_TIMEOUT} or waited "
                f"on a lock longer than {BATCH_LOCK_TIMEOUT} ({type(exc).__name__}); that batch was rolled back, the "
                f"earlier ones stay deleted. Run again, with a smaller --batch-size (e.g. {max(1, args.batch_size // 5)})."
            )
        progress.done()
        total += progress.deleted
    print(f"purge: done, {total} rows deleted")
    return 0


async def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    chosen = rules_of(settings, args.table)
    if args.batch_size is None:
        args.batch_size = settings.purge_batch_size

    async def run(conn: asyncpg.Connection) -> int:
        try:
            if args.dry_run:
                return await dry_run(conn, chosen)
            return await purge_all(conn, chosen, settings, args)
        except asyncpg.UndefinedTableError as exc:
            return die(f"{exc}: the schema is not there yet; run 'oauthctl migrate' first")

    while True:
        rc = await with_conn(settings, run)
        if not args.every or args.dry_run:
            return rc
        print(f"purge: next run in {args.every} s", flush=True)
        await asyncio.sleep(args.every)


_batch_size = whole_number("rows", 1, 100_000, out_of_range="must be between 1 and 100000 rows")
_max_seconds = whole_number("seconds", 0, out_of_range="must be 0 (no limit) or more seconds")


def add_parser(sub: Any) -> None:
    """Register ``purge`` on oauthctl's subparsers."""
    p = sub.add_parser(
        "purge",
        help="delete dead rows (used/expired tokens and codes) in small batches",
        description="Delete the rows nothing can use any more: refresh tokens and token families dead longer than "
        "PURGE_TOKEN_RETENTION_SECONDS (a live family keeps its used refresh tokens: reuse detection needs them), "
        "authorization codes, device codes and password-reset tokens expired longer than "
        "PURGE_CODE_RETENTION_SECONDS, published events and revoked access tokens past their retention. Ledgers "
        "(spend_charges, quota_operations, topup_codes) are never deleted. Each batch of --batch-size rows is its "
        "own short transaction; stopping it midway is safe. The rules: docs/operations.md, 'Retention'.",
    )
    p.add_argument("--dry-run", action="store_true", help="print how many rows each table would lose; delete nothing")
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=None,
        metavar="N",
        help="rows per DELETE, each its own transaction (default: PURGE_BATCH_SIZE, 5000)",
    )
    p.add_argument(
        "--table",
        action="append",
        choices=TABLES,
        default=None,
        metavar="TABLE",
        help=f"only this table (repeatable; default: all): {', '.join(TABLES)}",
    )
    p.add_argument(
        "--max-seconds",
        type=_max_seconds,
        default=0,
        metavar="S",
        help="stop after this long, between two batches (default 0: until done); the next run continues",
    )
    p.add_argument(
        "--every",
        type=_max_seconds,
        default=0,
        metavar="S",
        help="run again every S seconds, for ever (compose's purge service; default 0: once). A run that "
        "cannot reach PostgreSQL ends the process with an error, for the supervisor to restart it",
    )
    p.set_defaults(fn=cmd_purge)
