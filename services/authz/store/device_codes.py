"""Table ``device_codes`` (RFC 8628; docs/device.md): owned by authz, which finds a request by its
user code on /device and records the user's answer. The token service creates the rows and
consumes them (docs/contracts.md)."""

from __future__ import annotations

import asyncpg


async def find_pending(db: asyncpg.Pool, user_code_hash: bytes) -> asyncpg.Record | None:
    """The live, unanswered request with this user code (keyed hash of its normal form)."""
    return await db.fetchrow(
        """SELECT id, client_id, scope, device_agent, device_ip, created_at
           FROM device_codes
           WHERE user_code_hash = $1 AND status = 'pending' AND expires_at > now()""",
        user_code_hash,
    )


async def answer(
    conn: asyncpg.Connection, device_id: int, *, approved: bool, user_id: int, auth_time: int
) -> asyncpg.Record | None:
    """Record the user's answer on a still pending, live request (once); its client and scope."""
    return await conn.fetchrow(
        """UPDATE device_codes
           SET status = $2, user_id = $3, auth_time = to_timestamp($4), decided_at = now()
           WHERE id = $1 AND status = 'pending' AND expires_at > now()
           RETURNING client_id, scope""",
        device_id,
        "approved" if approved else "denied",
        user_id,
        auth_time,
    )
