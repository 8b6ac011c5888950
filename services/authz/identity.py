"""Who is logged in: the authz service's read-only view of the account service's ``users`` table
(docs/contracts.md: ``libs/contracts/account.py``, "authz reads users for login")."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web

from libs.contracts import account
from libs.oauth.sessions import Session, current_session, end_session, signed_in_user
from libs.oauth.vocabulary import UserStatus
from libs.platform.validation import has_control_chars
from libs.platform.web import PG

MAX_IDENTIFIER = 254


@dataclass(frozen=True)
class LoginUser:
    id: int
    username: str
    status: int
    password_hash: str

    @property
    def active(self) -> bool:
        return self.status == UserStatus.ACTIVE


@dataclass(frozen=True)
class SignedIn:
    session: Session
    user_id: int
    username: str


async def find_login_user(db: asyncpg.Pool, identifier: str) -> LoginUser | None:
    """The user whose username or email is ``identifier`` (case-insensitive), with the hash."""
    if not identifier or len(identifier) > MAX_IDENTIFIER or has_control_chars(identifier):
        return None
    row = await account.login_user(db, identifier)
    return LoginUser(**dict(row)) if row else None


async def signed_in(request: web.Request) -> SignedIn | None:
    """The session's user if they are logged in and still active (``sessions.signed_in_user``); a
    session whose user has been disabled or deleted counts as logged out."""

    async def active_user(user_id: int) -> str | None:
        row = await account.user_name_status(request.app[PG], user_id)
        return row["username"] if row is not None and row["status"] == UserStatus.ACTIVE else None

    found = await signed_in_user(request, active_user)
    if found is None:
        return None
    session, username = found
    return SignedIn(session, session.user_id, username)


async def drop_dead_session(request: web.Request, response: web.StreamResponse) -> None:
    """Clear the cookie of a session whose user can no longer log in (disabled or deleted)."""
    if await current_session(request) is not None:
        await end_session(request, response)
