-- Transactional outbox (SPEC.md "Events"): an event row is written in the same transaction as the
-- change it describes; the relay publishes it with publisher confirms and marks it published.
CREATE TABLE event_outbox (
    id            uuid PRIMARY KEY,
    type          text        NOT NULL,
    data          jsonb       NOT NULL,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      integer     NOT NULL DEFAULT 0
);
CREATE INDEX event_outbox_unpublished ON event_outbox (occurred_at) WHERE published_at IS NULL;
