"""The grant types of the token endpoint (RFC 6749 4.1.3, 4.4, 6; RFC 8628 3.4), one class per grant, each with
a visible validate -> issue shape (as Authlib's rfc6749/grants), registered in ``GRANTS`` by name.

``validate`` reads the form for an authenticated client and raises ``OAuthError``; ``issue`` does
the store work (one transaction) and returns the RFC 6749 5.1 body.
"""

from __future__ import annotations

from typing import Any, Protocol

from libs.oauth.clients import Client

from ..issuance import Deps
from .authorization_code import AuthorizationCodeGrant
from .client_credentials import ClientCredentialsGrant
from .device_code import DeviceCodeGrant
from .refresh_token import RefreshTokenGrant


class GrantType(Protocol):
    name: str

    def validate(self, client: Client, form: dict[str, str]) -> Any: ...

    async def issue(self, deps: Deps, client: Client, request: Any) -> dict[str, Any]: ...


GRANTS: dict[str, GrantType] = {
    grant.name: grant
    for grant in (
        AuthorizationCodeGrant(),
        RefreshTokenGrant(),
        ClientCredentialsGrant(),
        DeviceCodeGrant(),
    )
}
