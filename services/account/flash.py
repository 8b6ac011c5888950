"""A one-time message for the next page of this login session, kept server-side (Redis).

Post/redirect/get for what is shown only once (a new client secret or developer token): the POST
stores it here and redirects; the GET takes it (GETDEL), so a reload shows nothing and no secret
ever travels in a URL or sits on a re-submittable POST result. Keyed by the session (whose Redis key
is already a hash of the cookie), short-lived, and sealed with AES-GCM under a key derived from the
session cookie itself (HMAC(pepper, sid)), which Redis never holds: a Redis dump does not reveal a
secret waiting to be shown.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libs.oauth.sessions import SESSION_COOKIE, current_session
from libs.platform.redis import key
from libs.platform.web import REDIS, SETTINGS

FLASH_TTL_SECONDS = 300
NONCE_BYTES = 12


async def _flash_key_and_cipher(request: web.Request) -> tuple[str, AESGCM] | None:
    session, sid = await current_session(request), request.cookies.get(SESSION_COOKIE)
    if session is None or not sid:
        return None
    settings = request.app[SETTINGS]
    sealing_key = hmac.new(settings.pepper_bytes, b"flash:" + sid.encode(), hashlib.sha256).digest()
    return key(settings, "flash", hashlib.sha256(session.key.encode()).hexdigest()), AESGCM(sealing_key)


async def put_flash(request: web.Request, message: dict[str, Any]) -> None:
    found = await _flash_key_and_cipher(request)
    if found is not None:
        flash_key, cipher = found
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + cipher.encrypt(nonce, orjson.dumps(message), flash_key.encode())
        await request.app[REDIS].set(flash_key, sealed, ex=FLASH_TTL_SECONDS)


async def take_flash(request: web.Request) -> dict[str, Any] | None:
    """The message stored by the previous POST of this session, removed as it is read."""
    found = await _flash_key_and_cipher(request)
    if found is None:
        return None
    flash_key, cipher = found
    raw = await request.app[REDIS].getdel(flash_key)
    if not isinstance(raw, bytes) or len(raw) <= NONCE_BYTES:  # the client returns bytes (no decoding)
        return None
    try:
        plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], flash_key.encode())
    except InvalidTag:  # sealed for another cookie: nothing to show
        return None
    message = orjson.loads(plain)
    return message if isinstance(message, dict) else None
