"""Small helpers for validating JSON request bodies of the developer API."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .errors import ApiError


async def json_object(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    """The request body as a JSON object with only ``allowed`` keys, else a clear 400."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(
            400, "request body is not valid JSON; send a JSON object with Content-Type: application/json"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)[:200]}; allowed: {', '.join(sorted(allowed))}")
    return body


def has_control_chars(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


def text_field(
    body: dict[str, Any], name: str, *, required: bool, min_len: int, max_len: int, default: str = ""
) -> str:
    if name not in body or body[name] is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return default
    value = body[name]
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    value = value.strip()
    if len(value) < min_len:
        raise ApiError(
            400, f"{name} must not be empty" if min_len == 1 else f"{name} must be at least {min_len} characters"
        )
    if len(value) > max_len:
        raise ApiError(400, f"{name} must be at most {max_len} characters")
    if name != "description" and has_control_chars(value):
        raise ApiError(400, f"{name} must not contain control characters")
    return value
