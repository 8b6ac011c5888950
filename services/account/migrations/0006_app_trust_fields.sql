-- What the consent page shows about an app (docs/api.md "OAuth apps"): its logo, the developer's
-- name, its homepage, privacy policy and terms. All optional ('' = not given); the URLs are https
-- (services/account/app_rules.py checks them before they are stored).
ALTER TABLE oauth_apps
    ADD COLUMN logo_url text NOT NULL DEFAULT '',
    ADD COLUMN developer_name text NOT NULL DEFAULT '',
    ADD COLUMN homepage_url text NOT NULL DEFAULT '',
    ADD COLUMN privacy_url text NOT NULL DEFAULT '',
    ADD COLUMN terms_url text NOT NULL DEFAULT '';
