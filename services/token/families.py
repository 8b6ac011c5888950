"""Token families: everything issued from one authorization code (RFC 9700 4.14.2; docs/architecture.md).

A family is the unit of revocation: revoking it kills its refresh tokens (in Postgres) and its
access tokens (``revoked:fam:<id>`` in Redis, checked by every ``AccessTokenVerifier``; access
tokens carry the family in ``fam``), and tells every instance with a ``token.revoked`` event written
through the outbox in the same transaction. The revocation functions live in
``libs/oauth/revocation.py`` (authz and account revoke families too); ``revoke_family`` is
re-exported here for the grants.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from libs.oauth.revocation import revoke_family

__all__ = ["create_family", "revoke_family"]


async def create_family(
    conn: asyncpg.Connection,
    family_id: uuid.UUID,
    *,
    client_id: str,
    user_id: int | None,
    scope: str,
    auth_time: datetime | None,
) -> None:
    await conn.execute(
        """INSERT INTO token_families (id, client_id, user_id, scope, auth_time)
           VALUES ($1, $2, $3, $4, $5)""",
        family_id,
        client_id,
        user_id,
        scope,
        auth_time,
    )
