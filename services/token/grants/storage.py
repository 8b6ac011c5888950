"""What the code and refresh grants need from storage and from the signer, as small protocols (the
shape of fosite's ``storage.go`` and oidc-provider's Adapter), so the grant rules above them run
against in-memory fakes in tests/unit/domain/test_token_grant_flows.py; ``PgGrantStore`` is the
real one.

A grant looks its code or token up by its hash (``find_code``, ``find_refresh_token``: also what
says why one could not be consumed), checks its rules, mints the new pair (``mint_pair``: nothing
stored), and then ONE statement consumes the code or token and stores the new refresh token
(``exchange_code``, ``rotate_refresh_token``): no transaction is held open while signing
(docs/performance.md). A rule that fails before that statement consumes nothing, so a request that
gets a binding wrong does not burn the code or the token; a statement that matches nothing (a
concurrent request won, or a revocation came between) writes nothing and its pair is dropped
unseen. Revoking a family runs in its own transaction.

Rows are mappings with the columns the contract statements return (``libs/contracts/authz.py``,
``libs/contracts/account.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from libs.contracts import account
from libs.contracts import authz as codes

from .. import store
from ..families import revoke_family
from ..id_tokens import Authentication
from ..issuance import Deps, Minted, mint_pair

Row = Mapping[str, Any]


@dataclass(frozen=True)
class NewPair:
    """What a new token pair is minted for (issuance.mint_pair's arguments)."""

    family_id: uuid.UUID
    client_id: str
    user_id: int
    scope: str
    auth: Authentication | None = None  # for an id_token (OIDC Core 3.1.3.3, 12.2)


class PairMinter(Protocol):
    async def mint_pair(self, pair: NewPair) -> Minted:
        """A new refresh token and access token (and id_token), signed, not stored."""


class FamilyRevoker(Protocol):
    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        """Revoke every token of the family (libs/oauth/revocation.py)."""


class CodeGrantStore(PairMinter, FamilyRevoker, Protocol):
    async def find_code(self, code_hash: bytes) -> Row | None:
        """The code's bindings and state with its user's email and status
        (libs/contracts/authz.CODE_SQL's columns), or None if unknown."""

    async def exchange_code(
        self, code_hash: bytes, client_id: str, family_id: uuid.UUID, refresh_hash: bytes
    ) -> int | None:
        """Consume the live code of ``client_id`` (of an active user), start ``family_id`` from it
        and store its first refresh token, at once; the refresh token's id, or None (nothing
        written)."""


class RefreshGrantStore(PairMinter, FamilyRevoker, Protocol):
    async def find_refresh_token(self, refresh_hash: bytes, grace_seconds: float) -> Row | None:
        """The token's state with its family and user (libs/contracts/account.REFRESH_SQL's
        columns), or None if unknown."""

    async def rotate_refresh_token(
        self, refresh_id: int, family_id: uuid.UUID, client_id: str, child_hash: bytes, sealed: bytes
    ) -> int | None:
        """Consume the live token (of a live family of ``client_id`` and an active user), keep
        ``sealed`` on it and insert its child, at once; the child's id, or None (nothing written)."""


class PgGrantStore:
    """The grants' storage on one pooled connection (``db``), with Redis (revoked families) and
    the keys from ``Deps``."""

    def __init__(self, deps: Deps, db: store.DB | None = None) -> None:
        self.deps = deps
        self.db: store.DB = deps.pool if db is None else db
        self.ttl = float(deps.settings.refresh_token_ttl_seconds)

    async def mint_pair(self, pair: NewPair) -> Minted:
        return await mint_pair(
            self.deps,
            family_id=pair.family_id,
            client_id=pair.client_id,
            user_id=pair.user_id,
            scope=pair.scope,
            auth=pair.auth,
        )

    async def find_code(self, code_hash: bytes) -> Row | None:
        return await codes.find_code(self.db, code_hash)

    async def exchange_code(
        self, code_hash: bytes, client_id: str, family_id: uuid.UUID, refresh_hash: bytes
    ) -> int | None:
        return await codes.exchange_code(self.db, code_hash, client_id, family_id, refresh_hash, self.ttl)

    async def find_refresh_token(self, refresh_hash: bytes, grace_seconds: float) -> Row | None:
        return await account.find_refresh_token(self.db, refresh_hash, grace_seconds)

    async def rotate_refresh_token(
        self, refresh_id: int, family_id: uuid.UUID, client_id: str, child_hash: bytes, sealed: bytes
    ) -> int | None:
        return await account.rotate_refresh_token(
            self.db, refresh_id, family_id, client_id, child_hash, self.ttl, sealed
        )

    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        await revoke_family(self.deps.pool, self.deps.redis, self.deps.settings, family_id, reason)
