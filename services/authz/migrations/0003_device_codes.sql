-- Device authorization requests (RFC 8628, docs/device.md): owned by authz, which shows them on
-- /device and records the user's answer. The token service creates them at
-- /api/oauth2/device_authorization and consumes them at the token endpoint (docs/contracts.md).
-- device_code and user_code are stored only as HMAC-SHA256(pepper, value); the user code is hashed
-- in its normal form (upper case, no dash).
CREATE TABLE device_codes (
    id                bigserial   PRIMARY KEY,
    device_code_hash  bytea       NOT NULL UNIQUE,
    user_code_hash    bytea       NOT NULL UNIQUE,
    client_id         text        NOT NULL,
    scope             text        NOT NULL,
    device_agent      text        NOT NULL DEFAULT '',  -- the requesting device's User-Agent, shown to the user
    device_ip         text        NOT NULL DEFAULT '',
    interval_seconds  integer     NOT NULL CHECK (interval_seconds > 0),  -- grows by 5 s per slow_down (RFC 8628 3.5)
    last_polled_at    timestamptz,
    status            text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    user_id           bigint      REFERENCES users (id) ON DELETE CASCADE,  -- who answered
    auth_time         timestamptz,
    decided_at        timestamptz,
    used_at           timestamptz,
    family_id         uuid,        -- the token family issued from it (set by the token service)
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    CHECK ((status IN ('approved', 'used')) = (user_id IS NOT NULL AND auth_time IS NOT NULL)
           OR status = 'denied')
);
CREATE INDEX device_codes_expires ON device_codes (expires_at);
CREATE INDEX device_codes_client ON device_codes (client_id) WHERE status IN ('pending', 'approved');
