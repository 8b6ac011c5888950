"""The plans of the hot statements (refresh rotation, code exchange, introspection and revocation
lookups) at 100,000 token families of ONE app, with stale statistics and analyzed, as generic and as custom
plans (docs/performance.md "Plans that do not depend on statistics").

Every one must start from the unique hash (or primary key) of the presented token and reach its
family and user by primary key: never from token_families by client_id, which probes refresh_tokens
once per family of the app. The rows are seeded with generate_series in one transaction of this
test's own connection and rolled back, so the session's database is left as it was.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.contracts import account, authz
from libs.platform.config import Settings
from services.token import store

FAMILIES = 100_000
USERS = 1_000
CLIENT = "plan-test-app"


def token_hash_sql(n: str) -> str:
    return f"decode(md5('rt' || {n}) || md5('x' || {n}), 'hex')"


@pytest.fixture
async def seeded(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    tx = conn.transaction()
    await tx.start()
    try:
        tag = uuid.uuid4().hex[:8]
        first_user = await conn.fetchval(
            """INSERT INTO users (username, email, password_hash)
               SELECT 'plan-' || $1 || '-' || g, 'plan-' || $1 || '-' || g || '@example.test', 'x'
               FROM generate_series(1, $2) g
               RETURNING id""",
            tag,
            USERS,
        )
        await conn.execute(
            """INSERT INTO token_families (id, client_id, user_id, scope)
               SELECT md5($3 || g)::uuid, $1, $2 + g % $4, 'openid profile'
               FROM generate_series(1, $5) g""",
            CLIENT,
            first_user,
            tag,
            USERS,
            FAMILIES,
        )
        # Per family: a used parent and its live child (the rotation chain).
        await conn.execute(
            f"""INSERT INTO refresh_tokens (family_id, token_hash, expires_at, used_at)
                SELECT md5($1 || g)::uuid, {token_hash_sql("'p' || g")}, now() + interval '1 day', now()
                FROM generate_series(1, $2) g""",
            tag,
            FAMILIES,
        )
        await conn.execute(
            f"""INSERT INTO refresh_tokens (family_id, token_hash, parent_id, expires_at)
                SELECT p.family_id, {token_hash_sql("'c' || p.id")}, p.id, now() + interval '1 day'
                FROM refresh_tokens p JOIN token_families f ON f.id = p.family_id
                WHERE f.client_id = $1""",
            CLIENT,
        )
        await conn.execute(
            f"""INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri, scope, auth_time, expires_at)
                SELECT {token_hash_sql("'code' || g")}, $1, $2 + g % $3, 'https://app.example/cb', 'openid',
                       now(), now() + interval '1 minute'
                FROM generate_series(1, $3) g""",
            CLIENT,
            first_user,
            USERS,
        )
        yield conn
    finally:
        await tx.rollback()
        await conn.close()


async def some_live_token(conn: asyncpg.Connection) -> tuple[int, bytes]:
    row = await conn.fetchrow(
        """SELECT rt.id, rt.token_hash FROM refresh_tokens rt JOIN token_families f ON f.id = rt.family_id
           WHERE f.client_id = $1 AND rt.used_at IS NULL ORDER BY rt.id DESC LIMIT 1""",
        CLIENT,
    )
    return int(row["id"]), bytes(row["token_hash"])


async def plan(conn: asyncpg.Connection, sql: str, args: list[str], mode: str) -> str:
    """EXPLAIN EXECUTE of ``sql`` prepared with ``plan_cache_mode = mode`` (``args`` are SQL literals)."""
    name = f"plan_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
    await conn.execute(f"PREPARE {name} AS {sql}")
    try:
        rows = await conn.fetch(f"EXPLAIN EXECUTE {name}({', '.join(args)})")
    finally:
        await conn.execute(f"DEALLOCATE {name}")
    return "\n".join(r[0] for r in rows)


def lit(value: bytes) -> str:
    return f"'\\x{value.hex()}'::bytea"


def statements(
    refresh_id: int, family_id: uuid.UUID, refresh_hash: bytes, code_hash: bytes
) -> dict[str, tuple[str, list[str], str]]:
    """name -> (SQL, arguments, the index it must start from)."""
    fam = f"'{uuid.uuid4()}'::uuid"
    new_hash = lit(uuid.uuid4().bytes * 2)
    return {
        "refresh lookup": (account.REFRESH_SQL, [lit(refresh_hash), "10"], "refresh_tokens_token_hash_key"),
        "refresh consume": (
            account.ROTATE_REFRESH_SQL,
            [str(refresh_id), f"'{CLIENT}'", new_hash, "3600", "'\\x00'::bytea", f"'{family_id}'::uuid"],
            "refresh_tokens_pkey",
        ),
        "refresh introspection": (account.LIVE_REFRESH_SQL, [lit(refresh_hash)], "refresh_tokens_token_hash_key"),
        "refresh revocation": (store.REFRESH_OWNER_SQL, [lit(refresh_hash)], "refresh_tokens_token_hash_key"),
        "code lookup": (authz.CODE_SQL, [lit(code_hash)], "authorization_codes_pkey"),
        "code consume": (
            authz.EXCHANGE_CODE_SQL,
            [lit(code_hash), f"'{CLIENT}'", fam, new_hash, "3600"],
            "authorization_codes_pkey",
        ),
    }


def assert_hash_first(name: str, text: str, start_index: str) -> None:
    assert start_index in text, f"{name}: does not use {start_index}:\n{text}"
    for bad in ("Seq Scan on refresh_tokens", "Seq Scan on token_families", "Seq Scan on authorization_codes"):
        assert bad not in text, f"{name}: {bad}:\n{text}"
    for bad in ("token_families_user_client", "token_families_client"):
        assert bad not in text, f"{name}: drives from the app's families ({bad}):\n{text}"


async def consume_buffers(conn: asyncpg.Connection, sql: str, args: list[str]) -> tuple[int, int]:
    """(rows returned, shared buffers touched) of one real execution of the generic plan of ``sql``."""
    name = f"plan_{uuid.uuid4().hex[:8]}"
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    await conn.execute(f"PREPARE {name} AS {sql}")
    try:
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({', '.join(args)})")
    finally:
        await conn.execute(f"DEALLOCATE {name}")
    top = json.loads(rows[0][0])[0]["Plan"]
    return int(top["Actual Rows"]), int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


async def test_hot_statements_start_from_the_token_hash(seeded: asyncpg.Connection) -> None:
    """Seeded once (it takes a while), then every statement in every mode: with the statistics as
    they are (stale: the 100,000 families are not in them, as after a bulk load or a restore) and
    after ANALYZE; generic and custom plans."""
    conn = seeded
    refresh_id, refresh_hash = await some_live_token(conn)
    family_id = await conn.fetchval("SELECT family_id FROM refresh_tokens WHERE id = $1", refresh_id)
    code_hash = bytes(await conn.fetchval("SELECT code_hash FROM authorization_codes WHERE client_id = $1", CLIENT))

    for statistics in (False, True):
        if statistics:
            await conn.execute("ANALYZE users, token_families, refresh_tokens, authorization_codes")
        for mode in ("force_generic_plan", "force_custom_plan"):
            for name, (sql, args, start_index) in statements(refresh_id, family_id, refresh_hash, code_hash).items():
                label = f"{name} ({mode}, {'analyzed' if statistics else 'stale statistics'})"
                assert_hash_first(label, await plan(conn, sql, args, mode), start_index)
        # The reuse diagnosis finds the token's child by refresh_tokens_parent.
        assert "refresh_tokens_parent" in await plan(
            conn, account.REFRESH_SQL, [lit(refresh_hash), "10"], "force_generic_plan"
        )


async def test_consuming_a_token_touches_a_handful_of_pages(seeded: asyncpg.Connection) -> None:
    """At 100,000 families of the app, with stale statistics, one rotation and one code exchange each
    touch a few index and heap pages (the join-first consume probed refresh_tokens once per family)."""
    conn = seeded
    refresh_id, refresh_hash = await some_live_token(conn)
    family_id = await conn.fetchval("SELECT family_id FROM refresh_tokens WHERE id = $1", refresh_id)
    rows, buffers = await consume_buffers(
        conn,
        account.ROTATE_REFRESH_SQL,
        [str(refresh_id), f"'{CLIENT}'", lit(uuid.uuid4().bytes * 2), "3600", "'\\x00'::bytea", f"'{family_id}'::uuid"],
    )
    assert rows == 1 and buffers < 100, (rows, buffers)
    code_hash = bytes(await conn.fetchval("SELECT code_hash FROM authorization_codes WHERE client_id = $1", CLIENT))
    rows, buffers = await consume_buffers(
        conn,
        authz.EXCHANGE_CODE_SQL,
        [lit(code_hash), f"'{CLIENT}'", f"'{uuid.uuid4()}'::uuid", lit(uuid.uuid4().bytes * 2), "3600"],
    )
    assert rows == 1 and buffers < 100, (rows, buffers)


async def test_authorize_reaches_the_consent_record_by_its_key(seeded: asyncpg.Connection) -> None:
    """authorize's one statement (``libs/contracts/authz.issue_consented_code`` and
    ``record_consent_and_issue_code``) reaches the user and the consent record by primary key, at
    100,000 consent records (1,000 users x 100 apps, ``CLIENT`` among them), stale and analyzed:
    never from the app's records by ``grants_client``, never a scan of ``grants``."""
    conn = seeded
    first_user = await conn.fetchval("SELECT min(user_id) FROM token_families WHERE client_id = $1", CLIENT)
    await conn.execute(
        """INSERT INTO grants (user_id, client_id, scopes)
           SELECT $2 + u, CASE WHEN a = 0 THEN $1 ELSE $1 || '-' || a END, '{openid,profile}'
           FROM generate_series(0, $3 - 1) u, generate_series(0, 99) a""",
        CLIENT,
        first_user,
        USERS,
    )
    args = [lit(uuid.uuid4().bytes * 2), f"'{CLIENT}'", str(first_user + 7), "'https://app.example/cb'"]
    args += ["'openid'", "NULL", "NULL", "NULL", "now()", "600", "'{openid}'::text[]"]
    for statistics in (False, True):
        if statistics:
            await conn.execute("ANALYZE users, grants")
        for mode in ("force_generic_plan", "force_custom_plan"):
            for sql in (authz.ISSUE_CONSENTED_CODE_SQL, authz.RECORD_CONSENT_AND_ISSUE_CODE_SQL):
                text = await plan(conn, sql, args, mode)
                assert "users_pkey" in text and "grants_pkey" in text, text
                assert "Seq Scan on grants" not in text and "grants_client" not in text, text
