"""Validation of an authorization request (RFC 6749 4.1.1, RFC 7636, OIDC Core 3.1.2.1).

The order matters (RFC 6749 4.1.2.1): until the client and its redirect_uri are known to be valid,
nothing may be sent to the redirect_uri, so those errors are a page; every later error is sent back
to the (now trusted) redirect_uri.

1. ``client_id`` (single, known) and ``redirect_uri`` (single, exactly registered) -> error page.
2. ``state`` (single, <= 2048 chars) is read first, so that every later error can echo it.
3. any repeated parameter -> invalid_request (RFC 6749 3.1).
4. response_type (missing -> invalid_request; not ``code`` -> unsupported_response_type),
   state (required by the guide), scope (-> invalid_scope), PKCE, nonce, prompt, max_age.

A parameter sent with an empty value is treated as omitted (RFC 6749 3.1).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import asyncpg
from multidict import MultiMapping

from libs.oauth.clients import get_client
from libs.oauth.vocabulary import PROMPTS, SCOPES
from libs.platform.validation import has_control_chars

DEFAULT_SCOPES = ("profile",)
PKCE_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
MAX_STATE = 2048
MAX_NONCE = 255
MAX_REDIRECT_URI = 2000
MAX_SCOPE = 500


class AuthorizeError(Exception):
    """An authorization request error. ``redirect_uri`` is None while the client or its
    redirect_uri is not yet trusted: the error is then shown as a page (``page_message`` is the
    strings key and its arguments), never redirected."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        redirect_uri: str | None = None,
        state: str | None = None,
        page_message: tuple[str, dict[str, str]] = ("", {}),
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state
        self.page_message = page_message


@dataclass(frozen=True)
class AuthRequest:
    client_id: str
    client_name: str
    client_description: str
    client_auto_authorize: bool
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    prompt: tuple[str, ...]
    max_age: int | None
    auto_authorize: bool
    client_verified: bool = False  # an operator vouches for the app (docs/operations.md)

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuthRequest:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}  # stored by an older version: extra keys
        data["scopes"] = tuple(data["scopes"])
        data["prompt"] = tuple(data["prompt"])
        return cls(**data)


_WORD_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")


def _shown(word: str) -> str | None:
    """``word`` if it is safe to echo in an error_description (RFC 6749 allows only a narrow set
    of ASCII characters there), else None."""
    return word if _WORD_RE.match(word) else None


def _page(key: str, **kw: str) -> AuthorizeError:
    return AuthorizeError("invalid_request", key, page_message=(key, kw))


def _single(query: MultiMapping[str], name: str) -> tuple[str | None, bool]:
    """(value or None when absent/empty, repeated?)"""
    values = query.getall(name, [])
    return (values[0] or None) if values else None, len(values) > 1


async def parse(db: asyncpg.Pool, query: MultiMapping[str]) -> AuthRequest:
    # 1. client and redirect_uri: errors are pages, never redirects.
    client_id, repeated = _single(query, "client_id")
    if repeated:
        raise _page("error.duplicate_param", name="client_id")
    client = None
    if client_id and not has_control_chars(client_id):
        client = await get_client(db, client_id)
    if client is None:
        raise _page("error.unknown_client")
    redirect_uri, repeated = _single(query, "redirect_uri")
    if repeated:
        raise _page("error.duplicate_param", name="redirect_uri")
    if not redirect_uri or len(redirect_uri) > MAX_REDIRECT_URI or not client.has_redirect_uri(redirect_uri):
        raise _page("error.bad_redirect_uri")

    # 2. state, echoed in every later error.
    state, repeated = _single(query, "state")

    def fail(error: str, description: str, *, echo_state: bool = True) -> AuthorizeError:
        return AuthorizeError(error, description, redirect_uri=redirect_uri, state=state if echo_state else None)

    if repeated:
        raise fail("invalid_request", "state is repeated", echo_state=False)
    if state is not None and len(state) > MAX_STATE:
        raise fail("invalid_request", f"state is longer than {MAX_STATE} characters", echo_state=False)

    # 3. no parameter more than once.
    for name in query:
        if len(query.getall(name)) > 1:
            raise fail("invalid_request", f"{_shown(name) or 'a parameter'} is repeated; send each parameter once")

    # 4. the rest, in RFC order.
    response_type, _ = _single(query, "response_type")
    if response_type is None:
        raise fail("invalid_request", "response_type is required; use response_type=code")
    if response_type != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    if state is None:
        raise fail("invalid_request", "state is required: a random value your server checks in the callback")

    scopes = parse_scope(_single(query, "scope")[0])
    if isinstance(scopes, str):
        raise fail("invalid_scope", scopes)

    challenge, _ = _single(query, "code_challenge")
    method, _ = _single(query, "code_challenge_method")
    if challenge is None:
        if method is not None:
            raise fail("invalid_request", "code_challenge_method was sent without code_challenge")
        if client.is_public:
            raise fail("invalid_request", "this is a public client: PKCE is required (code_challenge, S256)")
    else:
        if method != "S256":
            raise fail("invalid_request", "code_challenge_method must be S256 (plain is not allowed)")
        if not PKCE_CHALLENGE_RE.match(challenge):
            raise fail("invalid_request", "code_challenge must be 43-128 characters of A-Z a-z 0-9 - . _ ~")

    nonce, _ = _single(query, "nonce")
    if nonce is not None and (len(nonce) > MAX_NONCE or has_control_chars(nonce)):
        raise fail("invalid_request", f"nonce must be at most {MAX_NONCE} printable characters")

    prompt = parse_prompt(_single(query, "prompt")[0])
    if isinstance(prompt, str):
        raise fail("invalid_request", prompt)

    raw_max_age, _ = _single(query, "max_age")
    max_age = None
    if raw_max_age is not None:
        if not (raw_max_age.isascii() and raw_max_age.isdigit() and len(raw_max_age) <= 10):
            raise fail("invalid_request", "max_age must be a non-negative integer (seconds)")
        max_age = int(raw_max_age)

    auto, _ = _single(query, "auto_authorize")
    return AuthRequest(
        client_id=client.client_id,
        client_name=client.name,
        client_description=client.description,
        client_auto_authorize=client.auto_authorize,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        code_challenge=challenge,
        code_challenge_method=method if challenge else None,
        nonce=nonce,
        prompt=prompt,
        max_age=max_age,
        auto_authorize=(auto or "").lower() == "true",
        client_verified=client.verified,
    )


def parse_scope(raw: str | None) -> tuple[str, ...] | str:
    """The requested scopes (space-separated, RFC 6749 3.3), deduplicated in request order, or an
    error description."""
    if raw is None:
        return DEFAULT_SCOPES
    if len(raw) > MAX_SCOPE:
        return "scope is too long"
    parts = [p for p in raw.split(" ") if p]
    if not parts:
        return DEFAULT_SCOPES
    unknown = [p for p in parts if p not in SCOPES]
    if unknown:
        shown = _shown(unknown[0])
        known = ", ".join(SCOPES)
        return f"unknown scope {shown}; allowed: {known}" if shown else f"unknown scope; allowed: {known}"
    return tuple(dict.fromkeys(parts))


def parse_prompt(raw: str | None) -> tuple[str, ...] | str:
    """OIDC prompt: a space-separated subset of login/consent, or none alone."""
    if raw is None:
        return ()
    parts = tuple(dict.fromkeys(p for p in raw.split(" ") if p))
    if not parts:
        return ()
    if any(p not in PROMPTS for p in parts):
        return "prompt must be none, login or consent"
    if "none" in parts and len(parts) > 1:
        return "prompt=none cannot be combined with other values"
    return parts
