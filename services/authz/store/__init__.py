"""All SQL of the authz service (docs/architecture.md "authz inside"): plain parameterised asyncpg
queries in small named functions taking a pool or the caller's connection.

- ``consent_records``: table ``grants`` (a user's consent to an app; not the token service's grant
  types);
- ``codes``: table ``authorization_codes`` (the token service consumes them, docs/contracts.md);
- ``device_codes``: table ``device_codes`` (RFC 8628; the token service creates and consumes them
  through ``libs/contracts/authz.py``);
- ``retention``: which rows of the last two are dead (``oauthctl purge``, docs/operations.md).

Reads of the account service's tables (a user for login, apps' names) are contracts in
``libs/contracts/account.py``.
"""
