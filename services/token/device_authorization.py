"""``POST /api/oauth2/device_authorization``: the device authorization endpoint (RFC 8628 3.1, 3.2;
docs/device.md).

A CLI, IDE plug-in or device without a browser asks here for a ``device_code`` (256 bits, only the
device sees it) and a ``user_code`` (8 letters shown as ``XXXX-XXXX``, libs/oauth/user_codes.py)
that the user enters at ``verification_uri`` (``/device``) in any browser. Both are stored only as
keyed hashes in ``device_codes`` (owned by authz, docs/contracts.md), with the requesting device's
User-Agent and IP address, which the approval page shows.

The client authenticates exactly as at the token endpoint (``client_auth.authenticate``: public
clients by ``client_id`` alone, confidential ones with their secret, RFC 8628 3.1) and must be
allowed the device grant (``oauth_apps.grant_types``, else ``unauthorized_client``). ``scope`` is
optional (default ``profile``, as at the authorize endpoint); an unknown scope is ``invalid_scope``.
"""

from __future__ import annotations

from aiohttp import web

from libs.contracts import authz as device_codes
from libs.oauth.errors import InvalidScope, TemporarilyUnavailable
from libs.oauth.user_codes import new_user_code, shown
from libs.oauth.vocabulary import NO_STORE, SCOPES
from libs.platform.clientip import client_ip
from libs.platform.params import is_clean
from libs.platform.security import new_token, token_hash
from libs.platform.web import PG, SETTINGS, json_response

from .client_auth import authenticate
from .discovery import DEVICE_AUTHORIZATION_PATH
from .form import read_form
from .grants.device_code import check_device_client

PATH = DEVICE_AUTHORIZATION_PATH
VERIFICATION_PATH = "/device"
PARAMETERS = frozenset({"client_id", "client_secret", "scope"})
DEFAULT_SCOPE = "profile"
MAX_AGENT = 200
USER_CODE_TRIES = 5  # a collision with a stored code is about 1 in 10^6 even with 25,000 codes stored


def granted_scope(requested: str | None) -> str:
    """The requested scopes (duplicates dropped, order kept), or ``invalid_scope``."""
    wanted = list(dict.fromkeys((requested or DEFAULT_SCOPE).split()))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise InvalidScope(f"Unknown scope; allowed: {', '.join(SCOPES)}")
    return " ".join(wanted)


def device_agent(request: web.Request) -> str:
    """The device's User-Agent as the approval page may show it (bounded, printable), else ''."""
    agent = request.headers.get("User-Agent", "")[:MAX_AGENT]
    return agent if is_clean(agent, MAX_AGENT) else ""


async def handle_device_authorization(request: web.Request) -> web.Response:
    form = await read_form(request, PARAMETERS)
    client = await authenticate(request, form)
    check_device_client(client)
    scope = granted_scope(form.get("scope"))
    settings = request.app[SETTINGS]
    pepper = settings.pepper_bytes
    device_code = new_token("device")
    async with request.app[PG].acquire() as conn:
        for _ in range(USER_CODE_TRIES):
            user_code = new_user_code()
            stored = await device_codes.insert_device_code(
                conn,
                device_code_hash=token_hash(pepper, device_code),
                user_code_hash=token_hash(pepper, user_code),
                client_id=client.client_id,
                scope=scope,
                device_agent=device_agent(request),
                device_ip=client_ip(request),
                interval_seconds=settings.device_poll_interval_seconds,
                ttl_seconds=settings.device_code_ttl_seconds,
            )
            if stored is not None:
                break
        else:
            raise TemporarilyUnavailable("Could not allocate a user code; try again", status=503)
    verification_uri = settings.public_base_url + VERIFICATION_PATH
    body = {
        "device_code": device_code,
        "user_code": shown(user_code),
        "verification_uri": verification_uri,
        "verification_uri_complete": f"{verification_uri}?user_code={shown(user_code)}",
        "expires_in": settings.device_code_ttl_seconds,
        "interval": settings.device_poll_interval_seconds,
    }
    return json_response(body, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, handle_device_authorization)
