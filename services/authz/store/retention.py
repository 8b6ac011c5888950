"""The dead rows of authz's one-time codes (docs/operations.md "Retention"; ``oauthctl purge``).

An authorization code (RFC 6749 4.1.2: at most 10 minutes, single use) or a device code (RFC 8628
3.2, ``DEVICE_CODE_TTL_SECONDS``) is dead once it expired more than ``$1`` =
``PURGE_CODE_RETENTION_SECONDS`` ago, used or not. Until then it stays: a used code presented
again is a replay that revokes the family issued from it (RFC 6749 4.1.2, 10.5), and an expired
device code answers a late poll with ``expired_token`` rather than ``invalid_grant`` (RFC 8628
3.5). Revoking a user's or an app's tokens only moves ``expires_at`` to now, so those rows follow
the same rule. Both tables are indexed on ``expires_at``: a batch reads only dead rows.
"""

from __future__ import annotations

from libs.platform.retention import PurgeRule

CODES_DEAD = "FROM authorization_codes WHERE expires_at < now() - make_interval(secs => $1::float8)"
DEVICE_DEAD = "FROM device_codes WHERE expires_at < now() - make_interval(secs => $1::float8)"


def purge_rules(retention_seconds: float) -> list[PurgeRule]:
    args = (float(retention_seconds),)
    return [
        PurgeRule.keyed(
            "authorization_codes",
            "authz",
            "codes (used or not) expired longer ago than the retention",
            "code_hash",
            CODES_DEAD,
            args,
        ),
        PurgeRule.keyed(
            "device_codes",
            "authz",
            "device authorization requests (any status) expired longer ago than the retention",
            "id",
            DEVICE_DEAD,
            args,
        ),
    ]
