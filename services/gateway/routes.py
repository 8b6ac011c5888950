"""Which service owns which public path (docs/architecture.md "Services"). The longest matching prefix wins;
a prefix matches itself and anything below it (``/user`` matches ``/user/topup``, not ``/users``).
``/internal/*`` is never routed."""

from __future__ import annotations

ROUTES: dict[str, str] = {
    # authz: sessions, login and consent pages, the authorize endpoint, grants
    "/api/oauth2/authorize": "authz",
    "/login": "authz",
    "/logout": "authz",
    "/consent": "authz",
    "/device": "authz",
    "/user/authorizations": "authz",
    "/api/user/authorizations": "authz",
    # token: token, revocation, introspection, keys, discovery
    "/api/oauth2/token": "token",
    "/api/oauth2/device_authorization": "token",
    "/api/oauth2/revoke": "token",
    "/api/oauth2/introspect": "token",
    "/api/oauth2/jwks": "token",
    "/.well-known": "token",
    # account: users, developer tokens, apps, balances, userinfo, top-up
    "/api/oauth_apps": "account",
    "/api/oauth2/userinfo": "account",
    "/api/oauth2/topup": "account",
    "/api/oauth2/spend": "account",
    "/api/user/developer_token": "account",
    "/register": "account",
    "/password": "account",
    "/user": "account",
    "/developer": "account",
}


_LONGEST = max(map(len, ROUTES))


def route_for(path: str) -> str | None:
    """The service of the longest prefix matching ``path``: the path itself, then its truncations
    before a "/", longest first, among its first _LONGEST + 1 characters (longer ones match
    nothing): a few dictionary lookups, however long the path, instead of a walk over every prefix."""
    if path == "/internal" or path.startswith("/internal/"):
        return None
    service = ROUTES.get(path)
    candidate = path[: _LONGEST + 1]
    while service is None and candidate:
        candidate = candidate.rpartition("/")[0]
        service = ROUTES.get(candidate)
    return service
