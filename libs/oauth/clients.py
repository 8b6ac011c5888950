"""OAuth clients as the authz and token services see them (the account service owns the table;
read through ``libs/contracts/account.get_client``)."""

from __future__ import annotations

from dataclasses import dataclass

from libs.platform.security import same, token_hash


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

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    def verify_secret(self, pepper: bytes, secret: str) -> bool:
        """Constant-time check of a presented client secret against the stored keyed hash."""
        if self.secret_hash is None:
            return False
        return same(token_hash(pepper, secret), self.secret_hash)

    def has_redirect_uri(self, uri: str) -> bool:
        """Exact string matching (RFC 9700 2.1): no prefix, pattern or normalisation."""
        return any(same(uri, registered) for registered in self.redirect_uris)
