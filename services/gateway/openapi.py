"""The OpenAPI 3.1 description of the public HTTP API, served at ``GET /api/openapi.json``
(docs/api.md): the developer API (``/api/oauth_apps*``, ``/api/user/developer_token``), the OAuth
and OpenID endpoints, userinfo, top-up, and the user-center API (``/api/user/authorizations*``).

Built here as data, with the shared pieces (error bodies, security schemes) written once;
tests/unit/test_openapi.py keeps it in step with the routes the services register, and the
Schemathesis run (tests/integration/test_schemathesis.py, ``make fuzz``) checks the running stack
against it. Browser pages (``/login``, ``/consent``, ``/user``, ``/developer``, ...) are not API and
are not described.

Every operation may also answer 429 (rate limits) and 503 (a dependency is down) in its own error
form: those are the ``default`` responses.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from libs.oauth.vocabulary import APP_GRANT_TYPES, DEVICE_CODE_GRANT
from libs.platform.web import json_response

PATH = "/api/openapi.json"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# Text without control characters (C0, DEL, C1), as libs/platform/params.py checks it; a description
# may also hold tab, CR and LF.
PRINTABLE = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
MULTILINE = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"


def nullable(schema: Schema) -> Schema:
    """An optional JSON field that may also be null, which means "not sent"."""
    return {"anyOf": [schema, {"type": "null"}]}


def _str(max_len: int | None = None, **kw: Any) -> Schema:
    out: Schema = {"type": "string", **kw}
    if max_len is not None:
        out["maxLength"] = max_len
    return out


# --- shared schemas ------------------------------------------------------------------------------
OAUTH_ERROR: Schema = {
    "type": "object",
    "description": "RFC 6749 5.2 / RFC 6750 3.1 error",
    "required": ["error"],
    "properties": {"error": _str(), "error_description": _str()},
}
ENVELOPE_ERROR: Schema = {
    "type": "object",
    "description": "The guide's envelope, on failure",
    "required": ["success", "message", "data"],
    "properties": {"success": {"const": False}, "message": _str(), "data": {"type": "null"}},
}
TRUST_FIELDS = ("logo_url", "developer_name", "homepage_url", "privacy_url", "terms_url")
# An https URL with a host (services/account/app_rules.validate_https_url), or "" (not given).
HTTPS_URL = r"^$|^https://[A-Za-z0-9]([A-Za-z0-9.-]{0,250})(/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*)?$"
APP: Schema = {
    "type": "object",
    "required": [
        "id",
        "name",
        "description",
        "client_id",
        "redirect_uri",
        "redirect_uris",
        "token_endpoint_auth_method",
        *TRUST_FIELDS,
        "created_time",
        "updated_time",
    ],
    "properties": {
        "id": {"type": "integer"},
        "name": _str(),
        "description": _str(),
        "client_id": _str(),
        "client_secret": _str(description="Only when created or rotated: shown once"),
        "redirect_uri": _str(),
        "redirect_uris": {"type": "array", "items": _str()},
        "token_endpoint_auth_method": {"enum": ["client_secret_post", "client_secret_basic", "none"]},
        **{name: _str(description="'' when not given") for name in TRUST_FIELDS},
        "grant_types": {"type": "array", "items": {"enum": list(APP_GRANT_TYPES)}},
        "created_time": {"type": "integer", "description": "unix seconds"},
        "updated_time": {"type": "integer", "description": "unix seconds"},
        "previous_secret_expires_time": nullable(
            {"type": "integer", "description": "until when the secret replaced by the last rotation still works"}
        ),
    },
}
ROTATE_SECRET: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "grace_seconds": {
            "enum": [0, 3600, 86400],
            "description": "how long the old secret keeps working (default 0: it stops at once)",
        }
    },
}
APP_INPUT: Schema = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "name": nullable(_str(100, minLength=1, pattern=PRINTABLE)),
        "description": nullable(_str(1000, pattern=MULTILINE)),
        "redirect_uri": nullable(_str(2000, format="uri", examples=["https://yourapp.com/oauth/callback"])),
        "redirect_uris": nullable(
            {
                "type": "array",
                "maxItems": 10,
                "items": _str(2000, format="uri"),
                "description": "With redirect_uri, at most 10 distinct URIs in all",
            }
        ),
        # What the consent page shows about the app (docs/api.md "OAuth apps"); null or "" clears.
        "developer_name": nullable(_str(100, pattern=PRINTABLE, description="Shown as the app's developer")),
        **{
            name: nullable(_str(2000, pattern=HTTPS_URL, description=what, examples=[example]))
            for name, what, example in (
                ("logo_url", "The app's logo (square, shown at 48 px)", "https://yourapp.com/logo.png"),
                ("homepage_url", "The app's homepage", "https://yourapp.com/"),
                ("privacy_url", "The app's privacy policy", "https://yourapp.com/privacy"),
                ("terms_url", "The app's terms of service", "https://yourapp.com/terms"),
            )
        },
        "grant_types": nullable(
            {
                "type": "array",
                "items": {"enum": list(APP_GRANT_TYPES)},
                "description": "RFC 7591 2; authorization_code and refresh_token are always on (docs/device.md)",
            }
        ),
    },
}
NEW_APP: Schema = {
    **{k: v for k, v in APP_INPUT.items() if k != "minProperties"},
    "required": ["name"],
    "anyOf": [{"required": ["redirect_uri"]}, {"required": ["redirect_uris"]}],
    "properties": {
        **APP_INPUT["properties"],
        "name": _str(100, minLength=1, pattern=PRINTABLE),
        "token_endpoint_auth_method": nullable({"enum": ["client_secret_post", "client_secret_basic", "none"]}),
    },
}
DEVICE_AUTHORIZATION: Schema = {
    "type": "object",
    "description": "RFC 8628 3.2",
    "required": ["device_code", "user_code", "verification_uri", "expires_in", "interval"],
    "properties": {
        "device_code": _str(),
        "user_code": _str(pattern="^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$"),
        "verification_uri": _str(format="uri"),
        "verification_uri_complete": _str(format="uri"),
        "expires_in": {"type": "integer"},
        "interval": {"type": "integer"},
    },
}
TOKEN_RESPONSE: Schema = {
    "type": "object",
    "description": "RFC 6749 5.1",
    "required": ["access_token", "token_type", "expires_in"],
    "properties": {
        "access_token": _str(),
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
        "refresh_token": _str(),
        "scope": _str(),
        "id_token": _str(),
    },
}
INTROSPECTION: Schema = {
    "type": "object",
    "description": 'RFC 7662 2.2; every inactive token is just {"active": false}',
    "required": ["active"],
    "properties": {
        "active": {"type": "boolean"},
        "scope": _str(),
        "client_id": _str(),
        "username": _str(),
        "sub": _str(),
        "aud": {"type": ["string", "array"]},
        "iss": _str(),
        "exp": {"type": "integer"},
        "iat": {"type": "integer"},
        "nbf": {"type": "integer"},
        "jti": _str(),
        "token_type": _str(),
        "token_use": {"enum": ["access_token", "refresh_token"]},
    },
}
USERINFO: Schema = {
    "type": "object",
    "description": "The guide's fields, filtered by the token's scopes",
    "required": ["sub"],
    "properties": {
        "sub": _str(),
        "id": {"type": "integer"},
        "username": _str(),
        "email": _str(),
        "email_verified": {"type": "boolean"},
        "created_time": {"type": "integer"},
        "status": {"type": "integer"},
        "quota": {"type": "integer"},
        "used_quota": {"type": "integer"},
        "balance_formatted": _str(),
    },
}
AUTHORIZATION: Schema = {
    "type": "object",
    "required": ["client_id", "name", "description", "scopes", "first_authorized_time", "last_authorized_time"],
    "properties": {
        "client_id": _str(),
        "name": _str(),
        "description": _str(),
        "scopes": {"type": "array", "items": _str()},
        "first_authorized_time": {"type": "integer"},
        "last_authorized_time": {"type": "integer"},
    },
}
JWKS: Schema = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {"type": "object", "required": ["kty"]}}},
}
METADATA: Schema = {
    "type": "object",
    "description": "RFC 8414 / OpenID Connect Discovery 1.0 section 3",
    "required": ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported"],
    "properties": {
        "issuer": _str(),
        "authorization_endpoint": _str(),
        "token_endpoint": _str(),
        "userinfo_endpoint": _str(),
        "jwks_uri": _str(),
        "revocation_endpoint": _str(),
        "introspection_endpoint": _str(),
        "response_types_supported": {"type": "array", "items": _str()},
    },
}


_INT = {"type": "integer"}
# docs/spending.md: amounts in minor units, *_formatted in display units (two decimals).
ALLOWANCE_FIELDS: Schema = {
    "limit": _INT,
    "limit_formatted": _str(),
    "period": {"enum": ["once", "daily", "monthly"]},
    "period_start": _INT,
    "period_end": {"type": ["integer", "null"]},
    "spent": _INT,
    "remaining": _INT,
    "remaining_formatted": _str(),
}
SPEND_ALLOWANCE = {
    "type": "object",
    "required": [*ALLOWANCE_FIELDS, "balance", "balance_formatted", "available"],
    "properties": ALLOWANCE_FIELDS | {"balance": _INT, "balance_formatted": _str(), "available": _INT},
}
CHARGE = {
    "type": "object",
    "required": ["amount", "idempotency_key", "description", "charged_at", "balance", "allowance"],
    "properties": {
        "amount": _INT,
        "amount_formatted": _str(),
        "idempotency_key": _str(),
        "description": _str(),
        "charged_at": _INT,
        "balance": _INT,
        "balance_formatted": _str(),
        "allowance": {"type": "object", "required": list(ALLOWANCE_FIELDS), "properties": ALLOWANCE_FIELDS},
    },
}


def ok_envelope(data: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["success", "message", "data"],
        "properties": {"success": {"const": True}, "message": _str(), "data": data},
    }


# --- responses -----------------------------------------------------------------------------------
def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> Schema:
    out: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def oauth_errors(*statuses: int, bearer: bool = False) -> dict[str, Schema]:
    """RFC 6749 error bodies; on bearer endpoints 401/403 carry ``WWW-Authenticate`` (RFC 6750 3)."""
    out: dict[str, Schema] = {}
    for status in statuses:
        headers = {"WWW-Authenticate": {"schema": _str()}} if bearer and status in (400, 401, 403) else None
        out[str(status)] = _json(ref("OAuthError"), "RFC 6749 / RFC 6750 error", headers)
    out["default"] = _json(ref("OAuthError"), "Any other error (e.g. 429 with Retry-After, 503)")
    return out


def envelope_errors(*statuses: int) -> dict[str, Schema]:
    out = {str(s): _json(ref("EnvelopeError"), "Error in the guide's envelope") for s in statuses}
    out["default"] = _json(ref("EnvelopeError"), "Any other error (e.g. 429 with Retry-After, 503)")
    return out


def _op(summary: str, tag: str, responses: dict[str, Schema], **kw: Any) -> Schema:
    return {"summary": summary, "tags": [tag], "responses": responses, **kw}


def _form_body(properties: Schema, required: list[str]) -> Schema:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {FORM: {"schema": schema}}}


def _json_body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {JSON: {"schema": schema}}}


# RFC 6749 Appendix A: client_id, state = VSCHAR (%x20-7E); scope-token = NQCHAR; RFC 7636 4.2.
VSCHARS = "^[\\x20-\\x7E]+$"
SCOPE = "^[\\x21\\x23-\\x5B\\x5D-\\x7E]+( [\\x21\\x23-\\x5B\\x5D-\\x7E]+)*$"
PKCE = "^[A-Za-z0-9._~-]{43,128}$"
CLIENT_AUTH: list[dict[str, list[str]]] = [
    {"clientBasic": []},
    {},
]  # {}: client_secret_post or a public client's client_id in the form
CLIENT_FORM = {"client_id": _str(255), "client_secret": _str(255)}
APP_ID = {"name": "app_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


# --- operations ----------------------------------------------------------------------------------
def developer_api() -> dict[str, Schema]:
    """The guide's developer API: apps (developer token) and creating a developer token (session)."""
    return _app_paths() | _developer_token_path()


def _app_paths() -> dict[str, Schema]:
    sec: list[dict[str, list[str]]] = [{"developerToken": []}]
    one = ok_envelope(ref("App"))
    errors = envelope_errors(400, 401, 404)
    return {
        "/api/oauth_apps": {
            "post": _op(
                "Create an app (guide 2)",
                "developer",
                {"200": _json(one, "Created: client_secret shown once")} | errors,
                security=sec,
                requestBody=_json_body(ref("NewApp")),
            ),
            "get": _op(
                "List your apps",
                "developer",
                {"200": _json(ok_envelope({"type": "array", "items": ref("App")}), "Your apps")} | errors,
                security=sec,
            ),
        },
        "/api/oauth_apps/{app_id}": {
            "parameters": [APP_ID],
            "get": _op("One of your apps", "developer", {"200": _json(one, "The app")} | errors, security=sec),
            "put": _op(
                "Change name, description or redirect URIs",
                "developer",
                {"200": _json(one, "Updated")} | errors,
                security=sec,
                requestBody=_json_body(ref("AppUpdate")),
            ),
            "delete": _op(
                "Delete an app (its grants and tokens go with it)",
                "developer",
                {"200": _json(ok_envelope({"type": "null"}), "Deleted")} | errors,
                security=sec,
            ),
        },
        "/api/oauth_apps/{app_id}/secret": {
            "parameters": [APP_ID],
            "post": _op(
                "Rotate the client secret (shown once); the old one may keep working for a grace period",
                "developer",
                {"200": _json(one, "Rotated")} | errors,
                security=sec,
                requestBody=_json_body(ref("RotateSecret"), required=False),
            ),
        },
    }


def _developer_token_path() -> dict[str, Schema]:
    return {
        "/api/user/developer_token": {
            "post": _op(
                "Create a developer token from the browser session (shown once)",
                "developer",
                {
                    "200": _json(
                        ok_envelope(
                            {
                                "type": "object",
                                "required": ["id", "name", "token", "created_time"],
                                "properties": {
                                    "id": {"type": "integer"},
                                    "name": _str(),
                                    "token": _str(),
                                    "created_time": {"type": "integer"},
                                },
                            }
                        ),
                        "Created",
                    )
                }
                | envelope_errors(400, 401, 403),
                security=[{"sessionCookie": [], "csrfCookie": [], "csrfHeader": []}],
                requestBody=_json_body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"name": _str(100, pattern=PRINTABLE)},
                    },
                    required=False,
                ),
            ),
        },
    }


def oauth_endpoints() -> dict[str, Schema]:
    """The OAuth 2.0 / OIDC endpoints: authorize, the token-taking endpoints, keys and metadata."""
    return _authorize_path() | _token_paths() | _metadata_paths()


def _authorize_path() -> dict[str, Schema]:
    return {
        "/api/oauth2/authorize": {
            "get": _op(
                "Authorization request (RFC 6749 4.1.1, PKCE RFC 7636, OIDC Core 3.1.2.1)",
                "oauth",
                {
                    "200": {"description": "Login or consent page", "content": {HTML: {}}},
                    "302": {"description": "To the login page or back to the client's redirect_uri"},
                    "303": {"description": "To the login page or back to the client's redirect_uri"},
                    "400": {"description": "Unknown client or redirect_uri: an error page", "content": {HTML: {}}},
                    "default": {"description": "An error page", "content": {HTML: {}}},
                },
                parameters=[
                    {"name": n, "in": "query", "required": n in ("client_id", "redirect_uri"), "schema": s}
                    for n, s in (
                        ("client_id", _str(255, pattern=VSCHARS)),
                        ("redirect_uri", _str(2000, format="uri")),
                        ("response_type", {"const": "code"}),
                        ("scope", _str(500, pattern=SCOPE)),
                        ("state", _str(2048, pattern=VSCHARS)),
                        ("code_challenge", _str(128, pattern=PKCE)),
                        ("code_challenge_method", {"const": "S256"}),
                        ("nonce", _str(255, pattern=VSCHARS)),
                        ("prompt", _str(100, pattern=SCOPE)),
                        ("max_age", {"type": "integer", "minimum": 0}),
                        ("auto_authorize", {"enum": ["true", "false"]}),
                        ("spend_limit", {"type": "string", "pattern": "^[0-9]{1,16}$"}),
                        ("spend_period", {"enum": ["once", "daily", "monthly"]}),
                    )
                ],
            )
        },
    }


def _token_form() -> dict[str, Any]:
    """The token endpoint's form (every grant's parameters, RFC 6749 4.1.3, 4.4, 6; RFC 8628 3.4)."""
    return {
        "grant_type": {"enum": ["authorization_code", "refresh_token", "client_credentials", DEVICE_CODE_GRANT]},
        "code": _str(255),
        "redirect_uri": _str(2000),
        "code_verifier": _str(128),
        "refresh_token": _str(255),
        "scope": _str(500),
        "device_code": _str(255),
        **CLIENT_FORM,
    }


def _token_paths() -> dict[str, Schema]:
    """Token, revocation and introspection: form bodies with client authentication."""
    token_form = _token_form()
    token_param_form = {"token": _str(8192), "token_type_hint": {"enum": ["access_token", "refresh_token"]}}
    return {
        "/api/oauth2/token": {
            "post": _op(
                "Token endpoint (RFC 6749 3.2, 4.1.3, 4.4, 6; RFC 8628 3.4)",
                "oauth",
                {"200": _json(ref("TokenResponse"), "Tokens", {"Cache-Control": {"schema": _str()}})}
                | oauth_errors(400, 401, 413),
                security=CLIENT_AUTH,
                requestBody=_form_body(token_form, ["grant_type"]),
            )
        },
        "/api/oauth2/device_authorization": {
            "post": _op(
                "Device authorization request (RFC 8628 3.1): a device_code to poll with and a user_code for /device",
                "oauth",
                {"200": _json(ref("DeviceAuthorization"), "Codes", {"Cache-Control": {"schema": _str()}})}
                | oauth_errors(400, 401, 413),
                security=CLIENT_AUTH,
                requestBody=_form_body({"scope": _str(500, pattern=SCOPE)} | CLIENT_FORM, []),
            )
        },
        "/api/oauth2/revoke": {
            "post": _op(
                "Token revocation (RFC 7009)",
                "oauth",
                {"200": {"description": "Revoked, or nothing to revoke (RFC 7009 2.2)"}} | oauth_errors(400, 401, 413),
                security=CLIENT_AUTH,
                requestBody=_form_body(token_param_form | CLIENT_FORM, ["token"]),
            )
        },
        "/api/oauth2/introspect": {
            "post": _op(
                "Token introspection (RFC 7662), for confidential clients",
                "oauth",
                {"200": _json(ref("Introspection"), "The token's state")} | oauth_errors(400, 401, 413),
                security=CLIENT_AUTH,
                requestBody=_form_body(token_param_form | CLIENT_FORM, ["token"]),
            )
        },
    }


def _metadata_paths() -> dict[str, Schema]:
    return {
        "/api/oauth2/jwks": {
            "get": _op(
                "Public signing keys (RFC 7517)", "oauth", {"200": _json(ref("JWKS"), "JWK set")} | oauth_errors()
            )
        },
        "/.well-known/openid-configuration": {
            "get": _op(
                "OpenID Provider metadata", "oauth", {"200": _json(ref("Metadata"), "Metadata")} | oauth_errors()
            )
        },
        "/.well-known/oauth-authorization-server": {
            "get": _op(
                "Authorization server metadata (RFC 8414)",
                "oauth",
                {"200": _json(ref("Metadata"), "Metadata")} | oauth_errors(),
            )
        },
    }


def _spend_operation(sec: list[dict[str, list[str]]]) -> Schema:
    """POST /api/oauth2/spend (docs/spending.md)."""
    return _op(
        "Charge the user's balance within the limit the user chose (docs/spending.md)",
        "resource",
        {
            "200": _json(ref("Charge"), "Charged (or, with Idempotent-Replayed: true, the first result for the key)"),
            "402": _json(ref("OAuthError"), "spend_limit_exceeded or insufficient_balance; nothing was charged"),
            "409": _json(ref("OAuthError"), "The idempotency_key was used for another amount"),
        }
        | oauth_errors(400, 401, 403, bearer=True),
        security=sec,
        requestBody=_json_body(
            {
                "type": "object",
                "required": ["amount", "idempotency_key"],
                "additionalProperties": False,
                "properties": {
                    "amount": {"type": "integer", "minimum": 1, "maximum": 10**15},
                    "idempotency_key": _str(200, minLength=1, pattern=PRINTABLE),
                    "description": _str(200, pattern=PRINTABLE),
                },
            }
        ),
    )


def resource_endpoints() -> dict[str, Schema]:
    sec: list[dict[str, list[str]]] = [{"accessToken": []}]
    userinfo = _op(
        "The user's profile and balance (guide 3, OIDC Core 5.3)",
        "resource",
        {"200": _json(ref("UserInfo"), "Claims for the token's scopes")} | oauth_errors(400, 401, 403, bearer=True),
        security=sec,
    )
    topup = _op(
        "Where to send the user to top up (the guide's 账户充值)",
        "resource",
        {
            "200": _json(
                {"type": "object", "required": ["topup_url"], "properties": {"topup_url": _str()}}, "Top-up page URL"
            )
        }
        | oauth_errors(400, 401, 403, bearer=True),
        security=sec,
    )
    spend = _spend_operation(sec)
    allowance = _op(
        "What the token's grant may still spend in the current period",
        "resource",
        {"200": _json(ref("SpendAllowance"), "The allowance")} | oauth_errors(400, 401, 403, bearer=True),
        security=sec,
    )
    return {
        "/api/oauth2/userinfo": {"get": userinfo, "post": dict(userinfo)},
        "/api/oauth2/topup": {"get": topup},
        "/api/oauth2/spend": {"post": spend, "get": allowance},
    }


def user_center_api() -> dict[str, Schema]:
    listing = ok_envelope({"type": "array", "items": ref("Authorization")})
    revoked = ok_envelope(
        {
            "type": "object",
            "required": ["client_id", "revoked_token_families"],
            "properties": {"client_id": _str(), "revoked_token_families": {"type": "integer"}},
        }
    )
    return {
        "/api/user/authorizations": {
            "get": _op(
                "Apps the logged-in user authorized",
                "user",
                {"200": _json(listing, "Authorizations", {"X-CSRF-Token": {"schema": _str()}})} | envelope_errors(401),
                security=[{"sessionCookie": []}],
            )
        },
        "/api/user/authorizations/{client_id}": {
            "parameters": [{"name": "client_id", "in": "path", "required": True, "schema": _str(100, minLength=1)}],
            "delete": _op(
                "Revoke an app's authorization (grant and tokens)",
                "user",
                {"200": _json(revoked, "Revoked")} | envelope_errors(401, 403, 404),
                security=[{"sessionCookie": [], "csrfCookie": [], "csrfHeader": []}],
            ),
        },
    }


def self_description() -> dict[str, Schema]:
    return {
        PATH: {
            "get": _op(
                "This document",
                "meta",
                {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}}
                | envelope_errors(),
            )
        }
    }


# Names for client generators (the methods of a generated client).
OPERATION_IDS = {
    ("post", "/api/oauth_apps"): "createApp",
    ("get", "/api/oauth_apps"): "listApps",
    ("get", "/api/oauth_apps/{app_id}"): "getApp",
    ("put", "/api/oauth_apps/{app_id}"): "updateApp",
    ("delete", "/api/oauth_apps/{app_id}"): "deleteApp",
    ("post", "/api/oauth_apps/{app_id}/secret"): "rotateAppSecret",
    ("post", "/api/user/developer_token"): "createDeveloperToken",
    ("get", "/api/oauth2/authorize"): "authorize",
    ("post", "/api/oauth2/token"): "token",
    ("post", "/api/oauth2/device_authorization"): "deviceAuthorization",
    ("post", "/api/oauth2/revoke"): "revokeToken",
    ("post", "/api/oauth2/introspect"): "introspectToken",
    ("get", "/api/oauth2/jwks"): "jwks",
    ("get", "/.well-known/openid-configuration"): "openidConfiguration",
    ("get", "/.well-known/oauth-authorization-server"): "authorizationServerMetadata",
    ("get", "/api/oauth2/userinfo"): "userinfo",
    ("post", "/api/oauth2/userinfo"): "userinfoPost",
    ("get", "/api/oauth2/topup"): "topupUrl",
    ("post", "/api/oauth2/spend"): "spend",
    ("get", "/api/oauth2/spend"): "spendAllowance",
    ("get", "/api/user/authorizations"): "listAuthorizations",
    ("delete", "/api/user/authorizations/{client_id}"): "revokeAuthorization",
    ("get", PATH): "openapi",
}


def _paths() -> dict[str, Schema]:
    paths = developer_api() | oauth_endpoints() | resource_endpoints() | user_center_api() | self_description()
    for path, item in paths.items():
        for method, op in item.items():
            if method != "parameters":
                op["operationId"] = OPERATION_IDS[(method, path)]
    return paths


def document(server_url: str = "/") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OAuth platform public API",
            "version": "1.0.0",
            "description": "Developer API, OAuth 2.0 / OpenID Connect endpoints, userinfo, top-up and the "
            "user-center API, as served by the gateway. See README.md and docs/api.md.",
        },
        "servers": [{"url": server_url}],
        "paths": _paths(),
        "components": {
            "schemas": {
                "OAuthError": OAUTH_ERROR,
                "EnvelopeError": ENVELOPE_ERROR,
                "App": APP,
                "NewApp": NEW_APP,
                "RotateSecret": ROTATE_SECRET,
                "AppUpdate": APP_INPUT,
                "TokenResponse": TOKEN_RESPONSE,
                "DeviceAuthorization": DEVICE_AUTHORIZATION,
                "Introspection": INTROSPECTION,
                "UserInfo": USERINFO,
                "Authorization": AUTHORIZATION,
                "JWKS": JWKS,
                "Metadata": METADATA,
                "SpendAllowance": SPEND_ALLOWANCE,
                "Charge": CHARGE,
            },
            "securitySchemes": {
                "developerToken": {"type": "http", "scheme": "bearer", "description": "A developer token"},
                "accessToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "RFC 6750"},
                "clientBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "client_secret_basic (RFC 6749 2.3.1)",
                },
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "sid", "description": "Login session"},
                "csrfCookie": {"type": "apiKey", "in": "cookie", "name": "csrf"},
                "csrfHeader": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
        },
    }


async def handle_openapi(request: web.Request) -> web.Response:
    return json_response(document(), headers={"Cache-Control": "public, max-age=300"})


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, handle_openapi)
