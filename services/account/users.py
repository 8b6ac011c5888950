"""Users: creation with unique username and email, argon2 password hashes, status."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from libs.common.security import hash_password

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
STATUS_ACTIVE = 1
STATUS_DISABLED = 2


class UserError(ValueError):
    """A user-facing validation error (field, message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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


def validate_new_user(username: str, email: str, password: str) -> None:
    if not USERNAME_RE.match(username):
        raise UserError("username", "username: 3-32 characters, letters, digits, '_', '.' or '-'")
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise UserError("email", "email: a valid address such as name@example.com")
    if not 8 <= len(password) <= 128:
        raise UserError("password", "password: 8-128 characters")


async def create_user(conn: asyncpg.Connection | asyncpg.Pool, username: str, email: str, password: str) -> User:
    validate_new_user(username, email, password)
    password_hash = await hash_password(password)
    try:
        row = await conn.fetchrow(
            """INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3)
               RETURNING id, username, email, status, quota, used_quota, created_at""",
            username,
            email,
            password_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        field = "email" if "email" in (exc.constraint_name or "") else "username"
        raise UserError(field, f"{field} is already taken") from None
    assert row is not None
    return User(**dict(row))


async def get_user(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> User | None:
    row = await conn.fetchrow(
        "SELECT id, username, email, status, quota, used_quota, created_at FROM users WHERE id = $1", user_id
    )
    return User(**dict(row)) if row else None


async def find_user(conn: asyncpg.Connection | asyncpg.Pool, username_or_email: str) -> User | None:
    row = await conn.fetchrow(
        """SELECT id, username, email, status, quota, used_quota, created_at FROM users
           WHERE lower(username) = lower($1) OR lower(email) = lower($1) LIMIT 1""",
        username_or_email,
    )
    return User(**dict(row)) if row else None
