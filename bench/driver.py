"""The load driver for multi-step flows, run as its own process (``python -m bench.driver``) so it
never shares an event loop with the orchestrator. Prints one JSON object on stdout.

- ``authcode``: N concurrent browsers+apps, each looping authorize (as the logged-in user) then the
  code exchange, over keep-alive connections, for a fixed time; latency is per flow (both requests).
- ``revocation``: for each sample, a fresh token is checked to be accepted by every account instance,
  then revoked (RFC 7009 ``POST /api/oauth2/revoke``, else the user center's
  ``DELETE /api/user/authorizations/{client_id}``); every instance is then polled back to back until
  it answers 401. The figure is, per sample, the time from the revoke call returning to the last
  instance's first 401.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .flows import BenchConfig, FlowError, authorize, code_flow, exchange, login, new_session, post_form


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[idx]


def summary(latencies: list[float], seconds: float, errors: int, **extra: Any) -> dict[str, Any]:
    lat = sorted(latencies)
    return {
        "rps": len(lat) / seconds if seconds else 0.0,
        "p50_ms": percentile(lat, 50) * 1000,
        "p90_ms": percentile(lat, 90) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else 0.0,
        "requests": len(lat),
        "errors": errors,
        "seconds": seconds,
        **extra,
    }


# --- authorization_code: authorize + token -------------------------------------------------------
async def run_authcode(cfg: BenchConfig, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    async with new_session(limit=concurrency + 4) as http:
        await login(http, cfg)
        await code_flow(http, cfg)  # fail fast, before any load, if the flow does not work
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration
        flows: list[float] = []
        steps: list[tuple[float, float]] = []
        errors = 0
        first_error = ""

        async def worker() -> None:
            nonlocal errors, first_error
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    code = await authorize(http, cfg)
                    t1 = time.perf_counter()
                    await exchange(http, cfg, code)
                except (FlowError, aiohttp.ClientError, TimeoutError) as exc:
                    if time.perf_counter() >= measure_from:
                        errors += 1
                        first_error = first_error or str(exc)[:300]
                    continue
                t2 = time.perf_counter()
                if t0 >= measure_from and t2 <= stop_at:
                    flows.append(t2 - t0)
                    steps.append((t1 - t0, t2 - t1))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        auth = sorted(s[0] for s in steps)
        tok = sorted(s[1] for s in steps)
        return summary(
            flows,
            duration,
            errors,
            authorize_p50_ms=percentile(auth, 50) * 1000,
            token_p50_ms=percentile(tok, 50) * 1000,
            first_error=first_error,
        )


# --- revocation propagation ----------------------------------------------------------------------
async def _status(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        await r.read()
        return r.status


async def _revoke(http: aiohttp.ClientSession, cfg: BenchConfig, token: str, mode: str) -> tuple[str, int]:
    """Revoke ``token`` by ``mode`` ("auto" picks the first that exists); (mode used, status)."""
    if mode in ("auto", "rfc7009"):
        form = {
            "token": token,
            "token_type_hint": "access_token",
            "client_id": cfg.web.client_id,
            "client_secret": cfg.web.client_secret,
        }
        status, _ = await post_form(http, f"{cfg.base}/api/oauth2/revoke", form)
        if status == 200 or mode == "rfc7009":
            return "rfc7009", status
    url = f"{cfg.base}/api/user/authorizations/{cfg.web.client_id}"
    async with http.delete(url, headers={"Origin": cfg.base, "Accept": "application/json"}) as r:
        await r.read()
        return "user_center", r.status


async def run_revocation(
    cfg: BenchConfig, instances: list[str], iterations: int, give_up_after: float
) -> dict[str, Any]:
    userinfo = [f"{u.rstrip('/')}/api/oauth2/userinfo" for u in instances]
    samples: list[float] = []
    failures = 0
    mode = "auto"
    async with new_session(limit=len(instances) + 4) as http:
        await login(http, cfg)
        for _ in range(iterations):
            tokens = await code_flow(http, cfg)
            access = tokens["access_token"]
            before = await asyncio.gather(*(_status(http, u, access) for u in userinfo))
            if any(s != 200 for s in before):
                raise FlowError(f"a fresh token was not accepted by every instance: {before}")
            mode, status = await _revoke(http, cfg, access, mode)
            if not 200 <= status < 300:
                return {"na": f"no revocation endpoint answered (revoke: {mode} -> {status})"}
            returned = time.perf_counter()

            async def rejected_after(url: str, access: str = access, returned: float = returned) -> float | None:
                while True:
                    status = await _status(http, url, access)
                    now = time.perf_counter()
                    if status == 401:
                        return now - returned
                    if now - returned > give_up_after:
                        return None

            times = await asyncio.gather(*(rejected_after(u) for u in userinfo))
            if any(t is None for t in times):
                failures += 1
                samples.append(give_up_after)
            else:
                samples.append(max(t for t in times if t is not None))
    samples.sort()
    return {
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "max_ms": samples[-1] * 1000 if samples else 0.0,
        "samples": len(samples),
        "instances": len(instances),
        "not_rejected_within_timeout": failures,
        "mode": mode,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.driver")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("authcode")
    a.add_argument("--config", type=Path, required=True)
    a.add_argument("--concurrency", type=int, default=32)
    a.add_argument("--duration", type=float, default=8.0)
    a.add_argument("--warmup", type=float, default=1.0)
    r = sub.add_parser("revocation")
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--instances", required=True, help="comma-separated base URLs of the account instances")
    r.add_argument("--iterations", type=int, default=100)
    r.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    cfg = BenchConfig.from_json(args.config.read_bytes())
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        if args.cmd == "authcode":
            out = asyncio.run(run_authcode(cfg, args.concurrency, args.duration, args.warmup))
        else:
            out = asyncio.run(run_revocation(cfg, args.instances.split(","), args.iterations, args.timeout))
    except (FlowError, aiohttp.ClientError, TimeoutError) as exc:
        out = {"na": f"{type(exc).__name__}: {exc}"[:500]}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
