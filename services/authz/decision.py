"""What the authorize endpoint does with a valid request (RFC 6749 4.1.1, OIDC Core 3.1.2.1
prompt/max_age; docs/operations.md "App verification"): plain rules over typed values.

- ``login_step``: not logged in, or a fresh login needed (``prompt=login``, ``max_age`` exceeded)
  and this very request's login has not supplied it -> ``login`` (``login_required`` when
  ``prompt=none``);
- ``consent_step``: no ``prompt=consent`` and either a one-click login allowed by the settings for
  a verified app (never for the ``spend`` scope), or a consent record that covers the scopes ->
  ``issue``; else ``consent``
  (``consent_required`` when ``prompt=none``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from libs.oauth.vocabulary import SPEND_SCOPE
from libs.platform.config import Settings

from .authrequest import AuthRequest

Step = Literal["login", "login_required", "issue", "consent", "consent_required"]


class ConsentRecords(Protocol):
    async def covers(self, user_id: int, client_id: str, scopes: Sequence[str]) -> bool: ...


@dataclass(frozen=True)
class OneClickPolicy:
    """AUTO_AUTHORIZE_ENABLED and AUTO_AUTHORIZE_UNVERIFIED_APPS (docs/operations.md)."""

    enabled: bool
    unverified_apps: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> OneClickPolicy:
        return cls(settings.auto_authorize_enabled, settings.auto_authorize_unverified_apps)


def one_click_allowed(policy: OneClickPolicy, req: AuthRequest) -> bool:
    """``auto_authorize=true`` may skip the consent page: allowed globally and for the app, and the
    app verified by an operator, unless the operator keeps the guide's permissive behaviour. Never
    for ``spend``: only a consent record whose limit the user chose on the page covers it
    (docs/spending.md)."""
    return (
        req.auto_authorize
        and SPEND_SCOPE not in req.scopes
        and policy.enabled
        and req.client_auto_authorize
        and (req.client_verified or policy.unverified_apps)
    )


def login_step(req: AuthRequest, auth_time: int | None, fresh: bool, now: int) -> Step | None:
    """``auth_time``: of the signed-in session, None when nobody is; ``fresh``: this session's
    password login satisfied this very request (loginrequest.py). None: no login needed."""
    silent = "none" in req.prompt
    if auth_time is None:
        return "login_required" if silent else "login"
    if fresh:
        return None
    too_old = req.max_age is not None and now - auth_time > req.max_age
    if "login" in req.prompt or too_old:
        return "login_required" if silent else "login"
    return None


def consent_step(policy: OneClickPolicy, req: AuthRequest, covered: bool) -> Step:
    """``covered``: a consent record of this user already covers every requested scope."""
    if "consent" not in req.prompt and (one_click_allowed(policy, req) or covered):
        return "issue"
    return "consent_required" if "none" in req.prompt else "consent"


async def decide(
    records: ConsentRecords,
    policy: OneClickPolicy,
    req: AuthRequest,
    who: tuple[int, int] | None,
    fresh: bool,
    now: int,
) -> Step:
    """``who``: (user_id, auth_time) of the signed-in user, or None."""
    step = login_step(req, who[1] if who else None, fresh, now)
    if step is not None or who is None:
        return step or "login"
    # The record is read only when it can change the answer.
    needed = "consent" not in req.prompt and not one_click_allowed(policy, req)
    covered = needed and await records.covers(who[0], req.client_id, req.scopes)
    return consent_step(policy, req, covered)
