-- Internal quota API (services/account/internal_quota.py): one row per applied consume/credit,
-- keyed by the caller's idempotency key. A retry with the same key returns the stored result; the
-- same key with other parameters is refused (409). Refused operations (402) are not recorded.
CREATE TABLE quota_operations (
    idempotency_key  text        PRIMARY KEY,
    operation        text        NOT NULL CHECK (operation IN ('consume', 'credit')),
    user_id          bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount           bigint      NOT NULL CHECK (amount > 0),
    result           jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quota_operations_user ON quota_operations (user_id, created_at);
