"""oauthctl: the operator's command line. Every command has --help.

oauthctl migrate                         apply pending migrations
oauthctl user create --username U --email E [--password-stdin]
oauthctl user disable --username U
oauthctl devtoken create --username U [--name N]
oauthctl devtoken revoke --id N
oauthctl topup create --amount N [--count K] [--expires-days D]
oauthctl app set-internal --client-id X [--off]  allow (or stop) client_credentials for an app
oauthctl app verify|unverify --client-id X     let auto_authorize=true skip consent (or stop it)
oauthctl keys add [--alg A] [--activate-in S]  rotate the JWT signing key (publish now, sign later)
oauthctl keys list | retire --kid K | prune   signing keys: see, stop signing, delete expired
oauthctl purge [--dry-run] [--batch-size N]   delete dead tokens, codes and events in small batches
oauthctl demo                            create the demo data once and print it
oauthctl run                             migrate, demo data, start every service (make run)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from libs.oauth.events.bus import EventWaiter
from libs.oauth.events.types import ClientUpdated
from libs.platform.config import Settings, load_settings
from libs.platform.migrate import MigrationError
from oauthctl.util import die, migrate, with_conn

from . import keys, purge


# --- commands ------------------------------------------------------------------------------------
async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    await migrate(settings)
    return 0


async def cmd_user_create(settings: Settings, args: argparse.Namespace) -> int:
    from services.account.users import UserError, create_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password for the new user: ")

    async def run(conn: asyncpg.Connection) -> int:
        try:
            user = await create_user(conn, args.username, args.email, password)
        except UserError as exc:
            return die(f"{exc.message}\n{user_error_zh(exc)}")
        print(f"created user id={user.id} username={user.username} email={user.email}")
        return 0

    return await with_conn(settings, run)


def user_error_zh(exc: Exception) -> str:
    """The Chinese text of a users.UserError, as the register page shows it."""
    from libs.oauth.pages import translator
    from services.account import strings

    strings.register()  # idempotent: the account service's texts
    field, code = getattr(exc, "field", ""), getattr(exc, "code", "")
    text = translator("zh")(f"acct.user_error.{field}.{code}")
    return "" if text.startswith("acct.") else text


async def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> int:
    from services.account.user_status import disable_user_everywhere
    from services.account.users import find_user

    async def run(conn: asyncpg.Connection) -> int:
        user = await find_user(conn, args.username)
        if user is None:
            return die(
                f"no user named {args.username!r}; list users with psql or create one with 'oauthctl user create'"
            )
        # Also revokes the user's grants and tokens, and tells every instance (user.disabled event).
        families = await disable_user_everywhere(conn, settings, user.id) or []
        print(f"disabled user id={user.id} username={user.username}; revoked {len(families)} token famil(ies)")
        return 0

    return await with_conn(settings, run)


async def cmd_devtoken_create(settings: Settings, args: argparse.Namespace) -> int:
    from services.account.developer_tokens import create_developer_token
    from services.account.users import find_user

    async def run(conn: asyncpg.Connection) -> int:
        user = await find_user(conn, args.username)
        if user is None:
            return die(f"no user named {args.username!r}; create one first with 'oauthctl user create'")
        token, record = await create_developer_token(conn, settings.pepper_bytes, user.id, args.name)
        print(f"developer token id={record.id} for {user.username} (shown once, store it now):")
        print(token)
        return 0

    return await with_conn(settings, run)


async def cmd_devtoken_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from services.account.developer_tokens import revoke_developer_token

    async def run(conn: asyncpg.Connection) -> int:
        if not await revoke_developer_token(conn, args.id):
            return die(f"no active developer token with id {args.id}")
        print(f"revoked developer token id={args.id}")
        return 0

    return await with_conn(settings, run)


async def cmd_topup_create(settings: Settings, args: argparse.Namespace) -> int:
    from services.account.balance import format_balance
    from services.account.topup import create_codes

    async def run(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            codes = await create_codes(conn, settings.pepper_bytes, args.amount, args.count, args.expires_days)
        expiry = f", valid for {args.expires_days} days" if args.expires_days else ", no expiry"
        worth = format_balance(args.amount, 0, settings.quota_per_unit)
        # The summary goes to stderr, so stdout is exactly the codes, one a line (easy to pipe).
        print(
            f"created {len(codes)} top-up code(s) of {args.amount} quota (= {worth}) each{expiry}; "
            "shown once, store them now:",
            file=sys.stderr,
        )
        for code in codes:
            print(code)
        return 0

    return await with_conn(settings, run)


async def cmd_app_set_internal(settings: Settings, args: argparse.Namespace) -> int:
    """Flag an app as internal (it may use grant_type=client_credentials), or clear the flag."""
    from services.account import store
    from services.account.apps import set_internal

    internal = not args.off

    async def run(conn: asyncpg.Connection) -> int:
        row = await store.app_by_client_id(conn, args.client_id)
        if row is None:
            return die(f"no app with client_id {args.client_id!r}")
        if internal and row["token_endpoint_auth_method"] == "none":
            return die("a public client (no secret) cannot use client_credentials; create a confidential app")
        # With a client.updated event, so the services' client caches drop the app before we return.
        async with EventWaiter(settings, [ClientUpdated.type]):
            await set_internal(conn, row["id"], args.client_id, internal)
        state = "internal: may use client_credentials" if internal else "not internal: client_credentials refused"
        print(f"app id={row['id']} client_id={args.client_id} ({row['name']}) is now {state}")
        return 0

    return await with_conn(settings, run)


async def cmd_app_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Verify an app (auto_authorize=true may then skip consent), or unverify it."""
    from services.account.apps import set_verified

    verified = args.action == "verify"

    async def run(conn: asyncpg.Connection) -> int:
        # Waits for the client.updated event, so the services' client caches drop the app first.
        async with EventWaiter(settings, [ClientUpdated.type]):
            row = await set_verified(conn, args.client_id, verified)
            if row is None:
                return die(f"no app with client_id {args.client_id!r}")
        state = "verified: one-click login may skip consent" if verified else "unverified: users consent once"
        print(f"app id={row['id']} client_id={args.client_id} ({row['name']}) is now {state}")
        return 0

    return await with_conn(settings, run)


async def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from .demo import ensure_demo

    await migrate(settings, log=lambda m: None)
    info = await ensure_demo(settings)
    from .demo import print_demo

    print_demo(settings, info)
    return 0


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from .run import run_stack

    return await run_stack(settings, with_example=not args.no_example)


# --- parser --------------------------------------------------------------------------------------
def _positive_int(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not 0 < value <= maximum:
            raise argparse.ArgumentTypeError(f"must be an integer between 1 and {maximum}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="oauthctl",
        description="Operate the OAuth platform. Settings come from the environment (DATABASE_URL, TOKEN_PEPPER, ...).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "migrate", help="apply pending migrations", description="Apply pending SQL migrations to DATABASE_URL."
    ).set_defaults(fn=cmd_migrate)

    user = sub.add_parser("user", help="manage users", description="Manage platform users.")
    usub = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    uc = usub.add_parser(
        "create", help="create a user", description="Create a user (password prompted, or read from stdin)."
    )
    uc.add_argument("--username", required=True)
    uc.add_argument("--email", required=True)
    uc.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    uc.set_defaults(fn=cmd_user_create)
    ud = usub.add_parser("disable", help="disable a user", description="Disable a user (by username or email).")
    ud.add_argument("--username", required=True)
    ud.set_defaults(fn=cmd_user_disable)

    dt = sub.add_parser("devtoken", help="manage developer tokens", description="Manage developer-API tokens.")
    dsub = dt.add_subparsers(dest="action", required=True, metavar="ACTION")
    dc = dsub.add_parser(
        "create", help="create a developer token", description="Create a developer token; it is printed once."
    )
    dc.add_argument("--username", required=True, help="the developer's username or email")
    dc.add_argument("--name", default="cli", help="a label for the token")
    dc.set_defaults(fn=cmd_devtoken_create)
    dr = dsub.add_parser("revoke", help="revoke a developer token", description="Revoke a developer token by id.")
    dr.add_argument("--id", type=int, required=True)
    dr.set_defaults(fn=cmd_devtoken_revoke)

    tp = sub.add_parser("topup", help="manage top-up codes", description="Manage one-time top-up codes.")
    tsub = tp.add_subparsers(dest="action", required=True, metavar="ACTION")
    tc = tsub.add_parser(
        "create",
        help="create top-up codes",
        description="Create one-time top-up codes; each credits AMOUNT quota units once. They are printed once "
        "(stdout, one a line) and stored only hashed.",
    )
    tc.add_argument("--amount", type=_positive_int(10**15), required=True, help="quota units per code (integer > 0)")
    tc.add_argument("--count", type=_positive_int(1000), default=1, help="how many codes (default 1, at most 1000)")
    tc.add_argument(
        "--expires-days", type=_positive_int(3650), default=None, help="days until the codes expire (default: never)"
    )
    tc.set_defaults(fn=cmd_topup_create)

    ap = sub.add_parser("app", help="manage OAuth apps", description="Operator settings of OAuth apps.")
    asub = ap.add_subparsers(dest="action", required=True, metavar="ACTION")
    ai = asub.add_parser(
        "set-internal",
        help="let an app use client_credentials",
        description="Flag an app as internal: it may then get machine tokens (grant_type=client_credentials, "
        "scopes quota:read quota:write). --off clears the flag.",
    )
    ai.add_argument("--client-id", required=True)
    ai.add_argument("--off", action="store_true", help="clear the flag instead")
    ai.set_defaults(fn=cmd_app_set_internal)
    for action, text in (
        ("verify", "Mark an app as verified by the platform: auto_authorize=true then skips the consent page."),
        ("unverify", "Clear the verification: auto_authorize=true no longer skips consent without a grant."),
    ):
        av = asub.add_parser(action, help=text.split(":")[0].lower(), description=text)
        av.add_argument("--client-id", required=True)
        av.set_defaults(fn=cmd_app_verify)

    keys.add_parser(sub)
    purge.add_parser(sub)

    sub.add_parser(
        "demo",
        help="create the demo data once and print it",
        description="Migrate, then create a demo user, developer token and app if missing, and print them.",
    ).set_defaults(fn=cmd_demo)

    run = sub.add_parser(
        "run",
        help="run the whole stack locally",
        description="Migrate, create demo data, start the four services (and the example app); Ctrl-C stops all.",
    )
    run.add_argument("--no-example", action="store_true", help="do not start the example third-party app")
    run.set_defaults(fn=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    fn: Callable[[Settings, Any], Coroutine[Any, Any, int]] = args.fn
    try:
        return asyncio.run(fn(settings, args))
    except KeyboardInterrupt:
        return 130
    except (OSError, asyncpg.PostgresError) as exc:
        return die(
            f"{exc}\nIs PostgreSQL up, and is DATABASE_URL ({settings.database_url.split('@')[-1]}) right? Then run 'oauthctl migrate'."
        )
    except MigrationError as exc:
        return die(str(exc))
    except RuntimeError as exc:
        return die(str(exc))


if __name__ == "__main__":
    sys.exit(main())
