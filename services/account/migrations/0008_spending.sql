-- Charges an app made on a user's balance through its grant (docs/spending.md): one row per applied
-- charge, kept after the grant is revoked (the user center's history). The grant is the consent
-- record (user_id, client_id) in authz's `grants`; `family_id` is the token family whose access
-- token made the charge. The idempotency key is unique per grant: a retry with the same key gets
-- the stored `result` again. Refused charges (402) are not recorded.
CREATE TABLE spend_charges (
    id               bigserial   PRIMARY KEY,
    user_id          bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id        text        NOT NULL,
    family_id        uuid,
    amount           bigint      NOT NULL CHECK (amount > 0),
    idempotency_key  text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    result           jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, client_id, idempotency_key)
);
CREATE INDEX spend_charges_grant_time ON spend_charges (user_id, client_id, created_at);
CREATE INDEX spend_charges_client ON spend_charges (client_id, created_at);
