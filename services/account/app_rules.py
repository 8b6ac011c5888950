"""The rules of an OAuth app registration (the developer API and console; guide section
"2. 创建 OAuth 应用"): redirect URIs (RFC 8252 7.3, RFC 9700 2.1), names, the client
authentication method, the grant types (RFC 7591 2; the device grant, docs/device.md). Plain functions over the request body; ApiError (400) for a broken rule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from libs.oauth.vocabulary import APP_GRANT_TYPES, BROWSER_GRANT_TYPES
from libs.platform.errors import ApiError
from libs.platform.validation import has_control_chars, text_field

AUTH_METHODS = ("client_secret_post", "client_secret_basic", "none")
MAX_REDIRECT_URIS = 10
MAX_URI_LEN = 2000
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def validate_redirect_uri(uri: Any) -> str:
    """An absolute https URI without fragment; http only for loopback (RFC 8252 7.3, RFC 9700 2.1)."""
    _check_text(uri)
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ApiError(400, "redirect_uri is not a valid URI") from None
    host = _check_host(parts)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return uri
    if scheme == "http":
        if host in LOOPBACK_HOSTS or _is_loopback_ip(host):
            return uri
        raise ApiError(400, "redirect_uri must use https; http is allowed only for localhost and 127.0.0.1")
    raise ApiError(400, "redirect_uri must use https (or http for localhost/127.0.0.1)")


def _check_text(uri: Any) -> None:
    """The character-level rules, before parsing: a bounded string, no spaces, no fragment."""
    if not isinstance(uri, str):
        raise ApiError(400, "redirect_uri must be a string")
    if not uri or len(uri) > MAX_URI_LEN:
        raise ApiError(400, f"redirect_uri must be 1-{MAX_URI_LEN} characters")
    if has_control_chars(uri) or any(c.isspace() for c in uri):
        raise ApiError(400, "redirect_uri must not contain spaces or control characters")
    if "#" in uri:
        raise ApiError(400, "redirect_uri must not contain a fragment (#...)")


def _check_host(parts: SplitResult) -> str:
    """Absolute, with an exact host: no userinfo, no wildcards (RFC 9700 2.1). The lower-cased host."""
    if not parts.scheme or not parts.netloc:
        raise ApiError(400, "redirect_uri must be an absolute URI such as https://yourapp.com/oauth/callback")
    host = (parts.hostname or "").lower()
    if not host:
        raise ApiError(400, "redirect_uri must name a host")
    if "@" in parts.netloc:
        raise ApiError(400, "redirect_uri must not contain user information (user@host)")
    if "*" in host:
        raise ApiError(400, "redirect_uri must not contain wildcards; register each URI exactly")
    return host


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uris_from(body: dict[str, Any], *, required: bool) -> list[str] | None:
    uris: list[str] = []
    if "redirect_uri" in body and body["redirect_uri"] is not None:
        uris.append(validate_redirect_uri(body["redirect_uri"]))
    if "redirect_uris" in body and body["redirect_uris"] is not None:
        listed = body["redirect_uris"]
        if not isinstance(listed, list):
            raise ApiError(400, "redirect_uris must be a list of strings")
        if len(listed) > MAX_REDIRECT_URIS:  # checked before any item is: bounded work
            raise ApiError(400, f"at most {MAX_REDIRECT_URIS} redirect URIs per app")
        uris.extend(validate_redirect_uri(u) for u in listed)
    if not uris:
        if required:
            raise ApiError(400, "redirect_uri is required, e.g. https://yourapp.com/oauth/callback")
        return None
    unique = list(dict.fromkeys(uris))
    if len(unique) > MAX_REDIRECT_URIS:
        raise ApiError(400, f"at most {MAX_REDIRECT_URIS} redirect URIs per app")
    return unique


# The optional fields the consent page shows (docs/api.md "OAuth apps"); '' means not given.
TRUST_URL_FIELDS = ("logo_url", "homepage_url", "privacy_url", "terms_url")
TRUST_FIELDS = ("developer_name", *TRUST_URL_FIELDS)


def validate_https_url(name: str, value: Any) -> str:
    """An absolute https URL with a host, no user information, spaces or control characters, or ''
    (not given). Shown to users on the consent page, so nothing but https (no http, javascript:, data:)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    value = value.strip()
    if len(value) > MAX_URI_LEN:
        raise ApiError(400, f"{name} must be at most {MAX_URI_LEN} characters")
    if has_control_chars(value) or any(c.isspace() for c in value) or any(c in value for c in "\"'<>\\"):
        raise ApiError(400, f"{name} must not contain spaces, quotes or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ApiError(400, f"{name} is not a valid URL") from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ApiError(400, f"{name} must be an https:// URL, e.g. https://yourapp.com/privacy")
    if "@" in parts.netloc:
        raise ApiError(400, f"{name} must not contain user information (user@host)")
    return value


def trust_fields_from(body: dict[str, Any], *, only_sent: bool) -> dict[str, str]:
    """The optional trust fields of a create (every field, '' when missing) or an update
    (``only_sent``: just those in the body; null or '' clears a field)."""
    out: dict[str, str] = {}
    for name in TRUST_FIELDS:
        if only_sent and name not in body:
            continue
        if name == "developer_name":
            out[name] = text_field(body, name, required=False, min_len=0, max_len=100)
        else:
            out[name] = validate_https_url(name, body.get(name))
    return out


def grant_types_from(body: dict[str, Any], *, required: bool) -> list[str] | None:
    """``grant_types`` (RFC 7591 2): a list of known grant types; the browser flow's
    (authorization_code, refresh_token) are always on, so the result is the union, in canonical
    order. Absent or null: None (unchanged), or the default when ``required``."""
    value = body.get("grant_types")
    if value is None:
        return list(BROWSER_GRANT_TYPES) if required else None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "grant_types must be a list of strings")
    unknown = [v for v in value if v not in APP_GRANT_TYPES]
    if unknown:
        raise ApiError(400, f"grant_types may hold only: {', '.join(APP_GRANT_TYPES)}")
    return [g for g in APP_GRANT_TYPES if g in value or g in BROWSER_GRANT_TYPES]


@dataclass(frozen=True)
class NewApp:
    name: str
    description: str
    redirect_uris: list[str]
    token_endpoint_auth_method: str
    logo_url: str = ""
    developer_name: str = ""
    homepage_url: str = ""
    privacy_url: str = ""
    terms_url: str = ""
    grant_types: list[str] = field(default_factory=lambda: list(BROWSER_GRANT_TYPES))


def parse_new_app(body: dict[str, Any]) -> NewApp:
    name = text_field(body, "name", required=True, min_len=1, max_len=100)
    description = text_field(body, "description", required=False, min_len=0, max_len=1000)
    uris = redirect_uris_from(body, required=True)
    assert uris is not None
    method = body.get("token_endpoint_auth_method")
    if method is None:
        method = "client_secret_post"
    if not isinstance(method, str) or method not in AUTH_METHODS:
        raise ApiError(400, f"token_endpoint_auth_method must be one of: {', '.join(AUTH_METHODS)}")
    grant_types = grant_types_from(body, required=True)
    assert grant_types is not None
    return NewApp(name, description, uris, method, grant_types=grant_types, **trust_fields_from(body, only_sent=False))
