"""`make bench`: our stack and the node oidc-provider peer, side by side, on this machine.

1. Installs what is missing (wrk from Debian, the peer from npm), with a progress message.
2. Creates the ``oauth_bench`` database afresh and migrates it; the services get their own
   REDIS_PREFIX and EVENTS_EXCHANGE, so nothing else on the machine is touched.
3. For 1 and then 2 processes per service: starts our four services as real processes with
   production settings (access log on, INFO logs, uvloop), seeds users, apps and tokens, and drives
   each workload through the gateway from separate processes (wrk, bench/driver.py) over keep-alive
   connections at a fixed concurrency; then does the same for the peer with 1 and 2 workers.
4. Prints one table (requests/s, p50 and p99 latency: ours, the peer's, the ratio) and the goals;
   writes everything to bench/results/ (git-ignored).

Options: --duration S (per workload, default 6), --connections N (default 32), --procs 1,2,
--no-peer, --profile (py-spy on the busy services; figures are then not comparable), --only NAMES.
Environment: DATABASE_URL, REDIS_URL, AMQP_URL as for `make run` (.env is loaded by make); BENCH_ID=x
runs beside another bench (database oauth_bench_x, its own Redis keys and exchange).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from libs.platform.config import Settings, load_settings

from . import flows
from .report import Row, summarize_profile, svg_report, table
from .stack import OurStack, Peer, free_port, fresh_database
from .tools import BENCH, ensure_peer, ensure_wrk, peer_pin, say, version_of
from .wrk import Result, Wrk

# BENCH_ID keeps runs started side by side apart (their own database, Redis keys and exchange).
_RUN_ID = os.environ.get("BENCH_ID", "")
DB_NAME = "oauth_bench" + (f"_{_RUN_ID}" if _RUN_ID else "")
REDIS_PREFIX = "oauth-bench:" + (f"{_RUN_ID}:" if _RUN_ID else "")
EVENTS_EXCHANGE = "oauth-bench" + (f"-{_RUN_ID}" if _RUN_ID else "") + ".events"
REDIRECT_URI = "http://127.0.0.1:9/callback"
PASSWORD = "bench-password-" + "x" * 8
RESULTS = BENCH / "results"
WORKLOADS = ("client_credentials", "authorization_code", "refresh_token", "userinfo", "introspection", "revocation")
GOAL_USERINFO_P99_MS = 10.0
CC = "client_credentials token (RS256"
AUTHCODE = "authorization_code"
REFRESH = "refresh_token"
INTROSPECTION = "introspection"
GOAL_REVOCATION_P99_MS = 100.0


@dataclass
class Run:
    args: argparse.Namespace
    wrk: Wrk
    cfg: flows.BenchConfig
    env: dict[str, str]
    logs: Path
    rows: list[Row] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    stack: OurStack | None = None  # the stack being measured
    profiles: list[Path] = field(default_factory=list)

    def want(self, name: str) -> bool:
        return not self.args.only or name in self.args.only


# --- seeding -------------------------------------------------------------------------------------
async def seed(database_url: str, settings: Settings, base: str, families: int = 0) -> flows.BenchConfig:
    """Users (one to log in, many others so tables are not toy-sized), a third-party app
    (one-click authorize) and an internal service app, made through the account service's code;
    ``families`` existing grants of the third-party app (one live refresh token each, spread over
    the other users), so the token tables have an app's worth of rows as in production. Then
    ANALYZE, as a deployment has statistics (autovacuum)."""
    from libs.platform.security import hash_password
    from services.account import store
    from services.account.apps import NewApp, create_app, set_internal
    from services.account.users import create_user
    from services.authz.store import consent_records
    from services.token import store as token_store

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        owner = await create_user(pool, "bench_owner", "bench_owner@example.com", PASSWORD)
        user = await create_user(pool, "bench_user", "bench_user@example.com", PASSWORD)
        await store.set_balance(pool, user.id, 1000000, 250000)
        filler = await store.insert_numbered_users(
            pool, "bench_", 10000, await hash_password(secrets.token_urlsafe(16))
        )
        pepper = settings.pepper_bytes
        web = await create_app(
            pool, pepper, owner.id, NewApp("Bench web app", "", [REDIRECT_URI], "client_secret_post"), 100
        )
        internal = await create_app(
            pool, pepper, owner.id, NewApp("Bench internal service", "", [REDIRECT_URI], "client_secret_post"), 100
        )
        # What `oauthctl app set-internal --client-id X` does; auto_authorize for one-click login.
        async with pool.acquire() as conn:
            await set_internal(conn, internal["id"], internal["client_id"], True)
        await store.set_app_auto_authorize(pool, web["client_id"], True)
        # The user already granted the app these scopes (the app is not verified, so one-click does
        # not apply): authorize reads the consent record and answers with a code, no page. The
        # peer's flow is the same: a logged-in session with an existing grant.
        async with pool.acquire() as conn, conn.transaction():
            await consent_records.upsert(conn, user.id, web["client_id"], flows.BenchConfig.scope.split())
            if families:
                await token_store.seed_families(
                    conn,
                    web["client_id"],
                    filler,
                    families,
                    "openid profile",
                    float(settings.refresh_token_ttl_seconds),
                )
        await analyze(pool)
    finally:
        await pool.close()
    return flows.BenchConfig(
        base=base,
        username="bench_user",
        password=PASSWORD,
        web=flows.App(web["client_id"], web["client_secret"], REDIRECT_URI),
        internal=flows.App(internal["client_id"], internal["client_secret"], REDIRECT_URI),
    )


async def analyze(db: asyncpg.Pool | str) -> None:
    """Statistics for the planner, as autovacuum keeps them in a deployment (the hot statements'
    plans do not depend on them; see tests/integration/test_hot_plans.py)."""
    sql = "ANALYZE users, oauth_apps, grants, authorization_codes, token_families, refresh_tokens"
    if isinstance(db, str):
        conn = await asyncpg.connect(db)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
    else:
        await db.execute(sql)


async def clear_redis(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        batch = [k async for k in r.scan_iter(match=REDIS_PREFIX + "*", count=1000)]
        for i in range(0, len(batch), 1000):
            await r.delete(*batch[i : i + 1000])
    finally:
        await r.aclose()


# --- one workload each ---------------------------------------------------------------------------
def na_row(name: str, procs: int, why: str) -> Row:
    return Row(name, procs, None, ours_na=why)


async def preflight_post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with flows.new_session(4) as http:
        return await flows.post_form(http, url, form)


def form_body(form: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(form)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def db_counters(run: Run) -> dict[str, int]:
    """PostgreSQL's counters for the bench database (pg_stat_database) and the outbox's size."""
    conn = await asyncpg.connect(run.env["DATABASE_URL"])
    try:
        row = await conn.fetchrow(
            """SELECT xact_commit, tup_inserted, tup_updated, tup_deleted,
                      (SELECT count(*) FROM event_outbox) AS events
               FROM pg_stat_database WHERE datname = current_database()"""
        )
    finally:
        await conn.close()
    return {k: int(v) for k, v in dict(row).items()}


async def measured_cost(run: Run, label: str, coro: Any, warmup: bool = True) -> Any:
    """Run ``coro`` (a workload of ours) and record what each request cost: CPU milliseconds per
    service (all its processes, from /proc: independent of how busy the machine is, unlike
    throughput), PostgreSQL commits and row writes, and outbox events (run.extra["cost"]). The
    counts include the 1 s warm-up (``warmup``), so they are then divided by the requests scaled
    by (warm-up + duration) / duration."""
    stack = run.stack
    if stack is None:
        return await coro
    pids = {p.name: p.pid for p in stack.procs}
    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    db_before = await db_counters(run)
    result = await coro
    await asyncio.sleep(0.6)  # PostgreSQL publishes its counters at most every 0.5 s (idle backends ~1 s)
    db_after = await db_counters(run)
    requests = result.requests if isinstance(result, Result) else int(result.get("requests", 0))
    if requests:
        n = requests * ((run.wrk.warmup + run.wrk.duration) / run.wrk.duration if warmup else 1.0)
        cpu: dict[str, float] = {}
        for name, pid in pids.items():
            service = name.split("-")[0]
            cpu[service] = cpu.get(service, 0.0) + (cpu_seconds(pid) - before[name]) * 1000 / n
        cost = {f"{k} cpu ms": round(v, 3) for k, v in cpu.items()}
        cost |= {f"pg {k}": round((db_after[k] - db_before[k]) / n, 2) for k in db_after}
        run.extra.setdefault("cost", {}).setdefault(label, {})[stack.per_service] = cost
    return result


async def profiled(run: Run, label: str, pids: dict[str, list[int]], coro: Any, warmup: bool = True) -> Any:
    """Run ``coro`` (a workload) while py-spy samples ``pids`` (when --profile); its cost is measured."""
    coro = measured_cost(run, label, coro, warmup)
    if not run.args.profile:
        return await coro
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    procs = []
    out_dir = RESULTS / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = int(run.wrk.duration + run.wrk.warmup)
    for service, ids in pids.items():
        for pid in ids[:1]:
            path = out_dir / f"{label}-{service}.txt"
            cmd = [
                spy,
                "record",
                "-p",
                str(pid),
                "-d",
                str(seconds),
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(path),
                "--nonblocking",
            ]
            procs.append(
                (
                    path,
                    await asyncio.create_subprocess_exec(
                        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                    ),
                )
            )
    try:
        return await coro
    finally:
        for path, p in procs:
            await p.wait()
            if path.exists():
                run.profiles.append(path)


def authcode_args(run: Run, config: Path) -> list[str]:
    """The driver's arguments for the authorization_code workload with ``config``."""
    wrk = run.wrk
    return [
        "authcode",
        "--config",
        str(config),
        "--concurrency",
        str(wrk.connections),
        "--duration",
        str(wrk.duration),
        "--warmup",
        str(wrk.warmup),
    ]


async def run_driver(args: list[str], limit_seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.driver", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"na": "the driver timed out"}
    try:
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"na": f"the driver failed: {err.decode(errors='replace')[-500:]}"}


def result_of(d: dict[str, Any], note: str = "") -> Result:
    keys = ("rps", "p50_ms", "p99_ms", "requests", "errors", "seconds", "p90_ms", "max_ms")
    extra = {k: v for k, v in d.items() if k not in keys}
    r = Result(**{k: d.get(k, 0) for k in keys}, note=note, extra=extra)
    if d.get("first_error"):
        r.note = (r.note + "; " if r.note else "") + f"first error: {d['first_error']}"
    return r


async def ours(run: Run, stack: OurStack, procs: int, peer: PeerBench | None) -> None:
    cfg, wrk, base = run.cfg, run.wrk, stack.base
    token_url = f"{base}/api/oauth2/token"

    # client_credentials: one POST, no database write (a client lookup and a signature)
    if run.want("client_credentials"):
        form = flows.client_credentials_form(cfg.internal)
        status, body = await preflight_post(token_url, form)
        name = "client_credentials token (RS256 JWT)"
        env = {"BENCH_BODY": form_body(form)}
        if status != 200:
            row = na_row(name, procs, f"{status} {body}")
        else:
            r = await profiled(
                run,
                "client_credentials",
                {"token": stack.pids("token"), "gateway": stack.pids("gateway")},
                wrk.run(token_url, "post.lua", env),
            )
            row = Row(name, procs, r)
        run.rows.append(row)
        sample_rss(run, stack, peer, procs)
        if peer is not None:
            await peer.on_both(row, "client_credentials")
        if status == 200:
            if procs == 1 and not run.args.only:
                direct = await wrk.run(f"{stack.url_of('token')}/api/oauth2/token", "post.lua", env, warmup=False)
                direct.note = "direct to the token service, no gateway hop (what the hop costs)"
                run.rows.append(Row("  same, without the gateway", procs, direct))

    # authorization_code: authorize (logged-in browser, one-click) + code exchange, per flow
    async with flows.new_session(8) as http:
        await flows.login(http, cfg)
        if run.want("authorization_code"):
            cfg_path = run.logs / "driver-config.json"
            cfg_path.write_bytes(cfg.to_json())
            args = authcode_args(run, cfg_path)
            d = await profiled(
                run,
                "authorization_code",
                {"authz": stack.pids("authz"), "token": stack.pids("token")},
                run_driver(args, wrk.duration + 60),
            )
            name = "authorization_code (authorize + token), flows"
            if "na" in d:
                run.rows.append(na_row(name, procs, str(d["na"])))
            else:
                r = result_of(d)
                r.note = (r.note + "; " if r.note else "") + (
                    f"p50 authorize {d.get('authorize_p50_ms', 0):.1f} ms + token {d.get('token_p50_ms', 0):.1f} ms; driver is Python (aiohttp)"
                )
                run.rows.append(Row(name, procs, r))
            sample_rss(run, stack, peer, procs)
            if peer is not None:
                await peer.on_both(run.rows[-1], "authorization_code")
            await analyze(run.env["DATABASE_URL"])  # thousands of new families and codes

        # refresh_token: every request rotates (consumes one, stores one); wrk keeps the chains
        if run.want("refresh_token"):
            n = wrk.connections + 8
            pairs = await asyncio.gather(*(flows.code_flow(http, cfg) for _ in range(n)))
            tokens_file = run.logs / f"refresh-tokens-{procs}.txt"
            tokens_file.write_text("\n".join(p["refresh_token"] for p in pairs) + "\n")
            form = {
                "grant_type": "refresh_token",
                "client_id": cfg.web.client_id,
                "client_secret": cfg.web.client_secret,
            }
            env = {"BENCH_BODY": form_body(form), "BENCH_TOKENS_FILE": str(tokens_file)}
            r = await profiled(
                run,
                "refresh_token",
                {"token": stack.pids("token")},
                wrk.run(token_url, "refresh.lua", env, warmup=False),
                warmup=False,
            )
            run.rows.append(Row("refresh_token (rotation)", procs, r))
            sample_rss(run, stack, peer, procs)
            if peer is not None:
                await peer.on_both(run.rows[-1], "refresh_token")

        pair = await flows.code_flow(http, cfg)
        access = pair["access_token"]

    # userinfo: GET with the bearer token; at full load, then at half the peak rate
    userinfo_url = f"{base}/api/oauth2/userinfo"
    if run.want("userinfo"):
        env = {"BENCH_TOKEN": access}
        peak = await profiled(
            run,
            "userinfo",
            {"account": stack.pids("account"), "gateway": stack.pids("gateway")},
            wrk.run(userinfo_url, "bearer.lua", env),
        )
        run.rows.append(Row("userinfo", procs, peak))
        sample_rss(run, stack, peer, procs)
        if peak.rps > 0:
            conns = max(4, wrk.connections // 2)
            target = peak.rps / 2
            delay = max(1.0, conns * 1000 / target - 2.0)  # minus ~2 ms: the latency when not loaded
            half = await wrk.run(
                userinfo_url, "bearer.lua", env | {"BENCH_DELAY_MS": f"{delay:.2f}"}, connections=conns, warmup=False
            )
            half.note = f"target {target:,.0f}/s = half the peak ({conns} connections, ~{delay:.1f} ms think time)"
            run.rows.append(Row("userinfo at half its peak rate", procs, half))
            run.extra.setdefault("userinfo_half", {})[procs] = half.as_dict()

    # introspection (RFC 7662): the internal app (a resource server) checks a user's access token
    if run.want("introspection"):
        url = f"{base}/api/oauth2/introspect"
        form = {"token": access, "client_id": cfg.internal.client_id, "client_secret": cfg.internal.client_secret}
        status, body = await preflight_post(url, form)
        name = "introspection (user access token)"
        if status != 200 or body.get("active") is not True:
            row = na_row(name, procs, f"POST /api/oauth2/introspect answered {status} {str(body)[:200]}")
        else:
            r = await profiled(
                run,
                "introspection",
                {"token": stack.pids("token")},
                wrk.run(url, "post.lua", {"BENCH_BODY": form_body(form)}),
            )
            row = Row(name, procs, r)
        run.rows.append(row)
        sample_rss(run, stack, peer, procs)
        if peer is not None:
            await peer.on_both(row, "introspection")

    # revocation propagation: revoke returns -> every account instance rejects the token
    if run.want("revocation"):
        name = "revocation propagation (ms, not req/s)"
        if stack.extra_account_url is None:
            run.rows.append(na_row(name, procs, "measured with 1 process per service (2 account instances)"))
        else:
            cfg_path = run.logs / "driver-config.json"
            cfg_path.write_bytes(cfg.to_json())
            instances = f"{stack.url_of('account')},{stack.extra_account_url}"
            d = await run_driver(
                [
                    "revocation",
                    "--config",
                    str(cfg_path),
                    "--instances",
                    instances,
                    "--iterations",
                    str(run.args.revocations),
                ],
                120,
            )
            if "na" in d:
                run.rows.append(na_row(name, procs, str(d["na"])))
            else:
                r = Result(
                    rps=0.0,
                    p50_ms=d["p50_ms"],
                    p99_ms=d["p99_ms"],
                    requests=d["samples"],
                    errors=d["not_rejected_within_timeout"],
                    seconds=0.0,
                    max_ms=d["max_ms"],
                )
                r.note = f"{d['samples']} samples, {d['instances']} account instances, revoked via {d['mode']}"
                run.rows.append(Row(name, procs, r, unit="ms"))
                run.extra.setdefault("revocation", {})[procs] = d

    # userinfo again with the in-process caches off (restarts the account service)
    if run.want("userinfo"):
        off = caches_off_env()
        name = "userinfo, caches off"
        if not off:
            run.rows.append(na_row(name, procs, "no cache setting in Settings yet"))
        else:
            await stack.restart("account", off)
            r = await wrk.run(userinfo_url, "bearer.lua", {"BENCH_TOKEN": access})
            r.note = "with " + " ".join(f"{k}={v}" for k, v in off.items())
            run.rows.append(Row(name, procs, r))

    # ES256 on both sides: client_credentials again with ES256 keys (1 process)
    if run.want("client_credentials") and procs == 1:
        await stack.restart("token", {"JWT_ALGORITHM": "ES256"})
        form = flows.client_credentials_form(cfg.internal)
        r = await wrk.run(token_url, "post.lua", {"BENCH_BODY": form_body(form)})
        r.note = "JWT_ALGORITHM=ES256 (P-256), the peer too"
        row = Row("  same, ES256 instead of RS256", procs, r)
        run.rows.append(row)
        if peer is not None:
            await peer.restart("ES256")
            await peer.on_both(row, "client_credentials")


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (node:cluster workers), MiB; 0 if gone."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(rss_mib(int(c)) for c in children)


def sample_rss(run: Run, stack: OurStack, peer: PeerBench | None, procs: int) -> None:
    """The largest resident memory seen so far, per service (all its processes) and per peer,
    sampled right after the busiest workloads (run.extra["rss_mib"])."""
    seen = run.extra.setdefault("rss_mib", {}).setdefault(procs, {})
    names = {s: stack.pids(s) for s in ("gateway", "authz", "token", "account")}
    if peer is not None:
        names |= {f"peer ({a})": [p.proc.pid] for a, p in peer.peers.items() if p.proc is not None}
    for name, pids in names.items():
        seen[name] = round(max(seen.get(name, 0.0), sum(rss_mib(p) for p in pids)), 1)


def caches_off_env() -> dict[str, str]:
    """Settings that turn the in-process caches off: boolean toggles false, cache TTLs 0."""
    env = {}
    for name, f in Settings.model_fields.items():
        if "cache" not in name:
            continue
        if f.annotation is bool:
            env[name.upper()] = "false"
        elif name.endswith("ttl_seconds") and f.annotation in (int, float):
            env[name.upper()] = "0"
    return env


@dataclass
class PeerBench:
    """The peer's side of the shared workloads, each run right after ours (same machine state), on
    both peers: ``peers`` maps "memory" and "redis" to a running Peer."""

    run: Run
    peers: dict[str, Peer]

    async def on_both(self, row: Row, workload: str) -> None:
        for adapter, peer in self.peers.items():
            try:
                result, why = await getattr(self, workload)(peer)
            except (flows.FlowError, RuntimeError, OSError) as exc:
                result, why = None, str(exc)[:300]
            if adapter == "redis":
                row.peer_redis, row.peer_redis_na = result, why
            else:
                row.peer, row.peer_na = result, why

    async def restart(self, alg: str) -> None:
        for peer in self.peers.values():
            await peer.stop()
            peer.alg = alg
            await peer.start()

    def config(self, peer: Peer) -> flows.BenchConfig:
        return flows.BenchConfig(
            base=peer.base,
            username="bench_user",
            password="devInteractions-take-any-password",
            web=flows.App(peer.web_client_id, peer.web_client_secret, peer.redirect_uri),
            internal=self.run.cfg.internal,
            scope="openid quota:read",
            peer=True,
        )

    async def client_credentials(self, peer: Peer) -> tuple[Result | None, str]:
        token_url = f"{peer.base}/token"
        form = flows.client_credentials_form(self.run.cfg.internal)
        status, body = await preflight_post(token_url, form)
        if status != 200 or str(body.get("access_token", "")).count(".") != 2:
            return None, f"{status} {body}"
        return await self.run.wrk.run(token_url, "post.lua", {"BENCH_BODY": form_body(form)}), ""

    async def introspection(self, peer: Peer) -> tuple[Result | None, str]:
        app = self.run.cfg.internal
        form = flows.client_credentials_form(app) | {"resource": "urn:bench:opaque"}
        _, body = await preflight_post(f"{peer.base}/token", form)
        iform = {
            "token": str(body.get("access_token", "")),
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        }
        url = f"{peer.base}/token/introspection"
        status, body = await preflight_post(url, iform)
        if status != 200 or body.get("active") is not True:
            return None, f"{status} {body}"
        r = await self.run.wrk.run(url, "post.lua", {"BENCH_BODY": form_body(iform)})
        r.note = "opaque token (it refuses to introspect JWTs)"
        return r, ""

    async def authorization_code(self, peer: Peer) -> tuple[Result | None, str]:
        cfg = self.config(peer)
        path = self.run.logs / f"driver-config-{peer.adapter}.json"
        path.write_bytes(cfg.to_json())
        d = await run_driver(authcode_args(self.run, path), self.run.wrk.duration + 60)
        if "na" in d:
            return None, str(d["na"])
        return result_of(d), ""

    async def refresh_token(self, peer: Peer) -> tuple[Result | None, str]:
        cfg = self.config(peer)
        async with flows.new_session(8) as http:
            await flows.login(http, cfg)
            pairs = await asyncio.gather(*(flows.code_flow(http, cfg) for _ in range(self.run.wrk.connections + 8)))
        tokens = self.run.logs / f"refresh-tokens-peer-{peer.adapter}-{peer.workers}.txt"
        tokens.write_text("\n".join(p["refresh_token"] for p in pairs) + "\n")
        form = {"grant_type": "refresh_token", "client_id": cfg.web.client_id, "client_secret": cfg.web.client_secret}
        env = {"BENCH_BODY": form_body(form), "BENCH_TOKENS_FILE": str(tokens)}
        return await self.run.wrk.run(cfg.token_url, "refresh.lua", env, warmup=False), ""


# --- main ----------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "node": version_of(["node", "--version"]) if shutil.which("node") else "-",
        "wrk": version_of(["wrk", "--version"]).split(" [")[0] if shutil.which("wrk") else "-",
        "oidc-provider": peer_pin(),
        "load average at start": load,
    }


def stack_env(db_url: str, pepper: str, base: str) -> dict[str, str]:
    """The environment of our services in the bench: production settings, the bench's own data."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=db_url,
        REDIS_PREFIX=REDIS_PREFIX,
        EVENTS_EXCHANGE=EVENTS_EXCHANGE,
        TOKEN_PEPPER=pepper,
        PUBLIC_BASE_URL=base,
        ACCESS_LOG="true",
        LOG_LEVEL="INFO",
        SHUTDOWN_TIMEOUT_SECONDS="3",
        SHUTDOWN_DRAIN_SECONDS="0",
        # The load comes from one address and a few clients: limits far above it, so the bench
        # measures the limiter's cost (one Redis round trip) but never its 429s.
        GATEWAY_RATE_LIMIT_PAGES_PER_MINUTE="100000000",
        GATEWAY_RATE_LIMIT_LOGINS_PER_MINUTE="100000000",
        GATEWAY_RATE_LIMIT_CLIENT_PER_MINUTE="100000000",
        GATEWAY_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE="100000000",
        GATEWAY_MAX_CONNECTIONS_PER_IP="0",
    )
    return env


async def main_async(args: argparse.Namespace) -> int:
    started = time.monotonic()
    wrk_bin = ensure_wrk()
    node = None if args.no_peer else ensure_peer()
    settings = load_settings()
    pepper = settings.token_pepper if len(settings.token_pepper) >= 32 else secrets.token_urlsafe(48)
    say(f"creating the {DB_NAME} database afresh and migrating it ...")
    db_url = await fresh_database(settings.database_url, DB_NAME)
    await clear_redis(settings.redis_url)
    # "gateway_admin" becomes GATEWAY_ADMIN_PORT (OurStack._env): /readyz lives there.
    ports = {s: free_port() for s in ("gateway", "gateway_admin", "authz", "token", "account")}
    base = f"http://127.0.0.1:{ports['gateway']}"
    env = stack_env(db_url, pepper, base)
    bench_settings = load_settings(database_url=db_url, token_pepper=pepper, public_base_url=base)
    say(f"seeding users, apps and {args.families:,} grants of the app ...")
    cfg = await seed(db_url, bench_settings, base, args.families)
    logs = RESULTS / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    run = Run(args, Wrk(wrk_bin, threads=2, connections=args.connections, duration=args.duration), cfg, env, logs)
    info = machine()
    try:
        for procs in args.procs:
            say(f"starting our stack with {procs} process(es) per service" + (" and the peer ..." if node else " ..."))
            stack = OurStack(
                env,
                ports,
                procs,
                logs,
                extra_account_port=free_port() if procs == 1 else None,
                grow=frozenset(args.grow) if args.grow else None,
            )
            client = cfg.internal
            peers = (
                {
                    adapter: Peer(
                        node,
                        free_port(),
                        procs,
                        client.client_id,
                        client.client_secret,
                        logs,
                        adapter=adapter,
                        redis_url=settings.redis_url,
                        redis_prefix=REDIS_PREFIX + "peer:",
                    )
                    for adapter in ("memory", "redis")
                }
                if node
                else {}
            )
            run.stack = stack
            try:
                await stack.start()
                for peer in peers.values():
                    await peer.start()
                say(f"measuring, {procs} process(es) per service, {args.duration:.0f} s per workload ...")
                await ours(run, stack, procs, PeerBench(run, peers) if peers else None)
            finally:
                await stack.stop()
                for peer in peers.values():
                    await peer.stop()
    finally:
        with contextlib.suppress(Exception):
            await clear_redis(settings.redis_url)
    elapsed = time.monotonic() - started
    text = render(run, info, args, elapsed, node is not None)
    print("\n" + text, flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench-{stamp}.txt").write_text(text + "\n")
    title = f"make bench {stamp}: ours vs node oidc-provider {info['oidc-provider']}"
    html = svg_report(run.rows, title, goal_lines(run, args, node is not None))
    (RESULTS / f"bench-{stamp}.html").write_text(html)
    (RESULTS / f"bench-{stamp}.json").write_text(
        json.dumps(
            {
                "machine": info,
                "args": {k: v for k, v in vars(args).items()},
                "rows": [
                    {
                        "workload": r.workload,
                        "procs": r.procs,
                        "ours": r.ours.as_dict() if r.ours else None,
                        "ours_na": r.ours_na,
                        "peer": r.peer.as_dict() if r.peer else None,
                        "peer_na": r.peer_na,
                        "peer_redis": r.peer_redis.as_dict() if r.peer_redis else None,
                        "peer_redis_na": r.peer_redis_na,
                    }
                    for r in run.rows
                ],
                "extra": run.extra,
                "elapsed_seconds": elapsed,
            },
            indent=2,
            default=str,
        )
    )
    say(f"results in bench/results/bench-{stamp}.txt, .json and .html; service logs in bench/results/logs/")
    return 0


def _row(run: Run, procs: int, prefix: str) -> Row | None:
    return next((r for r in run.rows if r.procs == procs and r.workload.startswith(prefix) and r.ours), None)


def _goal(ok: bool | None, text: str) -> str:
    return f"  {'n/a ' if ok is None else 'met ' if ok else 'MISS'}  {text}"


def goal_lines(run: Run, args: argparse.Namespace, with_peer: bool) -> list[str]:
    """The goals of docs/performance.md, "must" then "beyond", for each process count."""
    out = ["goals (must hold on a quiet machine):"]
    beyond = ["goals beyond that:"]
    for procs in args.procs:
        for prefix, redis, need, label in (
            (CC, False, 1.0, "client_credentials RS256 >= 1.0x the in-memory peer"),
            (AUTHCODE, True, 1.0, "authorization_code flows >= 1.0x the Redis-backed peer"),
            (REFRESH, True, 1.0, "refresh rotation >= 1.0x the Redis-backed peer"),
            (INTROSPECTION, False, 0.7, "introspection >= 0.7x the in-memory peer"),
        ):
            row = _row(run, procs, prefix)
            value = row.ratio(redis) if row else None
            text = "n/a" if value is None else f"{value:.2f}x"
            out.append(_goal(None if value is None else value >= need, f"{label} ({procs} procs): {text}"))
        refresh = _row(run, procs, REFRESH)
        rps = refresh.ours.rps if refresh and refresh.ours else None
        out.append(
            _goal(None if rps is None else rps >= 1000, f"refresh >= 1,000/s ({procs} procs): {rps or 0:,.0f}/s")
        )
        beyond.append(
            _goal(None if rps is None else rps >= 2000, f"refresh >= 2,000/s ({procs} procs): {rps or 0:,.0f}/s")
        )
        for row in (r for r in run.rows if r.procs == procs and r.ratio() is not None):
            value = row.ratio() or 0.0
            beyond.append(
                _goal(value >= 1.0, f">= 1.0x the in-memory peer: {row.workload.strip()} ({procs} procs): {value:.2f}x")
            )
        half = _row(run, procs, "userinfo at half")
        if half and half.ours:
            out.append(
                _goal(
                    half.ours.p99_ms < GOAL_USERINFO_P99_MS,
                    f"userinfo p99 < {GOAL_USERINFO_P99_MS:.0f} ms at half its peak rate ({procs} procs): {half.ours.p99_ms:.1f} ms",
                )
            )
        rev = _row(run, procs, "revocation")
        if rev and rev.ours:
            out.append(
                _goal(
                    rev.ours.p99_ms < GOAL_REVOCATION_P99_MS and not rev.ours.errors,
                    f"revocation visible on every instance < {GOAL_REVOCATION_P99_MS:.0f} ms p99: {rev.ours.p99_ms:.1f} ms",
                )
            )
    if not with_peer:
        out.append("  (no peer in this run)")
    return out + beyond


def render(run: Run, info: dict[str, str], args: argparse.Namespace, elapsed: float, with_peer: bool) -> str:
    head = [
        "=" * 110,
        f"make bench: ours (4 aiohttp services behind the gateway) vs node oidc-provider {info['oidc-provider']}",
        "machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        f"load: wrk {run.wrk.threads} threads x {run.wrk.connections} keep-alive connections (driver: {run.wrk.connections} "
        f"concurrent flows), {args.duration:.0f} s per workload after {run.wrk.warmup:.0f} s warm-up; all on this machine",
        "=" * 110,
    ]
    if args.profile:
        head.append("PROFILED RUN: py-spy was sampling the services; these figures are not comparable")
    if args.grow:
        head.append(f"procs = processes of {', '.join(args.grow)} only; every other service ran 1 process")
    body = table(run.rows)
    goals = ["", *goal_lines(run, args, with_peer)]
    rss = run.extra.get("rss_mib", {})
    if rss:
        goals += [
            "",
            "resident memory under load (MiB, largest seen right after the busiest workloads; all processes):",
        ]
        goals += [
            f"  {procs} proc(s): " + ", ".join(f"{k} {v:,.0f}" for k, v in seen.items()) for procs, seen in rss.items()
        ]
    cost = run.extra.get("cost", {})
    if cost:
        goals += ["", "cost per request (flow) of ours, all processes of a service; PostgreSQL per request:"]
        for label, per in cost.items():
            for procs, figures in per.items():
                goals.append(f"  {label} ({procs} proc): " + ", ".join(f"{k} {v:g}" for k, v in figures.items()))
    tail = ["", f"total time {elapsed:.0f} s"]
    prof: list[str] = []
    if run.profiles:
        prof = ["", "profiles (bench/results/profile/*.txt, py-spy raw format):"]
        prof += [summarize_profile(p) for p in run.profiles]
    return "\n".join([*head, body, *goals, *prof, *tail])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("BENCH_DURATION", 6)),
        help="seconds per workload (default 6)",
    )
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections / concurrent flows (default 32)")
    p.add_argument(
        "--procs", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2], help="processes per service, e.g. 1,2"
    )
    p.add_argument(
        "--families",
        type=int,
        default=100_000,
        help="existing grants of the benchmarked app seeded before the run (default 100,000)",
    )
    p.add_argument("--revocations", type=int, default=100, help="revocation samples (default 100)")
    p.add_argument(
        "--grow",
        type=lambda s: s.split(","),
        default=None,
        help="only these services get --procs processes, the others 1 (e.g. token,account with --procs 1,2,4: the curve)",
    )
    p.add_argument("--no-peer", action="store_true", help="skip the oidc-provider peer")
    p.add_argument("--profile", action="store_true", help="sample the busy services with py-spy during each workload")
    p.add_argument(
        "--only", type=lambda s: s.split(","), default=None, help=f"comma-separated subset of {','.join(WORKLOADS)}"
    )
    args = p.parse_args(argv)
    if args.only and set(args.only) - set(WORKLOADS):
        p.error(f"--only takes {', '.join(WORKLOADS)}")
    return args


def run_main(prog: str, coro: Coroutine[Any, Any, int]) -> int:
    """Run a bench entry point on uvloop; its failures as one line on stderr."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130
    except (OSError, asyncpg.PostgresError, RuntimeError, flows.FlowError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    return run_main("bench", main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
