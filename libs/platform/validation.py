"""Small helpers for validating JSON request bodies of the developer API, on top of the shared
parsers of params.py."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .errors import ApiError
from .params import InvalidInput, is_clean, text


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
    """Control characters (C0, DEL, C1) or lone surrogates: refused everywhere (params.py)."""
    return not is_clean(value, len(value))


def text_field(
    body: dict[str, Any], name: str, *, required: bool, min_len: int, max_len: int, default: str = ""
) -> str:
    """A JSON string field, stripped and checked by the shared parser (params.text); a description
    may hold line breaks and tabs, nothing else may."""
    if name not in body or body[name] is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return default
    value = body[name]
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    try:
        return text(value.strip(), name, min_len=min_len, max_len=max_len, multiline=name == "description")
    except InvalidInput as exc:
        raise ApiError(400, f"{name} {exc.problem}") from None
