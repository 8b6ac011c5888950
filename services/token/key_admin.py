"""Signing-key rotation for operators (``oauthctl keys ...``); the keys themselves: libs/oauth/keys.py.

A key's life, all driven by two timestamps of its ``signing_keys`` row:

    added ──(activation delay)──> activates_at ────────> retired_at ──(verify window)──> prunable
    in JWKS, verifies             signs (newest active)   stops signing; still in JWKS,   gone from JWKS;
                                                          still verifies                  ``keys prune`` deletes

- ``add``: a new key, published at once and signing from ``activates_at`` (the activation delay,
  SIGNING_KEY_ACTIVATION_DELAY_SECONDS by default, lets every verifier and every client's JWKS cache
  learn it before any token carries its kid). The keys of the same algorithm that sign now are
  scheduled to retire at that same instant: one command rotates, and there is never a moment
  without a signing key.
- ``retire``: stop signing with a key now (refused if it is the last key that can sign for the
  configured algorithm). A retired key keeps verifying for the verify window: the longest lifetime
  of anything it signed (access tokens and id_tokens live ACCESS_TOKEN_TTL_SECONDS) plus a margin
  for instances that have not reloaded yet. Nothing is ever deleted by ``retire``.
- ``prune``: delete keys retired longer ago than the verify window: every token they signed has
  expired, and no verifier loads them any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from libs.contracts.token import add_signing_key
from libs.oauth.keys import ALGORITHMS, KEYGEN_LOCK
from libs.platform.config import Settings

from . import store

RELOAD_MARGIN_SECONDS = 300  # as libs/oauth/access_tokens.setup_tokens: instances reload every 30 s
ID_TOKEN_ALGORITHMS = ("RS256", "ES256")  # id_tokens must be verifiable by clients (services/token/id_tokens.py)


class KeyAdminError(Exception):
    """An operator request that is refused, with what to do instead."""


def verify_window(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.access_token_ttl_seconds + RELOAD_MARGIN_SECONDS)


def signing_algorithms(settings: Settings) -> set[str]:
    """Algorithms that must always have a key able to sign: the configured one, and RS256 for
    id_tokens when access tokens use the legacy HS256."""
    algs: set[str] = {settings.jwt_algorithm}
    if settings.jwt_algorithm not in ID_TOKEN_ALGORITHMS:
        algs.add("RS256")
    return algs


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    alg: str
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None
    state: str  # pending | active | signing | retired | expired
    verifies_until: datetime | None  # None: until retired


@dataclass(frozen=True)
class Added:
    kid: str
    alg: str
    activates_at: datetime
    retiring: list[str]  # kids scheduled to retire at activates_at


def _state(row: asyncpg.Record, now: datetime, window: timedelta) -> str:
    retired = row["retired_at"]
    if row["activates_at"] > now:
        return "pending"
    if retired is None or retired > now:
        return "active"
    return "retired" if retired > now - window else "expired"


async def list_keys(conn: asyncpg.Connection, settings: Settings) -> list[KeyInfo]:
    rows = await store.all_keys(conn)
    window = verify_window(settings)
    infos: list[KeyInfo] = []
    newest_active: dict[str, str] = {}
    for r in rows:
        now = r["now"]
        state = _state(r, now, window)
        if state == "active":
            newest_active[r["alg"]] = r["kid"]  # rows are in activation order: the last one signs
        until = r["retired_at"] + window if r["retired_at"] is not None else None
        infos.append(KeyInfo(r["kid"], r["alg"], r["created_at"], r["activates_at"], r["retired_at"], state, until))
    return [
        KeyInfo(k.kid, k.alg, k.created_at, k.activates_at, k.retired_at, "signing", k.verifies_until)
        if newest_active.get(k.alg) == k.kid
        else k
        for k in infos
    ]


async def add(conn: asyncpg.Connection, alg: str, activate_in: int, *, retire_old: bool = True) -> Added:
    """Publish a new key now, signing from ``now + activate_in``; the keys of ``alg`` that would
    still sign then are retired at that instant (unless ``retire_old`` is False)."""
    if alg not in ALGORITHMS:
        raise KeyAdminError(f"unsupported algorithm {alg}; use one of {', '.join(ALGORITHMS)}")
    if activate_in < 0:
        raise KeyAdminError("--activate-in must be 0 or more seconds")
    async with conn.transaction():
        await store.lock_keygen(conn, KEYGEN_LOCK)  # as ensure_signing_key
        kid = await add_signing_key(conn, alg, activate_in)
        activates_at = await store.key_activation(conn, kid)
        retiring: list[str] = []
        if retire_old:
            retiring = await store.retire_signing_keys_at(conn, alg, kid, activates_at)
    return Added(kid, alg, activates_at, retiring)


async def retire(conn: asyncpg.Connection, settings: Settings, kid: str) -> datetime:
    """Stop signing with ``kid`` now; returns until when it still verifies."""
    async with conn.transaction():
        await store.lock_keygen(conn, KEYGEN_LOCK)
        row = await store.lock_key(conn, kid)
        if row is None:
            raise KeyAdminError(f"no key with kid {kid!r}; see 'oauthctl keys list'")
        if row["done"]:
            raise KeyAdminError(f"key {kid} is already retired (since {row['retired_at']:%Y-%m-%d %H:%M:%S %Z})")
        alg = row["alg"]
        if row["signs"] and alg in signing_algorithms(settings):
            others = await store.other_signing_keys(conn, alg, kid)
            if not others:
                raise KeyAdminError(
                    f"key {kid} is the only {alg} key that can sign now; add one first "
                    f"('oauthctl keys add --alg {alg}', which also retires this one when the new key activates)"
                )
        retired_at = await store.retire_key_now(conn, kid)
    return retired_at + verify_window(settings)


async def prune(conn: asyncpg.Connection, settings: Settings) -> list[str]:
    """Delete keys whose every token has expired (retired longer ago than the verify window)."""
    return await store.delete_keys_retired_before(conn, verify_window(settings))


def fmt(ts: datetime | None) -> str:
    return "-" if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
