-- Signing keys (stored in clear: they are keys, not tokens), token families and refresh tokens.
CREATE TABLE signing_keys (
    kid           text        PRIMARY KEY,
    alg           text        NOT NULL CHECK (alg IN ('RS256', 'ES256', 'HS256')),
    private_pem   text        NOT NULL,          -- PEM for RS256/ES256; base64url secret for HS256
    public_jwk    jsonb,                         -- NULL for HS256 (never published)
    created_at    timestamptz NOT NULL DEFAULT now(),
    activates_at  timestamptz NOT NULL DEFAULT now(),  -- published before it signs (rotation)
    retired_at    timestamptz                    -- no longer signs; still verifies until expires
);

-- A token family: everything issued from one authorization code (or one client_credentials call).
-- Revoking the family revokes its refresh tokens and makes its access tokens fail everywhere.
CREATE TABLE token_families (
    id          uuid        PRIMARY KEY,
    client_id   text        NOT NULL,
    user_id     bigint      REFERENCES users (id) ON DELETE CASCADE,   -- NULL for client_credentials
    scope       text        NOT NULL,
    auth_time   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    revoked_reason text
);
CREATE INDEX token_families_user_client ON token_families (user_id, client_id) WHERE revoked_at IS NULL;

-- Refresh tokens: stored as HMAC-SHA256(pepper, token); rotated on every use. ``grace_response`` is
-- the response that the use returned, encrypted with a key derived from the old token, so a retry
-- within the grace window gets the same pair (SPEC.md) and nobody else can read it.
CREATE TABLE refresh_tokens (
    id              bigserial   PRIMARY KEY,
    family_id       uuid        NOT NULL REFERENCES token_families (id) ON DELETE CASCADE,
    token_hash      bytea       NOT NULL UNIQUE,
    parent_id       bigint      REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    grace_response  bytea
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
