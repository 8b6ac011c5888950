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
        PurgeRule(
            table="event_outbox",
            owner="libs/oauth",
            rule="events published longer ago than EVENTS_OUTBOX_RETENTION_SECONDS",
            count_sql=f"SELECT count(*) {OUTBOX_DEAD}",
            delete_sql=f"""WITH doomed AS (SELECT id {OUTBOX_DEAD} LIMIT $2 FOR UPDATE SKIP LOCKED),
                gone AS (DELETE FROM event_outbox WHERE id IN (SELECT id FROM doomed) RETURNING 1)
                SELECT count(*) FROM gone""",
            args=args,
        ),
        PurgeRule(
            table="processed_events",
            owner="libs/oauth",
            rule="applied-event records older than EVENTS_OUTBOX_RETENTION_SECONDS (no redelivery comes that late)",
            count_sql=f"SELECT count(*) {PROCESSED_DEAD}",
            delete_sql=f"""WITH doomed AS (SELECT consumer, event_id {PROCESSED_DEAD} LIMIT $2 FOR UPDATE SKIP LOCKED),
                gone AS (DELETE FROM processed_events WHERE (consumer, event_id) IN (SELECT * FROM doomed)
                         RETURNING 1)
                SELECT count(*) FROM gone""",
            args=args,
        ),
        PurgeRule(
            table="revoked_access_tokens",
            owner="libs/oauth",
            rule="revoked access tokens that expired more than an hour ago",
            count_sql=f"SELECT count(*) {REVOKED_DEAD}",
            delete_sql=f"""WITH doomed AS (SELECT jti {REVOKED_DEAD} LIMIT $1 FOR UPDATE SKIP LOCKED),
                gone AS (DELETE FROM revoked_access_tokens WHERE jti IN (SELECT jti FROM doomed) RETURNING 1)
                SELECT count(*) FROM gone""",
        ),
    ]
