-- Grants (a user's consent to an app, with scopes) and authorization codes: owned by authz.
CREATE TABLE grants (
    user_id             bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id           text        NOT NULL,
    scopes              text[]      NOT NULL,
    first_authorized_at timestamptz NOT NULL DEFAULT now(),
    last_authorized_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id)
);
CREATE INDEX grants_client ON grants (client_id);

-- Authorization codes (RFC 6749 4.1.2): stored as HMAC-SHA256(pepper, code), single use, <= 10 min,
-- bound to client, redirect_uri, scope, user and PKCE challenge. authz writes them; the token
-- service consumes them with one atomic UPDATE (the documented contract between the two services).
CREATE TABLE authorization_codes (
    code_hash              bytea       PRIMARY KEY,
    client_id              text        NOT NULL,
    user_id                bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri           text        NOT NULL,
    scope                  text        NOT NULL,
    code_challenge         text,
    code_challenge_method  text,
    nonce                  text,
    auth_time              timestamptz NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    expires_at             timestamptz NOT NULL,
    used_at                timestamptz,
    family_id              uuid        -- the token family issued from this code (set by the token service)
);
CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at);
