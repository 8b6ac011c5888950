"""Typed parsers for every value that comes from outside: headers, query strings, forms, JSON
bodies, cookies, path segments and JWT headers/claims (docs/api.md "Input rules").

One rule for all services: a value is checked for type, length and character set *before* it is
used in any lookup, so nothing reaches PostgreSQL (which refuses NUL in text and cannot encode a
lone surrogate) or Redis as an invalid string.

- Text is a ``str`` (a JSON number or list where a string is expected is refused), at most
  ``max_len`` characters, without C0/C1 control characters (``multiline`` allows tab and newlines)
  and without lone surrogates (what aiohttp's ``surrogateescape`` makes of bytes that are not UTF-8).
- A parameter appears at most once (RFC 6749 3.1: "Request and response parameters MUST NOT be
  included more than once"): the token service's forms (services/token/form.py) and the authorize
  request (services/authz/authrequest.py) refuse repeats.

The parsers raise ``InvalidInput``; ``libs/platform/web.error_middleware`` renders it in the
endpoint's own error form (RFC 6749 ``invalid_request``, the developer-API envelope, or an HTML
page). Code that must answer differently (RFC 7662 "inactive", RFC 6750 ``invalid_token``) uses
the boolean checks (``is_clean``, ``is_kid``) or catches ``InvalidInput`` and raises its own error.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

# C0 controls, DEL, C1 controls, and surrogates (never valid alone in a str that came from UTF-8).
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_MULTILINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# A JWS ``kid`` as this platform mints it (base64url, libs/oauth/keys.generate), with room for
# operator-chosen ids: RFC 7515 4.1.4 leaves it a case-sensitive string; we accept a safe subset.
KID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
MAX_ID_DIGITS = 18  # fits a PostgreSQL bigint


class InvalidInput(ValueError):
    """A value from the request is of the wrong type, too long, or holds forbidden characters."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem

    @property
    def message(self) -> str:
        return f"The parameter {self.name} {self.problem}"


def is_clean(value: object, max_len: int, *, multiline: bool = False) -> bool:
    """True for a ``str`` of at most ``max_len`` characters with no control characters or lone surrogates."""
    if not isinstance(value, str) or len(value) > max_len:
        return False
    return (_BAD_MULTILINE if multiline else _BAD).search(value) is None


def text(
    value: object,
    name: str,
    *,
    max_len: int,
    min_len: int = 0,
    multiline: bool = False,
    pattern: re.Pattern[str] | None = None,
) -> str:
    """``value`` as checked text, or ``InvalidInput`` saying what is wrong with it."""
    if not isinstance(value, str):
        raise InvalidInput(name, "must be a string")
    if len(value) > max_len:
        raise InvalidInput(name, f"must be at most {max_len} characters")
    if len(value) < min_len:
        raise InvalidInput(name, "must not be empty" if min_len == 1 else f"must be at least {min_len} characters")
    if (_BAD_MULTILINE if multiline else _BAD).search(value):
        raise InvalidInput(name, "contains control characters or invalid Unicode")
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidInput(name, "has an invalid format")
    return value


def integer(value: object, name: str, *, minimum: int, maximum: int) -> int:
    """``value`` as a JSON integer (not a bool, a float or a numeric string) within
    ``minimum``..``maximum``, or ``InvalidInput``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(name, "must be an integer")
    if not minimum <= value <= maximum:
        raise InvalidInput(name, f"must be between {minimum} and {maximum}")
    return value


def object_id(raw: str) -> int | None:
    """A path segment naming a row by its numeric id, or None when it cannot be one (the caller
    answers 404: an impossible id names nothing)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_ID_DIGITS:
        return None
    return int(raw)


def is_kid(value: object) -> TypeGuard[str]:
    """Whether a JWS header's ``kid`` may be looked up at all (RFC 7515 4.1.4)."""
    return isinstance(value, str) and KID.fullmatch(value) is not None


async def post_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """``request.post()``, with a malformed body (a multipart type without a boundary, a broken
    multipart or urlencoded body) refused as ``InvalidInput`` instead of an unhandled ValueError."""
    try:
        return await request.post()
    except ValueError:  # also UnicodeDecodeError
        raise InvalidInput("body", "is not a well-formed form (application/x-www-form-urlencoded)") from None
