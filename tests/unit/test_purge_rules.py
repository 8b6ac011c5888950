"""The retention rules of `oauthctl purge` (docs/operations.md "Retention"), read statically: each
is its table owner's, deletes from that table only, in batches (LIMIT, SKIP LOCKED), with the
parameters it declares; and no ledger or account table is ever purged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from libs.platform.retention import PurgeRule
from oauthctl.purge import TABLES, rules

ROOT = Path(__file__).resolve().parents[2]
CREATE_TABLE = re.compile(r"\bCREATE\s+TABLE\s+(\w+)", re.IGNORECASE)
# What the purge must never touch: the ledger behind balances, and what only people delete.
NEVER = {"spend_charges", "quota_operations", "topup_codes", "users", "oauth_apps", "developer_tokens", "grants"}
RULES = rules(3600, 7200, 3600, 3600)


def owner_of(table: str) -> str:
    for sql in [*ROOT.glob("services/*/migrations/*.sql"), *ROOT.glob("libs/*/migrations/*.sql")]:
        if table in CREATE_TABLE.findall(sql.read_text(encoding="utf-8")):
            parts = sql.relative_to(ROOT).parts
            return parts[1] if parts[0] == "services" else f"libs/{parts[1]}"
    raise AssertionError(f"no migration creates {table}")


def highest_parameter(sql: str) -> int:
    return max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)


def test_no_ledger_or_account_table_is_purged() -> None:
    assert NEVER.isdisjoint(TABLES)
    assert len(TABLES) == len(set(TABLES))
    assert TABLES.index("refresh_tokens") < TABLES.index("token_families")  # no cascade in one batch


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.table)
def test_a_rule_is_its_owners_and_batched(rule: PurgeRule) -> None:
    assert owner_of(rule.table) == rule.owner
    assert set(re.findall(r"DELETE\s+FROM\s+(\w+)", rule.delete_sql)) == {rule.table}
    assert "LIMIT" in rule.delete_sql and "SKIP LOCKED" in rule.delete_sql
    assert "DELETE" not in rule.count_sql.upper()
    assert highest_parameter(rule.count_sql) == len(rule.args)
    assert highest_parameter(rule.delete_sql) == len(rule.args) + 1 + len(rule.start or ())
