-- Spending limits (docs/spending.md): what a user lets an app spend from their balance, chosen on
-- the consent page when the app asks for the `spend` scope. NULL limit: the app may not spend
-- (never asked, or the user stopped spending and kept the login). Amounts are integer minor units
-- (users.quota's unit; QUOTA_PER_UNIT of them make one displayed unit). `spend_since` starts the
-- "once" period: the limit is for everything charged since then (daily and monthly periods are
-- calendar days and months in UTC).
ALTER TABLE grants
    ADD COLUMN spend_limit  bigint      CHECK (spend_limit > 0),
    ADD COLUMN spend_period text        CHECK (spend_period IN ('once', 'daily', 'monthly')),
    ADD COLUMN spend_since  timestamptz,
    ADD CONSTRAINT grants_spend_complete CHECK (
        (spend_limit IS NULL) = (spend_period IS NULL) AND (spend_limit IS NULL OR spend_since IS NOT NULL));
