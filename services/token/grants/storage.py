"""What the code and refresh grants need from storage, as small protocols (the shape of fosite's
``storage.go`` and oidc-provider's Adapter), so the grant rules above them run against in-memory
fakes in tests/unit/domain/test_token_grant_flows.py; ``PgGrantStore`` is the real one.

A grant's store work runs in one transaction (``transaction()``): consuming the code or the
refresh token, creating the token family, storing the new refresh token (``issue_pair``, which also
mints the access token) and the sealed grace response. An exception inside rolls all of it back,
so a request that fails a binding check does not burn the code or the token. The diagnosis of a
code or token that could not be consumed, and revoking a family, run outside it.

Rows are mappings with the columns the contract statements return (``libs/contracts/authz.py``,
``libs/contracts/account.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from libs.contracts import account
from libs.contracts import authz as codes

from .. import store
from ..families import create_family, revoke_family
from ..id_tokens import Authentication
from ..issuance import Deps, Issued, issue_pair

Row = Mapping[str, Any]


@dataclass(frozen=True)
class NewPair:
    """What a new token pair is issued for (issuance.issue_pair's arguments)."""

    family_id: uuid.UUID
    client_id: str
    user_id: int
    scope: str
    parent_id: int | None = None  # the consumed refresh token, on rotation
    auth: Authentication | None = None  # for an id_token (OIDC Core 3.1.3.3, 12.2)


class IssuingTransaction(Protocol):
    async def issue_pair(self, pair: NewPair) -> Issued:
        """A new refresh token in the family and an access token (issuance.issue_pair)."""


class CodeTransaction(IssuingTransaction, Protocol):
    async def consume_code(self, code_hash: bytes, client_id: str, family_id: uuid.UUID) -> Row | None:
        """Mark the live, unexpired code of ``client_id`` used and linked to ``family_id``; its row
        (with the user's email and status), or None when no such code was there."""

    async def create_family(
        self, family_id: uuid.UUID, *, client_id: str, user_id: int, scope: str, auth_time: datetime | None
    ) -> None: ...


class RefreshTransaction(IssuingTransaction, Protocol):
    async def consume_refresh_token(self, refresh_hash: bytes, client_id: str) -> Row | None:
        """Mark the live token of a non-revoked family of ``client_id`` used; its row, or None."""

    async def store_grace_response(self, refresh_id: int, sealed: bytes) -> None: ...


class FamilyRevoker(Protocol):
    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        """Revoke every token of the family (libs/oauth/revocation.py)."""


class CodeGrantStore(FamilyRevoker, Protocol):
    def transaction(self) -> AbstractAsyncContextManager[CodeTransaction]: ...

    async def diagnose_code(self, code_hash: bytes) -> Row | None:
        """``client_id``, ``used_at``, ``family_id``, ``expired`` of a code, or None if unknown."""


class RefreshGrantStore(FamilyRevoker, Protocol):
    def transaction(self) -> AbstractAsyncContextManager[RefreshTransaction]: ...

    async def diagnose_refresh_token(self, refresh_hash: bytes, grace_seconds: float) -> Row | None:
        """The token's state (store.DIAGNOSE_REFRESH_SQL's columns), or None if unknown."""


class PgTransaction:
    """One grant's transaction on PostgreSQL (both CodeTransaction and RefreshTransaction)."""

    def __init__(self, conn: asyncpg.Connection, deps: Deps) -> None:
        self.conn = conn
        self.deps = deps

    async def consume_code(self, code_hash: bytes, client_id: str, family_id: uuid.UUID) -> Row | None:
        return await codes.consume_code(self.conn, code_hash, client_id, family_id)

    async def create_family(
        self, family_id: uuid.UUID, *, client_id: str, user_id: int, scope: str, auth_time: datetime | None
    ) -> None:
        await create_family(
            self.conn, family_id, client_id=client_id, user_id=user_id, scope=scope, auth_time=auth_time
        )

    async def consume_refresh_token(self, refresh_hash: bytes, client_id: str) -> Row | None:
        return await account.consume_refresh_token(self.conn, refresh_hash, client_id)

    async def store_grace_response(self, refresh_id: int, sealed: bytes) -> None:
        await store.store_grace_response(self.conn, refresh_id, sealed)

    async def issue_pair(self, pair: NewPair) -> Issued:
        return await issue_pair(
            self.conn,
            self.deps,
            family_id=pair.family_id,
            client_id=pair.client_id,
            user_id=pair.user_id,
            scope=pair.scope,
            parent_id=pair.parent_id,
            auth=pair.auth,
        )


class PgGrantStore:
    """The grants' storage on the app's pool, Redis (revoked families) and keys (``Deps``)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgTransaction]:
        async with self.deps.pool.acquire() as conn, conn.transaction():
            yield PgTransaction(conn, self.deps)

    async def diagnose_code(self, code_hash: bytes) -> Row | None:
        return await codes.diagnose_code(self.deps.pool, code_hash)

    async def diagnose_refresh_token(self, refresh_hash: bytes, grace_seconds: float) -> Row | None:
        return await account.diagnose_refresh_token(self.deps.pool, refresh_hash, grace_seconds)

    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        await revoke_family(self.deps.pool, self.deps.redis, self.deps.settings, family_id, reason)
