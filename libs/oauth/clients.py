"""OAuth clients as the authz and token services see them (the account service owns the table)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from libs.platform.security import same, token_hash

from .caches import CLIENTS
from .vocabulary import BROWSER_GRANT_TYPES


@dataclass(frozen=True)
class Client:
    id: int
    client_id: str
    name: str
    description: str
    redirect_uris: tuple[str, ...]
    secret_hash: bytes | None
    auth_method: str  # client_secret_post | client_secret_basic | none
    auto_authorize: bool
    internal: bool
    verified: bool = False  # an operator vouches for the app (`oauthctl app verify`)
    grant_types: tuple[str, ...] = BROWSER_GRANT_TYPES  # oauth_apps.grant_types (docs/device.md)

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    def allows(self, grant_type: str) -> bool:
        """May the app use ``grant_type`` (RFC 7591 2 ``grant_types``, set in the developer API)?"""
        return grant_type in self.grant_types

    def verify_secret(self, pepper: bytes, secret: str) -> bool:
        """Constant-time check of a presented client secret against the stored keyed hash."""
        if self.secret_hash is None:
            return False
        return same(token_hash(pepper, secret), self.secret_hash)

    def has_redirect_uri(self, uri: str) -> bool:
        """Exact string matching (RFC 9700 2.1): no prefix, pattern or normalisation."""
        return any(same(uri, registered) for registered in self.redirect_uris)


async def get_client(db: asyncpg.Pool | asyncpg.Connection, client_id: str) -> Client | None:
    """The client ``client_id``, from the process's event-invalidated cache (``caches.CLIENTS``,
    dropped by client.* events) or the table. Unknown ids are not cached."""
    if not client_id or len(client_id) > 100:
        return None
    cached = CLIENTS.get(client_id)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    ticket = CLIENTS.ticket()
    client = await _load_client(db, client_id)
    if client is not None:
        CLIENTS.put(client_id, client, ticket)
    return client


async def _load_client(db: asyncpg.Pool | asyncpg.Connection, client_id: str) -> Client | None:
    row = await db.fetchrow(
        """SELECT id, client_id, name, description, redirect_uris, client_secret_hash, token_endpoint_auth_method,
                  auto_authorize, internal, verified, grant_types
           FROM oauth_apps WHERE client_id = $1""",
        client_id,
    )
    if row is None:
        return None
    return Client(
        id=row["id"],
        client_id=row["client_id"],
        name=row["name"],
        description=row["description"],
        redirect_uris=tuple(row["redirect_uris"]),
        secret_hash=bytes(row["client_secret_hash"]) if row["client_secret_hash"] is not None else None,
        auth_method=row["token_endpoint_auth_method"],
        auto_authorize=row["auto_authorize"],
        internal=row["internal"],
        verified=row["verified"],
        grant_types=tuple(row["grant_types"]),
    )
