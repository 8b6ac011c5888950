"""`python -m bench.ab`: one lever measured A/B on one workload, interleaved (A B A B ...), so a
machine whose speed drifts (shared with other work) moves both sides alike; the median of each side
and the median of the pairwise ratios B/A are printed (docs/performance.md "How each lever was
measured").

The stack runs with 1 process per service; before each run the token service is restarted with
the side's settings on top (e.g. ``--a SIGNING_THREADS=0 --b SIGNING_THREADS=-1``). Workloads:
``client_credentials`` and ``refresh_token`` (rotation), through the gateway or, with ``--direct``,
straight to the token service.

    .venv/bin/python -m bench.ab --workload client_credentials --direct --a SIGNING_THREADS=0 --b SIGNING_THREADS=-1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys

from libs.platform.config import load_settings

from . import flows
from .__main__ import DB_NAME, RESULTS, clear_redis, form_body, run_main, seed, stack_env
from .stack import OurStack, free_port, fresh_database
from .tools import ensure_wrk, say
from .wrk import Result, Wrk


def parse_env(pairs: list[str]) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs)


async def one_run(args: argparse.Namespace, stack: OurStack, wrk: Wrk, cfg: flows.BenchConfig, side: str) -> Result:
    base = stack.url_of("token") if args.direct else stack.base
    url = f"{base}/api/oauth2/token"
    if args.workload == "client_credentials":
        return await wrk.run(url, "post.lua", {"BENCH_BODY": form_body(flows.client_credentials_form(cfg.internal))})
    async with flows.new_session(8) as http:
        await flows.login(http, cfg)
        pairs = await asyncio.gather(*(flows.code_flow(http, cfg) for _ in range(wrk.connections + 8)))
    tokens = RESULTS / "logs" / f"ab-refresh-{side}.txt"
    tokens.write_text("\n".join(p["refresh_token"] for p in pairs) + "\n")
    form = {"grant_type": "refresh_token", "client_id": cfg.web.client_id, "client_secret": cfg.web.client_secret}
    env = {"BENCH_BODY": form_body(form), "BENCH_TOKENS_FILE": str(tokens)}
    return await wrk.run(url, "refresh.lua", env, warmup=False)


async def main_async(args: argparse.Namespace) -> int:
    settings = load_settings()
    pepper = settings.token_pepper if len(settings.token_pepper) >= 32 else secrets.token_urlsafe(48)
    db_url = await fresh_database(settings.database_url, DB_NAME)
    await clear_redis(settings.redis_url)
    ports = {s: free_port() for s in ("gateway", "gateway_admin", "authz", "token", "account")}
    base = f"http://127.0.0.1:{ports['gateway']}"
    env = stack_env(db_url, pepper, base)
    say(f"seeding ({args.families:,} grants of the app) ...")
    cfg = await seed(
        db_url, load_settings(database_url=db_url, token_pepper=pepper, public_base_url=base), base, args.families
    )
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    wrk = Wrk(ensure_wrk(), threads=2, connections=args.connections, duration=args.duration)
    sides = {"A": parse_env(args.a), "B": parse_env(args.b)}
    results: dict[str, list[Result]] = {"A": [], "B": []}
    stack = OurStack(env, ports, 1, logs)
    try:
        await stack.start()
        for n in range(args.rounds):
            for side, extra in sides.items():
                await stack.restart("token", extra)
                r = await one_run(args, stack, wrk, cfg, side)
                results[side].append(r)
                load = os.getloadavg()[0]
                say(
                    f"round {n + 1} {side} {extra}: {r.rps:,.0f}/s p50 {r.p50_ms:.1f} p99 {r.p99_ms:.1f} ms (load {load:.1f})"
                )
    finally:
        await stack.stop()
        with contextlib.suppress(Exception):
            await clear_redis(settings.redis_url)
    a, b = results["A"], results["B"]
    ratios = [y.rps / x.rps for x, y in zip(a, b, strict=True) if x.rps]
    where = "direct to the token service" if args.direct else "through the gateway"
    print(f"\n{args.workload}, {where}, {args.rounds} rounds of {args.duration:.0f} s, {args.connections} connections")
    for side, rs in results.items():
        print(
            f"  {side} {' '.join(args.a if side == 'A' else args.b) or '(defaults)'}: median "
            f"{statistics.median(r.rps for r in rs):,.0f}/s, p50 {statistics.median(r.p50_ms for r in rs):.1f} ms, "
            f"p99 {statistics.median(r.p99_ms for r in rs):.1f} ms; runs {', '.join(f'{r.rps:,.0f}' for r in rs)}"
        )
    if ratios:
        print(f"  B/A: median {statistics.median(ratios):.2f}x, pairs {', '.join(f'{x:.2f}' for x in ratios)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("--workload", choices=("client_credentials", "refresh_token"), default="client_credentials")
    p.add_argument("--a", nargs="*", default=[], metavar="NAME=VALUE", help="settings of side A (token service)")
    p.add_argument("--b", nargs="*", default=[], metavar="NAME=VALUE", help="settings of side B (token service)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--families", type=int, default=0, help="existing grants of the app to seed (default 0)")
    p.add_argument("--direct", action="store_true", help="straight to the token service, no gateway hop")
    return run_main("bench.ab", main_async(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
