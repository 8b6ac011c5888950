"""``grant_type=client_credentials`` (RFC 6749 4.4) for internal services: machine tokens.

Only confidential apps that an operator flagged as internal (``oauth_apps.internal``, set with
``oauthctl app set-internal --client-id X``) may use it; any other authenticated client gets
``unauthorized_client`` (RFC 6749 5.2). The client authenticated at the token endpoint already
(``client_auth``), so a wrong secret is ``invalid_client`` before this grant runs.

Scopes are the machine scopes only (``MACHINE_SCOPES``): a user scope such as ``profile`` or an
unknown one is ``invalid_scope``. Without ``scope`` the token gets ``DEFAULT_SCOPE`` (RFC 6749 3.3:
a pre-defined default; the least privileged one).

The response has no refresh token (RFC 6749 4.4.3: "A refresh token SHOULD NOT be included"): the
client just asks again. The access token is the usual RFC 9068 JWT with ``sub`` = ``client_id``
(RFC 9068 2.2: no resource owner), no user and no token family; nothing is written to the
database, so issuing one costs a client lookup and a signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from libs.oauth.access_tokens import mint
from libs.oauth.clients import Client
from libs.oauth.errors import InvalidScope, UnauthorizedClient

from ..issuance import Deps

MACHINE_SCOPES = ("quota:read", "quota:write")
DEFAULT_SCOPE = "quota:read"


def machine_scope(requested: str | None) -> str:
    """The granted scope: the requested machine scopes in canonical order, else ``invalid_scope``."""
    wanted = (requested or DEFAULT_SCOPE).split()
    unknown = [s for s in wanted if s not in MACHINE_SCOPES]
    if unknown:
        raise InvalidScope(
            f"Unknown scope for client_credentials: {' '.join(unknown)[:200]}; allowed: {', '.join(MACHINE_SCOPES)}",
        )
    return " ".join(s for s in MACHINE_SCOPES if s in wanted)


@dataclass(frozen=True)
class MachineRequest:
    scope: str  # the granted machine scope


def check_machine_client(client: Client) -> None:
    """Only internal confidential apps (RFC 6749 4.4, 5.2 unauthorized_client)."""
    if client.is_public or not client.internal:
        raise UnauthorizedClient(
            "This client may not use client_credentials: only internal confidential apps may "
            "(an operator enables it with 'oauthctl app set-internal')",
        )


class ClientCredentialsGrant:
    """``grant_type=client_credentials``: validate the client and scope, then mint."""

    name = "client_credentials"

    def validate(self, client: Client, form: dict[str, str]) -> MachineRequest:
        check_machine_client(client)
        return MachineRequest(machine_scope(form.get("scope")))

    async def issue(self, deps: Deps, client: Client, request: MachineRequest) -> dict[str, Any]:
        settings = deps.settings

        async def minter(*, sub: str, client_id: str, scope: str) -> str:
            access, _claims = await mint(deps.keys, settings, sub=sub, client_id=client_id, scope=scope, family=None)
            return access

        return await machine_token(minter, settings.access_token_ttl_seconds, client, request)


class MachineMinter(Protocol):
    """Signs an access token with no token family (libs/oauth/access_tokens.mint, ``family=None``)."""

    async def __call__(self, *, sub: str, client_id: str, scope: str) -> str: ...


async def machine_token(
    minter: MachineMinter, ttl_seconds: int, client: Client, request: MachineRequest
) -> dict[str, Any]:
    """RFC 6749 4.4.3: an access token whose subject is the client itself (RFC 9068 2.2), and no
    refresh token; nothing is stored."""
    access = await minter(sub=client.client_id, client_id=client.client_id, scope=request.scope)
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl_seconds,
        "scope": request.scope,
    }
