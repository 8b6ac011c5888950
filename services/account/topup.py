"""Top-up codes: created by operators (``oauthctl topup create``), redeemed once by a logged-in user.

A code is ``topup_<256 random bits>``, stored only as HMAC-SHA256(pepper, code). Redemption is one
transaction: the code is consumed by a single conditional ``UPDATE`` (so concurrent redemptions of
one code credit exactly once), the user's quota grows, and ``quota.changed`` goes to the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from libs.oauth.events import outbox
from libs.oauth.events.types import QuotaChanged
from libs.oauth.vocabulary import UserStatus
from libs.platform.security import new_token, token_hash

from . import store

PREFIX = "topup"
MAX_CODE_LEN = 200
MAX_AMOUNT = 10**15  # far below bigint, so quota + amount cannot overflow in practice
MAX_COUNT = 1000


class TopupError(ValueError):
    """A code that cannot be redeemed; ``reason`` is one of ``invalid``, ``used``, ``expired``,
    ``empty``, ``too_large``, ``account`` (the page shows a message for each)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Redeemed:
    amount: int
    quota: int
    used_quota: int


def normalize_code(raw: str | None) -> str:
    code = "".join((raw or "").split())  # pasted codes often carry spaces or line breaks
    if not code:
        raise TopupError("empty")
    if len(code) > MAX_CODE_LEN:
        raise TopupError("invalid")
    return code


async def create_codes(
    conn: asyncpg.Connection | asyncpg.Pool, pepper: bytes, amount: int, count: int = 1, expires_days: int | None = None
) -> list[str]:
    """Create ``count`` codes worth ``amount`` quota units each; return them (to show once)."""
    check_code_batch(amount, count, expires_days)
    codes = [new_token(PREFIX) for _ in range(count)]
    await store.insert_topup_codes(conn, [(token_hash(pepper, c), amount, expires_days) for c in codes])
    return codes


def check_code_batch(amount: int, count: int, expires_days: int | None) -> None:
    """The operator's limits for new codes (ValueError: oauthctl prints the message)."""
    if not 0 < amount <= MAX_AMOUNT:
        raise ValueError(f"amount must be an integer between 1 and {MAX_AMOUNT}")
    if not 0 < count <= MAX_COUNT:
        raise ValueError(f"count must be between 1 and {MAX_COUNT}")
    if expires_days is not None and not 0 < expires_days <= 3650:
        raise ValueError("expires-days must be between 1 and 3650")


async def redeem(pool: asyncpg.Pool, pepper: bytes, user_id: int, raw_code: str | None) -> Redeemed:
    """Credit ``user_id`` with the code's amount, once; ``TopupError`` if the code cannot be used."""
    code_hash = token_hash(pepper, normalize_code(raw_code))
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                return await _redeem_in(conn, code_hash, user_id)
        except asyncpg.NumericValueOutOfRangeError:
            raise TopupError("too_large") from None


async def _redeem_in(conn: asyncpg.Connection, code_hash: bytes, user_id: int) -> Redeemed:
    """The steps of one redemption, inside the caller's transaction (a TopupError rolls back all)."""
    amount = await store.take_topup_code(conn, code_hash, user_id)
    if amount is None:
        state = await store.topup_code_state(conn, code_hash)
        raise TopupError(why_not(None if state is None else (bool(state["used"]), bool(state["expired"]))))
    row = await store.add_quota_if_status(conn, user_id, amount, UserStatus.ACTIVE)
    if row is None:  # gone or disabled meanwhile: roll the code back too
        raise TopupError("account")
    quota, used = int(row["quota"]), int(row["used_quota"])
    await outbox.enqueue(
        conn, QuotaChanged(user_id=user_id, delta=int(amount), quota=quota, used_quota=used, reason="topup")
    )
    return Redeemed(int(amount), quota, used)


def why_not(state: tuple[bool, bool] | None) -> str:
    """Why a code was not taken, from its (used, expired) state (None: there is no such code)."""
    if state is None:
        return "invalid"
    return "used" if state[0] else "expired"
