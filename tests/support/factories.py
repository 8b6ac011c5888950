"""Test data made through the real code paths (users, developer tokens)."""

from __future__ import annotations

import secrets

import asyncpg

from libs.platform.config import Settings
from services.account.developer_tokens import create_developer_token
from services.account.users import User, create_user


async def make_user(db: asyncpg.Pool, password: str = "correct horse battery", **kw: object) -> User:
    name = str(kw.get("username") or f"u_{secrets.token_hex(5)}")
    email = str(kw.get("email") or f"{name}@example.com")
    return await create_user(db, name, email, password)


async def make_developer(db: asyncpg.Pool, settings: Settings) -> tuple[User, str]:
    user = await make_user(db)
    token, _ = await create_developer_token(db, settings.pepper_bytes, user.id, "test")
    return user, token
