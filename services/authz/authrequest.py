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
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import asyncpg
from multidict import MultiMapping

from libs.contracts.account import get_client
from libs.oauth.clients import Client
from libs.oauth.errors import InvalidRequest, InvalidScope, OAuthError, UnsupportedResponseType
from libs.oauth.spending import MAX_AMOUNT
from libs.oauth.vocabulary import PROMPTS, SCOPES, SPEND_PERIODS, SPEND_SCOPE
from libs.platform.validation import has_control_chars

from .responses import ClientRedirectError, ErrorPage

DEFAULT_SCOPES = ("profile",)
PKCE_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
MAX_STATE = 2048
MAX_NONCE = 255
MAX_REDIRECT_URI = 2000
MAX_SCOPE = 500


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
    # The app's suggested spending limit (minor units) and period, pre-filled on the consent page
    # when it asks for ``spend`` (docs/spending.md); the user chooses the limit that is stored.
    spend_limit: int | None = None
    spend_period: str | None = None

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


class ClientSource(Protocol):
    """Where the checks read a client from (libs.contracts.account.get_client in production)."""

    async def __call__(self, client_id: str) -> Client | None: ...


def _single(query: MultiMapping[str], name: str) -> tuple[str | None, bool]:
    """(value or None when absent/empty, repeated?)"""
    values = query.getall(name, [])
    return (values[0] or None) if values else None, len(values) > 1


@dataclass
class Draft:
    """An authorization request while it is being checked: the raw query, the client looked up by
    its ``client_id``, and the fields each check fills in for the next ones."""

    query: MultiMapping[str]
    client: Client | None
    redirect_uri: str = ""
    state: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    nonce: str | None = None
    prompt: tuple[str, ...] = ()
    max_age: int | None = None
    spend_limit: int | None = None
    spend_period: str | None = None

    def get(self, name: str) -> str | None:
        return _single(self.query, name)[0]

    def fail(self, error: OAuthError, *, echo_state: bool = True) -> ClientRedirectError:
        """``error`` to be sent back to the (by now trusted) redirect_uri."""
        state = self.state if echo_state else None
        return ClientRedirectError(error, redirect_uri=self.redirect_uri, state=state)


# -- 1. client and redirect_uri: errors are pages, never redirects (RFC 6749 4.1.2.1).


def check_client(d: Draft) -> None:
    if _single(d.query, "client_id")[1]:
        raise ErrorPage(400, "error.duplicate_param", name="client_id")
    if d.client is None:
        raise ErrorPage(400, "error.unknown_client")


def check_redirect_uri(d: Draft) -> None:
    redirect_uri, repeated = _single(d.query, "redirect_uri")
    if repeated:
        raise ErrorPage(400, "error.duplicate_param", name="redirect_uri")
    assert d.client is not None  # check_client ran
    if not redirect_uri or len(redirect_uri) > MAX_REDIRECT_URI or not d.client.has_redirect_uri(redirect_uri):
        raise ErrorPage(400, "error.bad_redirect_uri")
    d.redirect_uri = redirect_uri


# -- 2. state, echoed in every later error.


def check_state_shape(d: Draft) -> None:
    state, repeated = _single(d.query, "state")
    if repeated:
        raise d.fail(InvalidRequest("state is repeated"), echo_state=False)
    if state is not None and len(state) > MAX_STATE:
        raise d.fail(InvalidRequest(f"state is longer than {MAX_STATE} characters"), echo_state=False)
    d.state = state


# -- 3. no parameter more than once (RFC 6749 3.1).


def check_no_repeats(d: Draft) -> None:
    for name in d.query:
        if len(d.query.getall(name)) > 1:
            raise d.fail(InvalidRequest(f"{_shown(name) or 'a parameter'} is repeated; send each parameter once"))


# -- 4. the rest, in RFC order.


def check_response_type(d: Draft) -> None:
    response_type = d.get("response_type")
    if response_type is None:
        raise d.fail(InvalidRequest("response_type is required; use response_type=code"))
    if response_type != "code":
        raise d.fail(UnsupportedResponseType("only response_type=code is supported"))


def check_state_present(d: Draft) -> None:
    """The guide requires ``state`` (RFC 6749 10.12 CSRF protection)."""
    if d.state is None:
        raise d.fail(InvalidRequest("state is required: a random value your server checks in the callback"))


def check_scope(d: Draft) -> None:
    scopes = parse_scope(d.get("scope"))
    if isinstance(scopes, str):
        raise d.fail(InvalidScope(scopes))
    d.scopes = scopes


def check_pkce(d: Draft) -> None:
    """RFC 7636 4.3: S256 only; required for public clients (RFC 9700 2.1.1)."""
    challenge, method = d.get("code_challenge"), d.get("code_challenge_method")
    assert d.client is not None
    if challenge is None:
        if method is not None:
            raise d.fail(InvalidRequest("code_challenge_method was sent without code_challenge"))
        if d.client.is_public:
            raise d.fail(InvalidRequest("this is a public client: PKCE is required (code_challenge, S256)"))
        return
    if method != "S256":
        raise d.fail(InvalidRequest("code_challenge_method must be S256 (plain is not allowed)"))
    if not PKCE_CHALLENGE_RE.match(challenge):
        raise d.fail(InvalidRequest("code_challenge must be 43-128 characters of A-Z a-z 0-9 - . _ ~"))
    d.code_challenge, d.code_challenge_method = challenge, method


def check_nonce(d: Draft) -> None:
    nonce = d.get("nonce")
    if nonce is not None and (len(nonce) > MAX_NONCE or has_control_chars(nonce)):
        raise d.fail(InvalidRequest(f"nonce must be at most {MAX_NONCE} printable characters"))
    d.nonce = nonce


def check_prompt(d: Draft) -> None:
    prompt = parse_prompt(d.get("prompt"))
    if isinstance(prompt, str):
        raise d.fail(InvalidRequest(prompt))
    d.prompt = prompt


def check_max_age(d: Draft) -> None:
    """OIDC Core 3.1.2.1: max_age in seconds."""
    raw = d.get("max_age")
    if raw is None:
        return
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        raise d.fail(InvalidRequest("max_age must be a non-negative integer (seconds)"))
    d.max_age = int(raw)


def check_spend_suggestion(d: Draft) -> None:
    """``spend_limit`` (minor units) and ``spend_period`` (once, daily, monthly): the app's suggested
    spending limit for the consent page (docs/spending.md); only with ``scope`` containing spend."""
    raw_limit, period = d.get("spend_limit"), d.get("spend_period")
    if raw_limit is None and period is None:
        return
    if SPEND_SCOPE not in d.scopes:
        raise d.fail(InvalidRequest("spend_limit and spend_period need scope spend"))
    if raw_limit is not None:
        if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 16) or not (
            0 < int(raw_limit) <= MAX_AMOUNT
        ):
            raise d.fail(InvalidRequest(f"spend_limit must be an integer number of minor units, 1-{MAX_AMOUNT}"))
        d.spend_limit = int(raw_limit)
    if period is not None:
        if period not in SPEND_PERIODS:
            raise d.fail(InvalidRequest("spend_period must be once, daily or monthly"))
        d.spend_period = period


# The order of the checks, in one place (see the module docstring).
CHECKS: tuple[Callable[[Draft], None], ...] = (
    check_client,
    check_redirect_uri,
    check_state_shape,
    check_no_repeats,
    check_response_type,
    check_state_present,
    check_scope,
    check_spend_suggestion,
    check_pkce,
    check_nonce,
    check_prompt,
    check_max_age,
)


async def load_client(clients: ClientSource, query: MultiMapping[str]) -> Client | None:
    client_id = _single(query, "client_id")[0]
    if not client_id or has_control_chars(client_id):
        return None
    return await clients(client_id)


def build(d: Draft) -> AuthRequest:
    """The validated request, once every check has passed."""
    assert d.client is not None and d.state is not None
    client = d.client
    return AuthRequest(
        client_id=client.client_id,
        client_name=client.name,
        client_description=client.description,
        client_auto_authorize=client.auto_authorize,
        redirect_uri=d.redirect_uri,
        scopes=d.scopes,
        state=d.state,
        code_challenge=d.code_challenge,
        code_challenge_method=d.code_challenge_method,
        nonce=d.nonce,
        prompt=d.prompt,
        max_age=d.max_age,
        auto_authorize=(d.get("auto_authorize") or "").lower() == "true",
        client_verified=client.verified,
        spend_limit=d.spend_limit,
        spend_period=d.spend_period,
    )


async def validate(clients: ClientSource, query: MultiMapping[str]) -> AuthRequest:
    """Run ``CHECKS`` in order over a draft; raise ``ErrorPage``/``ClientRedirectError`` on the first
    failure."""
    draft = Draft(query, await load_client(clients, query))
    for check in CHECKS:
        check(draft)
    return build(draft)


async def parse(db: asyncpg.Pool, query: MultiMapping[str]) -> AuthRequest:
    async def clients(client_id: str) -> Client | None:
        return await get_client(db, client_id)

    return await validate(clients, query)


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
