"""A one-time message for the next page of this login session, kept server-side (Redis).

Post/redirect/get for what is shown only once (a new client secret or developer token): the POST
stores it here and redirects; the GET takes it (GETDEL), so a reload shows nothing and no secret
ever travels in a URL or sits on a re-submittable POST result. Keyed by the session (whose Redis key
is already a hash of the cookie), short-lived.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from aiohttp import web

from libs.oauth.sessions import current_session
from libs.platform.redis import key
from libs.platform.web import REDIS, SETTINGS

FLASH_TTL_SECONDS = 300


async def _flash_key(request: web.Request) -> str | None:
    session = await current_session(request)
    if session is None:
        return None
    return key(request.app[SETTINGS], "flash", hashlib.sha256(session.key.encode()).hexdigest())


async def put_flash(request: web.Request, message: dict[str, Any]) -> None:
    flash_key = await _flash_key(request)
    if flash_key is not None:
        await request.app[REDIS].set(flash_key, orjson.dumps(message), ex=FLASH_TTL_SECONDS)


async def take_flash(request: web.Request) -> dict[str, Any] | None:
    """The message stored by the previous POST of this session, removed as it is read."""
    flash_key = await _flash_key(request)
    if flash_key is None:
        return None
    raw = await request.app[REDIS].getdel(flash_key)
    return orjson.loads(raw) if raw else None
