"""The dead rows of libs/oauth's own tables (docs/operations.md "Retention"): published outbox
events and durable consumers' ``processed_events`` older than ``$1`` =
``EVENTS_OUTBOX_RETENTION_SECONDS``, and access tokens revoked one by one (RFC 7009) an hour after
they would have expired anyway (a verifier rejects an expired token before asking whether it is
revoked). Each relay deletes them in batches about every 10 minutes (events/relay.py), and
``oauthctl purge`` with the service tables' rules.
"""

from __future__ import annotations

from libs.platform.retention import PurgeRule

OUTBOX_DEAD = "FROM event_outbox WHERE published_at < now() - make_interval(secs => $1::float8)"
PROCESSED_DEAD = "FROM processed_events WHERE processed_at < now() - make_interval(secs => $1::float8)"
REVOKED_DEAD = "FROM revoked_access_tokens WHERE expires_at < now() - interval '1 hour'"


def purge_rules(outbox_retention_seconds: float) -> list[PurgeRule]:
    args = (float(outbox_retention_seconds),)
    return [
        PurgeRule.keyed(
            "event_outbox",
            "libs/oauth",
            "events published longer ago than EVENTS_OUTBOX_RETENTION_SECONDS",
            "id",
            OUTBOX_DEAD,
            args,
        ),
        PurgeRule.keyed(
            "processed_events",
            "libs/oauth",
            "applied-event records older than EVENTS_OUTBOX_RETENTION_SECONDS (no redelivery comes that late)",
            "consumer, event_id",
            PROCESSED_DEAD,
            args,
        ),
        PurgeRule.keyed(
            "revoked_access_tokens",
            "libs/oauth",
            "revoked access tokens that expired more than an hour ago",
            "jti",
            REVOKED_DEAD,
        ),
    ]
