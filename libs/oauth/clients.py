"""OAuth clients as the authz and token services see them (the account service owns the table;
read through ``libs/contracts/account.get_client``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from libs.platform.security import same, token_hash

from .vocabulary import BROWSER_GRANT_TYPES

# The developer console's integration test tool (services/account/developer_tool.py) receives the
# authorization response here, on the platform's own origin. A developer may register this URL on
# their app; a code sent to it is exchanged in the tool's page with PKCE S256 and no client secret
# (services/token/client_auth.py "tool exchange"), so no secret ever reaches a browser.
TOOL_CALLBACK_PATH = "/developer/tool/callback"


def tool_callback_url(public_base_url: str) -> str:
    return public_base_url.rstrip("/") + TOOL_CALLBACK_PATH


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
    # The secret replaced by the last rotation, valid until its expiry (docs/api.md "Rotate the secret")
    previous_secret_hash: bytes | None = None
    previous_secret_expires_at: datetime | None = None
    # What the login and consent pages show about the app ('' = not given; docs/api.md "OAuth apps").
    logo_url: str = ""
    developer_name: str = ""
    homepage_url: str = ""
    privacy_url: str = ""
    terms_url: str = ""
    grant_types: tuple[str, ...] = BROWSER_GRANT_TYPES  # oauth_apps.grant_types (docs/device.md)

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    def allows(self, grant_type: str) -> bool:
        """May the app use ``grant_type`` (RFC 7591 2 ``grant_types``, set in the developer API)?"""
        return grant_type in self.grant_types

    def verify_secret(self, pepper: bytes, secret: str, now: datetime | None = None) -> bool:
        """Constant-time check of a presented client secret against the stored keyed hash, or the
        previous secret's while its grace period runs (both compared whatever the first gives)."""
        if self.secret_hash is None:
            return False
        presented = token_hash(pepper, secret)
        current = same(presented, self.secret_hash)
        previous = self.previous_secret_hash is not None and same(presented, self.previous_secret_hash)
        in_grace = self.previous_secret_expires_at is not None and (now or datetime.now(UTC)) < (
            self.previous_secret_expires_at
        )
        return current or (previous and in_grace)

    def has_redirect_uri(self, uri: str) -> bool:
        """Exact string matching (RFC 9700 2.1): no prefix, pattern or normalisation."""
        return any(same(uri, registered) for registered in self.redirect_uris)
