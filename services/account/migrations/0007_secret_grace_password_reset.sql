-- Client secret rotation with a grace period (docs/api.md "Rotate the secret"): the secret that was
-- replaced stays valid until previous_secret_expires_at, stored like the current one as
-- HMAC-SHA256(pepper, secret). Both NULL when there is no previous secret in grace.
ALTER TABLE oauth_apps ADD COLUMN previous_secret_hash bytea;
ALTER TABLE oauth_apps ADD COLUMN previous_secret_expires_at timestamptz;
ALTER TABLE oauth_apps ADD CHECK ((previous_secret_hash IS NULL) = (previous_secret_expires_at IS NULL));

-- Password reset by email (services/account/password_reset.py): single-use, short-lived tokens,
-- stored as HMAC-SHA256(pepper, token) only; used_at marks the one use.
CREATE TABLE password_reset_tokens (
    id          bigserial PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX password_reset_tokens_user ON password_reset_tokens (user_id);
