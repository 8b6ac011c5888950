"""Demo data for `make run`: a demo user, a fresh developer token, a demo app with a fresh secret.

Nothing is stored in clear: each run sets the demo user's password to DEMO_PASSWORD, revokes the
previous demo developer token and issues a new one, and rotates the demo app's secret, printing
the new values (the example third-party app is started with them). The demo app is the one the
example third-party app uses; it is verified (docs/operations.md "App verification"), so the guide's
one-click login skips the consent page as the guide shows."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from libs.common import outbox
from libs.common.config import Settings
from libs.common.security import hash_password, new_token, token_hash
from services.account.apps import new_client_id
from services.account.developer_tokens import create_developer_token
from services.account.users import create_user, find_user

DEMO_USER = "demo"
DEMO_EMAIL = "demo@example.com"
DEMO_APP = "Demo third-party app"
DEMO_TOKEN_LABEL = "demo (make run)"


@dataclass
class DemoInfo:
    username: str
    password: str
    developer_token: str
    app_id: int
    client_id: str
    client_secret: str
    redirect_uris: list[str]


def example_redirect_uris(settings: Settings) -> list[str]:
    base = f"http://localhost:{settings.example_port}"
    return [f"{base}/oauth/callback", f"{base}/oauth/callback.html"]


async def ensure_demo(settings: Settings) -> DemoInfo:
    password = settings.demo_password
    if len(password) < 8:
        raise RuntimeError("DEMO_PASSWORD must be at least 8 characters; `make run` puts one in .env")
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            user = await find_user(conn, DEMO_USER)
            if user is None:
                user = await create_user(conn, DEMO_USER, DEMO_EMAIL, password)
                await conn.execute("UPDATE users SET quota = 1000000, used_quota = 250000 WHERE id = $1", user.id)
            else:
                await conn.execute(
                    "UPDATE users SET password_hash = $2, status = 1 WHERE id = $1",
                    user.id,
                    await hash_password(password),
                )
                # Running services drop what they cached (docs/events.md).
                await outbox.enqueue(conn, "user.updated", {"user_id": user.id, "fields": ["password", "status"]})
            await conn.execute(
                "UPDATE developer_tokens SET revoked_at = now() WHERE user_id = $1 AND name = $2 AND revoked_at IS NULL",
                user.id,
                DEMO_TOKEN_LABEL,
            )
            dev_token, _ = await create_developer_token(conn, settings.pepper_bytes, user.id, DEMO_TOKEN_LABEL)
            secret = new_token("secret")
            uris = example_redirect_uris(settings)
            row = await conn.fetchrow(
                "SELECT id, client_id FROM oauth_apps WHERE owner_id = $1 AND name = $2", user.id, DEMO_APP
            )
            if row is None:
                row = await conn.fetchrow(
                    """INSERT INTO oauth_apps (owner_id, name, description, client_id, client_secret_hash, redirect_uris,
                                             verified)
                       VALUES ($1, $2, 'The guide''s example app (examples/third_party_app)', $3, $4, $5, true)
                       RETURNING id, client_id""",
                    user.id,
                    DEMO_APP,
                    new_client_id(),
                    token_hash(settings.pepper_bytes, secret),
                    uris,
                )
            else:
                await conn.execute(
                    """UPDATE oauth_apps SET client_secret_hash = $2, redirect_uris = $3, verified = true, updated_at = now()
                       WHERE id = $1""",
                    row["id"],
                    token_hash(settings.pepper_bytes, secret),
                    uris,
                )
                await outbox.enqueue(
                    conn, "client.secret_rotated", {"app_id": row["id"], "client_id": row["client_id"]}
                )
            assert row is not None
        return DemoInfo(DEMO_USER, password, dev_token, row["id"], row["client_id"], secret, uris)
    finally:
        await conn.close()


def print_demo(settings: Settings, info: DemoInfo) -> None:
    base = settings.public_base_url
    print(
        f"""
==================================================================================
 OAuth platform is up:  {base}
   user center          {base}/user
   developer console    {base}/developer
   example app          http://localhost:{settings.example_port}/

 demo user              {info.username} / {info.password}
 developer token        {info.developer_token}
 demo app               id={info.app_id}
   client_id            {info.client_id}
   client_secret        {info.client_secret}
   redirect_uris        {" ".join(info.redirect_uris)}

 Try the guide's call:
   curl -X POST {base}/api/oauth_apps \\
     -H "Content-Type: application/json" \\
     -H "Authorization: Bearer {info.developer_token}" \\
     -d '{{"name": "我的第三方应用", "description": "应用描述信息", "redirect_uri": "https://yourapp.com/oauth/callback"}}'
==================================================================================
""",
        flush=True,
    )
