-- Users, developer tokens and OAuth apps (clients): owned by the account service.
CREATE TABLE users (
    id             bigserial PRIMARY KEY,
    username       text        NOT NULL,
    email          text        NOT NULL,
    password_hash  text        NOT NULL,
    status         smallint    NOT NULL DEFAULT 1,       -- 1 active, 2 disabled (guide's "status")
    quota          bigint      NOT NULL DEFAULT 0 CHECK (quota >= 0),
    used_quota     bigint      NOT NULL DEFAULT 0 CHECK (used_quota >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (used_quota <= quota)
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Developer tokens: shown once, stored as HMAC-SHA256(pepper, token).
CREATE TABLE developer_tokens (
    id            bigserial PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    bytea       NOT NULL UNIQUE,
    name          text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX developer_tokens_user ON developer_tokens (user_id);

-- OAuth apps (clients). The secret is stored only as HMAC-SHA256(pepper, secret).
CREATE TABLE oauth_apps (
    id                          bigserial PRIMARY KEY,
    owner_id                    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                        text        NOT NULL,
    description                 text        NOT NULL DEFAULT '',
    client_id                   text        NOT NULL UNIQUE,
    client_secret_hash          bytea,                   -- NULL for public clients
    redirect_uris               text[]      NOT NULL,
    token_endpoint_auth_method  text        NOT NULL DEFAULT 'client_secret_post'
        CHECK (token_endpoint_auth_method IN ('client_secret_post', 'client_secret_basic', 'none')),
    auto_authorize              boolean     NOT NULL DEFAULT true,   -- operators may switch it off per app
    internal                    boolean     NOT NULL DEFAULT false,  -- may use client_credentials
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    secret_rotated_at           timestamptz,
    CHECK (cardinality(redirect_uris) BETWEEN 1 AND 10)
);
CREATE INDEX oauth_apps_owner ON oauth_apps (owner_id, id);
