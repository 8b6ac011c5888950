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
_BY_LENGTH = sorted(ROUTES.items(), key=lambda kv: len(kv[0]), reverse=True)


def route_for(path: str) -> str | None:
    if path == "/internal" or path.startswith("/internal/"):
        return None
    for prefix, service in _BY_LENGTH:
        if path == prefix or path.startswith(prefix + "/"):
            return service
    return None
