"""``grant_type=refresh_token`` (RFC 6749 6, RFC 9700 4.14.2): rotation on every use, reuse
detection, and a short grace window for concurrent refreshes.

The presented token is looked up by its hash with its family and user (``find_refresh_token``,
libs/contracts/account.find_refresh_token). If it is live, the new pair is minted and the response
sealed for the grace window: AES-256-GCM under a key derived from the presented token
(HMAC-SHA256(pepper, "grace:" + token)), so only its holder can read it back and the database
alone reveals nothing. Then ONE atomic statement (``rotate_refresh_token``) consumes the token
(still unused, of a non-revoked family of the calling client, with an active user), stores the
sealed response on it and inserts the child: two round trips to PostgreSQL per rotation and no
transaction held open while signing (docs/performance.md). A pair minted for a statement that
matched nothing is dropped unseen.

When the token is not live, or the statement matched nothing (it is then looked up again):
- used within ``refresh_grace_seconds`` while its child is still unused (i.e. it is the immediate
  predecessor of the family's live token) -> the same response again. Two tabs refreshing at once
  both succeed with the same pair: the loser's UPDATE waits on the row lock until the winner's
  statement commits, then sees the row used, and the loser reads the winner's grace_response;
- used otherwise (outside the window, or an older ancestor) -> reuse: the whole family is revoked;
- unknown, expired, another client's, or of a revoked family -> ``invalid_grant``.

A requested ``scope`` must be within the family's (originally granted) scope and narrows the new
access token; the refresh token keeps the original grant (RFC 6749 6: "If omitted is treated as
equal to the scope originally granted").
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libs.oauth.clients import Client
from libs.oauth.errors import InvalidGrant, InvalidScope
from libs.oauth.vocabulary import REFRESH_PREFIX
from libs.platform.security import token_hash

from ..form import required
from ..id_tokens import Authentication
from ..issuance import GRACE_NONCE_BYTES, Deps
from .storage import NewPair, PgGrantStore, RefreshGrantStore, Row

log = logging.getLogger("oauth.token")

ACTIVE = 1  # users.status
MAX_TOKEN_CHARS = 256


@dataclass(frozen=True)
class RefreshRequest:
    """The validated form of a refresh_token request (RFC 6749 6)."""

    refresh_token: str
    scope: str | None


@dataclass(frozen=True)
class Unconsumed:
    """What is known about a presented refresh token that could not be consumed
    (libs/contracts/account.find_refresh_token)."""

    client_id: str
    family_revoked: bool
    used: bool
    expired: bool
    in_grace: bool  # used within refresh_grace_seconds
    child_live: bool  # its child is unused: it is the immediate predecessor of the live token
    has_grace_response: bool
    user_active: bool

    @classmethod
    def of(cls, row: Any) -> Unconsumed:
        return cls(
            client_id=row["client_id"],
            family_revoked=bool(row["family_revoked"]),
            used=bool(row["used"]),
            expired=bool(row["expired"]),
            in_grace=bool(row["in_grace"]),
            child_live=bool(row["child_live"]),
            has_grace_response=row["grace_response"] is not None,
            user_active=row["user_status"] == ACTIVE,
        )


# --- scope ---------------------------------------------------------------------------------------
def narrowed_scope(granted: str, requested: str | None) -> str:
    """The scope of the new access token: ``requested`` if within ``granted`` (else invalid_scope)."""
    wanted = set((requested or "").split())
    if not wanted:
        return granted
    granted_list = granted.split()
    if not wanted <= set(granted_list):
        raise InvalidScope("The requested scope exceeds the scope originally granted")
    return " ".join(s for s in granted_list if s in wanted)


# --- the grace response, readable only by the holder of the old token ----------------------------
def _grace_key(pepper: bytes, old_token: str) -> bytes:
    return hmac.new(pepper, b"grace:" + old_token.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def _aad(row_id: int) -> bytes:
    return b"refresh_tokens.grace_response:" + str(row_id).encode()


def seal_response(
    pepper: bytes, old_token: str, row_id: int, body: dict[str, Any], nonce: bytes | None = None
) -> bytes:
    """``body`` encrypted for the holder of ``old_token``; ``nonce``: 12 fresh CSPRNG bytes
    (issuance.Minted.grace_nonce, drawn with the pair's other random values), else drawn here."""
    nonce = nonce or os.urandom(GRACE_NONCE_BYTES)
    return nonce + AESGCM(_grace_key(pepper, old_token)).encrypt(nonce, orjson.dumps(body), _aad(row_id))


def open_response(pepper: bytes, old_token: str, row_id: int, sealed: bytes) -> dict[str, Any] | None:
    try:
        plain = AESGCM(_grace_key(pepper, old_token)).decrypt(sealed[:12], sealed[12:], _aad(row_id))
    except (InvalidTag, ValueError):
        return None
    body = orjson.loads(plain)
    return body if isinstance(body, dict) else None


# --- the grant -----------------------------------------------------------------------------------
def decide_unconsumed(known: Unconsumed | None, client_id: str) -> Literal["grace", "reuse"]:
    """RFC 9700 4.14.2: why a token could not be consumed. "grace": a concurrent refresh within the
    window (answer the sealed response again); "reuse": revoke the family; else invalid_grant."""
    if known is None or known.client_id != client_id:
        raise InvalidGrant("The refresh token is invalid or was issued to another client")
    if known.family_revoked:
        raise InvalidGrant("The refresh token was revoked")
    if not known.used:
        raise InvalidGrant("The refresh token expired" if known.expired else "The refresh token is invalid")
    if known.in_grace and known.child_live and known.has_grace_response:
        if not known.user_active:
            raise InvalidGrant("The user account is disabled")
        return "grace"
    return "reuse"


async def rotate(deps: Deps, client: Client, *, refresh_token: str, scope: str | None) -> dict[str, Any]:
    settings = deps.settings
    async with deps.pool.acquire() as conn:  # one connection for the lookup and the statement
        return await rotate_with(
            PgGrantStore(deps, conn),
            settings.pepper_bytes,
            float(settings.refresh_grace_seconds),
            client,
            refresh_token=refresh_token,
            scope=scope,
        )


async def rotate_with(
    grants: RefreshGrantStore,
    pepper: bytes,
    grace_seconds: float,
    client: Client,
    *,
    refresh_token: str,
    scope: str | None,
) -> dict[str, Any]:
    """Look the token up, mint its child's pair and seal the response, then consume the token and
    insert the child in one statement (storage.py); a token that could not be consumed is
    diagnosed (``_not_consumed``)."""
    presented_hash = token_hash(pepper, refresh_token)
    row = await grants.find_refresh_token(presented_hash, grace_seconds)
    if row is not None and _live(row, client):
        # Checked again by the consuming statement; failing here consumes nothing.
        if row["user_status"] != ACTIVE:
            raise InvalidGrant("The user account is disabled")
        access_scope = narrowed_scope(row["scope"], scope)
        # OIDC 12.2: a refreshed id_token keeps the original auth_time and has no nonce.
        auth = Authentication(auth_time=row["auth_time"], nonce=None, email=row["email"])
        minted = await grants.mint_pair(NewPair(row["family_id"], client.client_id, row["user_id"], access_scope, auth))
        sealed = seal_response(pepper, refresh_token, row["id"], minted.body, minted.grace_nonce)
        child = await grants.rotate_refresh_token(
            row["id"], row["family_id"], client.client_id, minted.refresh_hash, sealed
        )
        if child is not None:
            return minted.body
        row = await grants.find_refresh_token(presented_hash, grace_seconds)  # what changed meanwhile
        if row is not None and _live(row, client) and row["user_status"] != ACTIVE:
            raise InvalidGrant("The user account is disabled")
    return await _not_consumed(grants, pepper, client, refresh_token, row)


def _live(row: Row, client: Client) -> bool:
    """Could the consuming statement match this token (``find_refresh_token``'s row)?"""
    return bool(
        not row["used"]
        and not row["expired"]
        and not row["family_revoked"]
        and row["client_id"] == client.client_id
        and row["user_id"] is not None
    )


async def _not_consumed(
    grants: RefreshGrantStore, pepper: bytes, client: Client, refresh_token: str, known: Row | None
) -> dict[str, Any]:
    """Why the token could not be consumed: a retry within the grace window, reuse, or just invalid."""
    family_id: uuid.UUID | None = known["family_id"] if known is not None else None
    if decide_unconsumed(Unconsumed.of(known) if known is not None else None, client.client_id) == "grace":
        assert known is not None  # decide_unconsumed raised for an unknown token
        body = open_response(pepper, refresh_token, known["id"], bytes(known["grace_response"]))
        if body is not None:
            return body
        log.error("grace response unreadable", extra={"family_id": str(family_id)})
    assert family_id is not None  # decide_unconsumed raised for an unknown token
    log.warning("refresh token reused", extra={"client_id": client.client_id, "family_id": str(family_id)})
    await grants.revoke_family(family_id, "refresh_reuse")
    raise InvalidGrant(
        "The refresh token was already used; all tokens of this grant are revoked",
        detail=f"refresh token reuse: family {family_id} revoked",
    )


class RefreshTokenGrant:
    """``grant_type=refresh_token``: validate the form, then rotate."""

    name = "refresh_token"

    def validate(self, client: Client, form: dict[str, str]) -> RefreshRequest:
        token = required(form, "refresh_token")
        if not token.startswith(REFRESH_PREFIX + "_") or len(token) > MAX_TOKEN_CHARS:
            raise InvalidGrant("The refresh token is invalid")
        return RefreshRequest(token, form.get("scope"))

    async def issue(self, deps: Deps, client: Client, request: RefreshRequest) -> dict[str, Any]:
        return await rotate(deps, client, refresh_token=request.refresh_token, scope=request.scope)
