"""``grant_type=authorization_code`` (RFC 6749 4.1.3, RFC 7636 4.6, RFC 9700 2.1.1 and 4.5).

The code is looked up by its hash with its user (``find_code``, libs/contracts/authz.find_code) and
its bindings are checked: redirect_uri, PKCE, an active user. A request that gets them wrong
consumes nothing, so it does not burn the code for the legitimate client (a PKCE verifier is 256
bits and cannot be guessed by retrying). Then the token pair is minted, and ONE atomic statement
(``exchange_code``, docs/contracts.md) consumes the code (bound to the calling client, unused,
unexpired, of a user still active), creates the token family linked to it and stores the first
refresh token: two round trips to PostgreSQL per exchange, no transaction held open while signing
(docs/performance.md). Two concurrent exchanges of one code cannot both succeed: the second
statement blocks on the row lock, then finds it used and writes nothing; its minted pair is
dropped unseen. Binding to the client is part of that statement's WHERE clause, so a code
presented by another client is never consumed (it stays usable by the client it was issued to;
RFC 6749 4.1.3 answers ``invalid_grant`` either way).

A code that was already used is a replay (RFC 6749 4.1.2, 10.5): the family issued from it is
revoked (refresh tokens and access tokens) and the answer is ``invalid_grant``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

from libs.oauth.clients import Client
from libs.oauth.errors import InvalidGrant
from libs.platform.security import same, token_hash

from ..form import required
from ..id_tokens import Authentication
from ..issuance import Deps
from .storage import CodeGrantStore, NewPair, PgGrantStore, Row

log = logging.getLogger("oauth.token")

ACTIVE = 1  # users.status
VERIFIER_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 4.1


@dataclass(frozen=True)
class CodeRequest:
    """The validated form of an authorization_code request (RFC 6749 4.1.3)."""

    code: str
    redirect_uri: str
    code_verifier: str | None


@dataclass(frozen=True)
class ConsumedCode:
    """What the authorization request bound to the code (``find_code``'s row)."""

    redirect_uri: str
    code_challenge: str | None
    code_challenge_method: str | None
    user_status: int

    @classmethod
    def of(cls, row: Any) -> ConsumedCode:
        return cls(row["redirect_uri"], row["code_challenge"], row["code_challenge_method"], row["user_status"])


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def verify_pkce(challenge: str | None, method: str | None, verifier: str | None, *, public_client: bool) -> None:
    """RFC 7636 4.6, and no downgrade (RFC 9700 2.1.1): a verifier without a challenge fails."""
    if challenge is None:
        if verifier is not None:
            raise InvalidGrant("code_verifier was sent, but the authorization request had no code_challenge")
        if public_client:
            raise InvalidGrant("Public clients must use PKCE (code_challenge_method=S256)")
        return
    # The authorize endpoint accepts only S256; a missing method is read as S256, which can only
    # make a "plain" verifier fail, never pass.
    if method not in (None, "S256"):
        raise InvalidGrant("Unsupported code_challenge_method")
    if verifier is None:
        raise InvalidGrant("code_verifier is missing")
    if not VERIFIER_RE.fullmatch(verifier):
        raise InvalidGrant("code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~")
    if not same(s256(verifier), challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge")


def check_bindings(code: ConsumedCode, client: Client, redirect_uri: str, code_verifier: str | None) -> None:
    """RFC 6749 4.1.3 (redirect_uri identical), RFC 7636 4.6 (PKCE), and an active user. The client
    binding and single use are in the consuming statement (libs/contracts/authz.exchange_code)."""
    if not same(redirect_uri, code.redirect_uri):
        raise InvalidGrant("redirect_uri is not identical to the one of the authorization request")
    verify_pkce(code.code_challenge, code.code_challenge_method, code_verifier, public_client=client.is_public)
    if code.user_status != ACTIVE:
        raise InvalidGrant("The user account is disabled")


async def exchange_code(
    deps: Deps, client: Client, *, code: str, redirect_uri: str, code_verifier: str | None
) -> dict[str, object]:
    async with deps.pool.acquire() as conn:  # one connection for the lookup and the statement
        return await exchange(
            PgGrantStore(deps, conn),
            deps.settings.pepper_bytes,
            client,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
        )


async def exchange(
    grants: CodeGrantStore, pepper: bytes, client: Client, *, code: str, redirect_uri: str, code_verifier: str | None
) -> dict[str, Any]:
    """Look the code up, check its bindings, mint the first pair, then consume the code and store
    the family in one statement (storage.py); a code that could not be consumed is diagnosed
    (``_not_consumed``)."""
    code_hash = token_hash(pepper, code)
    row = await grants.find_code(code_hash)
    if row is not None and _consumable(row, client):
        check_bindings(ConsumedCode.of(row), client, redirect_uri, code_verifier)  # raises: nothing consumed
        family_id = uuid.uuid4()
        auth = Authentication(auth_time=row["auth_time"], nonce=row["nonce"], email=row["email"])
        minted = await grants.mint_pair(NewPair(family_id, client.client_id, row["user_id"], row["scope"], auth))
        if await grants.exchange_code(code_hash, client.client_id, family_id, minted.refresh_hash) is not None:
            return minted.body
        row = await grants.find_code(code_hash)  # used or revoked meanwhile, or its user disabled
        if row is not None and _consumable(row, client) and row["user_status"] != ACTIVE:
            raise InvalidGrant("The user account is disabled")
    return await _not_consumed(grants, client, row)


def _consumable(row: Row, client: Client) -> bool:
    """Could the consuming statement match this code (``find_code``'s row)?"""
    return bool(row["client_id"] == client.client_id and row["used_at"] is None and not row["expired"])


async def _not_consumed(grants: CodeGrantStore, client: Client, known: Row | None) -> NoReturn:
    """Why the code could not be consumed; a replay revokes the family issued from it."""
    if known is None or known["client_id"] != client.client_id:
        why = "unknown code" if known is None else f"code of client {known['client_id']}"
        raise InvalidGrant("The authorization code is invalid or was issued to another client", detail=why)
    if known["used_at"] is not None:
        log.warning("authorization code replayed", extra={"client_id": client.client_id})
        if known["family_id"] is not None:
            await grants.revoke_family(known["family_id"], "code_replay")
        raise InvalidGrant(
            "The authorization code was already used; the tokens issued from it are revoked",
            detail=f"code replay: family {known['family_id']} revoked",
        )
    if known["expired"]:
        raise InvalidGrant("The authorization code expired")
    raise InvalidGrant("The authorization code is invalid")


class AuthorizationCodeGrant:
    """``grant_type=authorization_code``: validate the form, then exchange the code."""

    name = "authorization_code"

    def validate(self, client: Client, form: dict[str, str]) -> CodeRequest:
        return CodeRequest(required(form, "code"), required(form, "redirect_uri"), form.get("code_verifier"))

    async def issue(self, deps: Deps, client: Client, request: CodeRequest) -> dict[str, Any]:
        return await exchange_code(
            deps, client, code=request.code, redirect_uri=request.redirect_uri, code_verifier=request.code_verifier
        )
