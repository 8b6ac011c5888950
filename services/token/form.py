"""Reading an ``application/x-www-form-urlencoded`` request body the way RFC 6749 wants it.

- Only that media type (RFC 6749 3.2, 4.1.3); UTF-8 only (RFC 6749 Appendix B).
- A parameter without a value is treated as omitted (RFC 6749 3.1).
- A known parameter sent more than once is an error (RFC 6749 3.1, 3.2); unknown parameters are
  ignored (RFC 6749 3.2).
- Everything is bounded: body size, number of fields, value length; known values with control
  characters (NUL cannot even be stored in PostgreSQL text) are refused.

Reusable by every form-encoded endpoint of the token service (token, revocation, introspection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from urllib.parse import unquote

from aiohttp import web

from libs.oauth.errors import InvalidRequest
from libs.platform.params import is_clean

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 16 * 1024
MAX_FIELDS = 32
MAX_VALUE_CHARS = 2048  # redirect URIs are at most 2000 characters (services/account/apps.py)


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise InvalidRequest(f"The request body is larger than {limit} bytes", status=413)
    if length is not None:  # the usual case: what Content-Length says, in one read
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError as short:  # the body ended early: what came, as before
            return short.partial
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(4096):
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"The request body is larger than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _unquote(text: str) -> str:
    """A name or value decoded as ``parse_qsl`` does ('+' is a space, then %XX as UTF-8, strictly),
    without the work for the usual text that has neither."""
    if "%" in text or "+" in text:
        return unquote(text.replace("+", " "), encoding="utf-8", errors="strict")
    return text


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a form body, as ``parse_qsl(text, keep_blank_values=True,
    errors="strict", max_num_fields=MAX_FIELDS, separator="&")`` gives them, without its per-call
    argument coercion (tests/unit/test_form.py checks that both agree): ValueError beyond MAX_FIELDS
    fields, UnicodeDecodeError for %XX sequences that are not UTF-8."""
    if not text:
        return []
    fields = text.split("&")
    if len(fields) > MAX_FIELDS:
        raise ValueError("Max number of fields exceeded")
    pairs = []
    for field in fields:
        if field:
            name, _, value = field.partition("=")
            pairs.append((_unquote(name), _unquote(value)))
    return pairs


def parse_form(raw: bytes, known: Collection[str]) -> dict[str, str]:
    """The known, non-empty parameters of a form body (errors as ``invalid_request``)."""
    try:
        pairs = parse_pairs(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8") from None
    except ValueError:
        raise InvalidRequest(f"The request has more than {MAX_FIELDS} parameters") from None
    seen: set[str] = set()
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in known:
            continue  # RFC 6749 3.2: unrecognized parameters are ignored
        if name in seen:
            raise InvalidRequest(f"The parameter {name} is included more than once")
        seen.add(name)
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidRequest(f"The parameter {name} is too long")
        if not is_clean(value, MAX_VALUE_CHARS):  # the shared rule (libs/platform/params.py)
            raise InvalidRequest(f"The parameter {name} contains control characters")
        if value:  # RFC 6749 3.1: a parameter without a value is treated as omitted
            form[name] = value
    return form


async def read_form(request: web.Request, known: Collection[str]) -> dict[str, str]:
    if request.content_type != FORM_TYPE:
        raise InvalidRequest(f"The request body must be {FORM_TYPE}")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8", "us-ascii"):
        raise InvalidRequest("The request body must be UTF-8")
    return parse_form(await _read_bounded(request, MAX_BODY_BYTES), known)


def required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise InvalidRequest(f"The parameter {name} is missing")
    return value
