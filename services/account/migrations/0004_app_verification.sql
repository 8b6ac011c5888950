-- App verification (docs/operations.md "App verification"). auto_authorize=true skips the consent
-- page only for apps an operator has verified (`oauthctl app verify`) or when the user already
-- granted the scopes. Every app, existing ones included, starts unverified: the column default
-- auto_authorize=true alone no longer lets an app skip consent.
ALTER TABLE oauth_apps ADD COLUMN verified boolean NOT NULL DEFAULT false;
