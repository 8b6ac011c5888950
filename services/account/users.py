"""Users: creation with unique username and email (normalised, look-alikes refused: emails.py),
the password policy (passwords.py), argon2 password hashes, status."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from libs.oauth.vocabulary import UserStatus
from libs.platform.security import hash_password

from . import store
from .emails import normalize_email, skeleton
from .passwords import MESSAGES, password_problem

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


class UserError(ValueError):
    """A user-facing validation error: the field, an English message, and a code naming the rule
    (strings.py has the zh/en text of ``acct.user_error.<field>.<code>``)."""

    def __init__(self, field: str, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code


# Constraint -> (field, code, message) for a lost race on a unique index (migrations 0001, 0005).
UNIQUE_VIOLATIONS = {
    "users_username_key": ("username", "taken", "username is already taken"),
    "users_email_key": ("email", "taken", "email is already taken"),
    "users_email_skeleton_key": (
        "email",
        "confusable",
        "email looks the same as an address that is already registered",
    ),
}


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str
    status: int
    quota: int
    used_quota: int
    created_at: datetime

    @property
    def created_time(self) -> int:
        return int(self.created_at.timestamp())

    @property
    def active(self) -> bool:
        return is_active(self.status)


def is_active(status: int | None) -> bool:
    """The one place that says whether an account may log in, use tokens and spend quota
    (``oauthctl user disable`` sets another status; the SQL filters use the same value)."""
    return status == UserStatus.ACTIVE


def _invisible(text: str) -> bool:
    """Control, format (zero-width, bidi) or separator characters: never part of a real address."""
    return any(unicodedata.category(c)[0] in "CZ" for c in text)


def validate_new_user(username: str, email: str, password: str, *, check_password: bool = True) -> None:
    """``email`` already normalised (emails.normalize_email)."""
    if not USERNAME_RE.match(username):
        raise UserError("username", "username: 3-32 characters, letters, digits, '_', '.' or '-'")
    if len(email) > 254 or not EMAIL_RE.match(email) or _invisible(email):
        raise UserError("email", "email: a valid address such as name@example.com")
    problem = password_problem(password, username, email) if check_password else None
    if problem is not None:
        raise UserError("password", MESSAGES[problem], problem)


async def create_user(
    conn: asyncpg.Connection | asyncpg.Pool, username: str, email: str, password: str, *, check_password: bool = True
) -> User:
    """A new active user. The email is stored normalised with its skeleton: the unique indexes
    refuse a taken name, a taken address and a look-alike of one, even under concurrent sign-ups.
    ``check_password=False`` only for operator-generated passwords (``make run``'s demo user)."""
    email = normalize_email(email)
    validate_new_user(username, email, password, check_password=check_password)
    password_hash = await hash_password(password)
    try:
        row = await store.insert_user(conn, username, email, skeleton(email), password_hash)
    except asyncpg.UniqueViolationError as exc:
        raise unique_violation_error(exc.constraint_name) from None
    return User(**dict(row))


def unique_violation_error(constraint: str | None) -> UserError:
    """The user-facing error for a lost race on one of the unique indexes."""
    field, code, message = UNIQUE_VIOLATIONS.get(constraint or "", UNIQUE_VIOLATIONS["users_email_key"])
    return UserError(field, message, code)


async def backfill_email_skeletons(conn: asyncpg.Connection) -> tuple[int, list[str]]:
    """Give users created before migration 0005 their skeleton (idempotent). Returns (how many were
    set, the addresses left without one because they look like an earlier user's)."""
    done, clashes = 0, []
    for row in await store.users_without_skeleton(conn):
        try:
            async with conn.transaction():
                await store.set_email_skeleton(conn, row["id"], skeleton(row["email"]))
            done += 1
        except asyncpg.UniqueViolationError:
            clashes.append(row["email"])
    return done, clashes


async def get_user(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> User | None:
    row = await store.user_by_id(conn, user_id)
    return User(**dict(row)) if row else None


async def find_user(conn: asyncpg.Connection | asyncpg.Pool, username_or_email: str) -> User | None:
    row = await store.user_by_name_or_email(conn, username_or_email)
    return User(**dict(row)) if row else None
