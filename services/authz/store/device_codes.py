"""Table ``device_codes`` (RFC 8628; docs/device.md): owned by authz, which finds a request by its
user code on /device; the user's answer, which locks the user's row first, is a contract
(``libs/contracts/authz.answer_device_code``). The token service creates the rows and consumes
them (docs/contracts.md)."""

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
