-- The outbox relay (libs/common/events.py) LISTENs on "event_outbox": a trigger notifies it when a
-- transaction that wrote events commits (NOTIFY is delivered only at commit, never for a rollback).
CREATE FUNCTION event_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('event_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_notify();
CREATE INDEX event_outbox_published ON event_outbox (published_at) WHERE published_at IS NOT NULL;

-- Durable consumers record each event id they applied, in the same transaction as the effect
-- (libs/common/events.process_once), so a redelivered event is applied once.
CREATE TABLE processed_events (
    consumer      text        NOT NULL,
    event_id      uuid        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX processed_events_at ON processed_events (processed_at);

-- Access tokens revoked one by one (RFC 7009 with an access token): the source of truth behind
-- Redis revoked:jti:<jti> (token_families.revoked_at is the one behind revoked:fam:<family>).
-- Kept until the token would have expired anyway.
CREATE TABLE revoked_access_tokens (
    jti         text        PRIMARY KEY,
    family_id   uuid,
    client_id   text        NOT NULL,
    user_id     bigint,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    reason      text        NOT NULL
);
CREATE INDEX revoked_access_tokens_expires ON revoked_access_tokens (expires_at);
