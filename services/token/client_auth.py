"""Client authentication: ONE step shared by the token, device authorization (RFC 8628 3.1),
revocation (RFC 7009 2.1) and introspection (RFC 7662 2.1) endpoints (RFC 6749 2.3.1, 3.2.1, 5.2).

The step is ``authenticate(request, form, public_allowed=...)``: read what the request presents
(``presented_credentials``, pure), look the client up, and decide (``check_client``, pure, over a
``ClientLookup``-found client). Introspection passes ``public_allowed=False``.

- ``client_secret_post``: ``client_id`` and ``client_secret`` in the form body (the guide's way).
- ``client_secret_basic``: ``Authorization: Basic base64(urlencode(id) ":" urlencode(secret))``.
- ``none`` (public clients): ``client_id`` only; they must use PKCE with authorization codes
  (checked by the grant; the device grant has no redirect and needs none, docs/device.md).

Tool exchange: the developer console's test tool (services/account/developer_tool.py) runs the
flow in the developer's browser, which must never hold a client secret. So an authorization_code
request whose ``redirect_uri`` is the platform's own tool callback (``libs.oauth.clients.
tool_callback_url``) and that presents no secret is treated as a public client's: PKCE S256 is then
required (``grants/authorization_code.verify_pkce``). Only apps whose developer registered that URL
can get such codes, and the callback page hands them only to a same-origin opener (the tool).

A confidential client may use either of post and basic whatever method it registered (the guide
uses post; libraries often default to basic), but never both in one request (RFC 6749 2.3:
"MUST NOT use more than one authentication method in each request"). Secrets are compared only via
``Client.verify_secret`` (constant time). Failures are ``invalid_client`` 401, with
``WWW-Authenticate: Basic`` when the client tried the Authorization header (RFC 6749 5.2).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from urllib.parse import unquote_plus

from aiohttp import web

from libs.contracts.account import get_client
from libs.oauth.clients import Client, tool_callback_url
from libs.oauth.errors import InvalidClient, InvalidRequest
from libs.platform.web import PG, SETTINGS

MAX_AUTHORIZATION_CHARS = 4096


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str | None
    secret: str | None
    via_basic: bool


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient(
            "Only HTTP Basic client authentication is supported in the Authorization header", via_basic=True
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise ValueError("no colon")
        # RFC 6749 2.3.1: both parts are application/x-www-form-urlencoded before Basic encoding.
        client_id, secret = unquote_plus(raw_id, errors="strict"), unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise InvalidClient("The Basic credentials are malformed", via_basic=True) from None
    if any(ord(c) < 32 or ord(c) == 127 for c in client_id + secret):
        raise InvalidClient("The Basic credentials are malformed", via_basic=True)
    return client_id, secret


# How the one step finds a client by id (get_client in production, a dict in domain tests).
ClientLookup = Callable[[str], Awaitable[Client | None]]


def presented_credentials(authorization: str | None, form: dict[str, str]) -> ClientCredentials:
    """Which client claims to be calling, and with what secret (no checks against the store yet)."""
    body_id, body_secret = form.get("client_id"), form.get("client_secret")
    if not authorization:
        return ClientCredentials(body_id, body_secret, via_basic=False)
    if len(authorization) > MAX_AUTHORIZATION_CHARS:
        raise InvalidClient("The Authorization header is too long", via_basic=True)
    basic_id, basic_secret = _basic(authorization)
    if body_secret is not None:
        raise InvalidRequest("Use one client authentication method: HTTP Basic or client_secret in the body, not both")
    if body_id is not None and body_id != basic_id:
        raise InvalidRequest("client_id in the body does not match the HTTP Basic credentials")
    return ClientCredentials(basic_id, basic_secret or None, via_basic=True)


def check_client(client: Client | None, creds: ClientCredentials, pepper: bytes, *, public_allowed: bool) -> Client:
    """The decision: ``client`` (looked up by ``creds.client_id``) may call, or ``invalid_client``."""
    if client is None:
        raise InvalidClient("Unknown client", via_basic=creds.via_basic, detail=f"client_id {creds.client_id!r}")
    if client.is_public:
        if creds.secret is not None:
            raise InvalidClient("This is a public client: it has no client_secret", via_basic=creds.via_basic)
        if not public_allowed:
            raise InvalidClient(
                "Introspection needs client authentication; public clients cannot use it", via_basic=creds.via_basic
            )
        return client
    if creds.secret is None:
        raise InvalidClient("client_secret is missing", via_basic=creds.via_basic)
    if not client.verify_secret(pepper, creds.secret):
        raise InvalidClient("Client authentication failed", via_basic=creds.via_basic)
    return client


async def authenticate_client(
    lookup: ClientLookup, pepper: bytes, creds: ClientCredentials, *, public_allowed: bool = True
) -> Client:
    if not creds.client_id:
        raise InvalidClient(
            "Client authentication is missing: send client_id and client_secret", via_basic=creds.via_basic
        )
    client = await lookup(creds.client_id)
    return check_client(client, creds, pepper, public_allowed=public_allowed)


def is_tool_exchange(form: dict[str, str], creds: ClientCredentials, public_base_url: str) -> bool:
    """A code exchange by the console's test tool: to the tool's callback, without a secret."""
    return (
        form.get("grant_type") == "authorization_code"
        and creds.secret is None
        and not creds.via_basic
        and form.get("redirect_uri") == tool_callback_url(public_base_url)
    )


async def authenticate(request: web.Request, form: dict[str, str], *, public_allowed: bool = True) -> Client:
    """The shared step of /token, /revoke and /introspect: who is calling (or ``invalid_client``)."""
    creds = presented_credentials(request.headers.get("Authorization"), form)
    pool, settings = request.app[PG], request.app[SETTINGS]

    async def lookup(client_id: str) -> Client | None:
        client = await get_client(pool, client_id)
        if client is not None and public_allowed and is_tool_exchange(form, creds, settings.public_base_url):
            return replace(client, auth_method="none")  # PKCE required, as for a public client
        return client

    return await authenticate_client(lookup, settings.pepper_bytes, creds, public_allowed=public_allowed)
