"""Token families: everything issued from one authorization code (RFC 9700 4.14.2; docs/architecture.md).

A family is the unit of revocation: revoking it kills its refresh tokens (in Postgres) and its
access tokens (``revoked:fam:<id>`` in Redis, checked by every ``AccessTokenVerifier``; access
tokens carry the family in ``fam``), and tells every instance with a ``token.revoked`` event written
through the outbox in the same transaction. The revocation functions live in
``libs/oauth/revocation.py`` (authz and account revoke families too); ``revoke_family`` is
re-exported here for the grants. A family is created by the statement that consumes its
authorization code (``store.exchange_code``).
"""

from __future__ import annotations

from libs.oauth.revocation import revoke_family

__all__ = ["revoke_family"]
