"""The protocol vocabulary the services share, in one place (docs/api.md, the integration guide).

Scopes, prompts, user statuses, token prefixes and the no-store headers were each written in
several services; they are defined here once.
"""

from __future__ import annotations

from enum import IntEnum

# The scopes a user can grant an app (the integration guide's list, and ``spend``: charging the
# user's balance within a limit the user chose, docs/spending.md; docs/api.md "Scopes"). The order
# is the one error messages list them in.
SCOPES = ("profile", "balance", "openid", "email", "spend")
SPEND_SCOPE = "spend"
# The periods of a spending limit (docs/spending.md "Limits"): one budget since consent, or one per
# calendar day / month in UTC.
SPEND_PERIODS = ("once", "daily", "monthly")
# OpenID Connect Core 3.1.2.1 prompt values the authorize endpoint supports.
PROMPTS = ("none", "login", "consent")

# The device authorization grant (RFC 8628 3.4) and the grant types an app may be allowed to use
# (``oauth_apps.grant_types``, docs/device.md); every app has the first two.
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
BROWSER_GRANT_TYPES = ("authorization_code", "refresh_token")
APP_GRANT_TYPES = (*BROWSER_GRANT_TYPES, DEVICE_CODE_GRANT)

# Prefixes of the opaque tokens we mint (libs/platform/security.new_token): "<prefix>_<random>".
REFRESH_PREFIX = "refresh"
CLIENT_SECRET_PREFIX = "secret"

# RFC 6749 5.1: responses carrying tokens or credentials must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class UserStatus(IntEnum):
    """``users.status`` (services/account/migrations): only an active user signs in, authorizes or
    is served by userinfo."""

    ACTIVE = 1
    DISABLED = 2
