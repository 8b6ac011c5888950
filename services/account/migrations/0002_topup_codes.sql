-- One-time top-up codes created by operators (oauthctl topup create); stored hashed.
CREATE TABLE topup_codes (
    id           bigserial   PRIMARY KEY,
    code_hash    bytea       NOT NULL UNIQUE,
    amount       bigint      NOT NULL CHECK (amount > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    redeemed_by  bigint      REFERENCES users (id) ON DELETE SET NULL,
    redeemed_at  timestamptz
);
