"""``oauthctl keys add|list|retire|prune``: signing-key rotation (services/token/key_admin.py).

    oauthctl keys add [--alg RS256|ES256|HS256] [--activate-in SECONDS] [--keep-old]
    oauthctl keys list
    oauthctl keys retire --kid KID
    oauthctl keys prune

Running token-service instances pick changes up by themselves (they reload keys every 30 s and on
an unknown kid); nothing needs a restart.
"""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from libs.oauth.keys import ALGORITHMS
from libs.platform.config import Settings
from oauthctl.util import die, whole_number, with_conn


async def cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    from services.token import key_admin as ka

    alg = args.alg or settings.jwt_algorithm
    delay = settings.signing_key_activation_delay_seconds if args.activate_in is None else args.activate_in

    async def run(conn: asyncpg.Connection) -> int:
        try:
            added = await ka.add(conn, alg, delay, retire_old=not args.keep_old)
        except ka.KeyAdminError as exc:
            return die(str(exc))
        print(
            f"added {added.alg} key kid={added.kid}: published in the JWKS now, signs from {ka.fmt(added.activates_at)}"
        )
        for kid in added.retiring:
            until = added.activates_at + ka.verify_window(settings)
            print(
                f"  key {kid} stops signing then and keeps verifying until {ka.fmt(until)} (then 'oauthctl keys prune')"
            )
        if alg != settings.jwt_algorithm and not (alg == "RS256" and settings.jwt_algorithm == "HS256"):
            print(
                f"  note: JWT_ALGORITHM is {settings.jwt_algorithm}; this {alg} key signs only once it is set to {alg}"
            )
        return 0

    return await with_conn(settings, run)


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from services.token import key_admin as ka

    async def run(conn: asyncpg.Connection) -> int:
        keys = await ka.list_keys(conn, settings)
        if not keys:
            print("no signing keys yet (the token service creates the first one when it starts)")
            return 0
        print(f"{'kid':<18} {'alg':<6} {'state':<8} {'signs from':<21} {'retired at':<21} verifies until")
        for k in keys:
            until = ka.fmt(k.verifies_until) if k.retired_at is not None else "-"
            print(
                f"{k.kid:<18} {k.alg:<6} {k.state:<8} {ka.fmt(k.activates_at):<21} {ka.fmt(k.retired_at):<21} {until}"
            )
        return 0

    return await with_conn(settings, run)


async def cmd_retire(settings: Settings, args: argparse.Namespace) -> int:
    from services.token import key_admin as ka

    async def run(conn: asyncpg.Connection) -> int:
        try:
            until = await ka.retire(conn, settings, args.kid)
        except ka.KeyAdminError as exc:
            return die(str(exc))
        print(f"retired key {args.kid}: it no longer signs, and keeps verifying until {ka.fmt(until)}")
        return 0

    return await with_conn(settings, run)


async def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    from services.token import key_admin as ka

    async def run(conn: asyncpg.Connection) -> int:
        removed = await ka.prune(conn, settings)
        if not removed:
            print("nothing to prune: every retired key may still have valid tokens")
        for kid in removed:
            print(f"deleted key {kid} (retired longer ago than every token it signed can live)")
        return 0

    return await with_conn(settings, run)


_seconds = whole_number("seconds", 0, 30 * 24 * 3600, out_of_range="must be between 0 and 2592000 seconds (30 days)")


def add_parser(sub: Any) -> None:
    """Register ``keys`` and its actions on oauthctl's subparsers."""
    keys = sub.add_parser(
        "keys",
        help="rotate JWT signing keys",
        description="Manage the JWT signing keys (published at /api/oauth2/jwks). Rotation: 'keys add' publishes a "
        "new key, which signs after a delay while the old ones retire at that moment; retired keys keep verifying "
        "until every token they signed has expired; 'keys prune' then deletes them.",
    )
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    ka = ksub.add_parser(
        "add",
        help="add a signing key (rotation)",
        description="Add a signing key: published in the JWKS at once, signing after --activate-in seconds; the keys "
        "of the same algorithm that sign now stop signing at that moment (unless --keep-old) but keep verifying "
        "until their tokens have expired.",
    )
    ka.add_argument("--alg", choices=ALGORITHMS, default=None, help="key algorithm (default: JWT_ALGORITHM)")
    ka.add_argument(
        "--activate-in",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds before the key starts signing (default: SIGNING_KEY_ACTIVATION_DELAY_SECONDS, 600)",
    )
    ka.add_argument("--keep-old", action="store_true", help="do not retire the current keys of this algorithm")
    ka.set_defaults(fn=cmd_add)
    ksub.add_parser(
        "list",
        help="list the signing keys",
        description="List the signing keys with their state: pending (published, not signing yet), signing, active, "
        "retired (verifies only), expired (prunable).",
    ).set_defaults(fn=cmd_list)
    kr = ksub.add_parser(
        "retire",
        help="stop signing with a key",
        description="Stop signing with a key now. It stays published and keeps verifying until every token it "
        "signed has expired; nothing is deleted (see 'keys prune'). Refused for the last key that can sign.",
    )
    kr.add_argument("--kid", required=True, help="the key id (see 'oauthctl keys list')")
    kr.set_defaults(fn=cmd_retire)
    ksub.add_parser(
        "prune",
        help="delete keys whose tokens have all expired",
        description="Delete the keys retired longer ago than the longest token lifetime (ACCESS_TOKEN_TTL_SECONDS "
        "plus a reload margin).",
    ).set_defaults(fn=cmd_prune)
