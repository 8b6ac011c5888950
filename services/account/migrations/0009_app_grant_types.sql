-- The grant types an app may use at the token endpoint (RFC 7591 2 "grant_types"), managed in the
-- developer API and console (docs/api.md, docs/device.md). Every app keeps the browser flow
-- (authorization_code with refresh_token), so the default keeps every existing app as it was; a
-- developer adds the device authorization grant (RFC 8628) per app. client_credentials stays under
-- the operator's `internal` flag (docs/operations.md).
ALTER TABLE oauth_apps ADD COLUMN grant_types text[] NOT NULL
    DEFAULT ARRAY['authorization_code', 'refresh_token']::text[]
    CHECK (grant_types @> ARRAY['authorization_code', 'refresh_token']::text[]
           AND grant_types <@ ARRAY['authorization_code', 'refresh_token',
                                    'urn:ietf:params:oauth:grant-type:device_code']::text[]);
