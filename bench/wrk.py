"""Running wrk with one of bench/lua/*.lua and reading its figures (the scripts' done() prints
them as one JSON line)."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"


@dataclass
class Result:
    """One measured workload: throughput, latency percentiles (ms) and failures."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx responses plus socket errors
    seconds: float
    p90_ms: float = 0.0
    max_ms: float = 0.0
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Wrk:
    binary: str
    threads: int = 2
    connections: int = 32
    duration: float = 8.0
    warmup: float = 1.0

    async def run(
        self,
        url: str,
        script: str,
        env: dict[str, str],
        *,
        connections: int | None = None,
        duration: float | None = None,
        warmup: bool = True,
    ) -> Result:
        conns = connections or self.connections
        threads = min(self.threads, conns)
        full_env = dict(os.environ, BENCH_LUA_DIR=str(LUA), BENCH_THREADS=str(threads), **env)
        if warmup and self.warmup > 0:
            await self._once(url, script, full_env, threads, conns, self.warmup)
        return await self._once(url, script, full_env, threads, conns, duration or self.duration)

    async def _once(
        self, url: str, script: str, env: dict[str, str], threads: int, conns: int, seconds: float
    ) -> Result:
        cmd = [
            self.binary,
            f"-t{threads}",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA / script),
            url,
        ]
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        text = out.decode(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-1000:]} {err.decode(errors='replace')[-1000:]}")
        d = json.loads(line.split(" ", 1)[1])
        secs = d["duration_us"] / 1e6
        errors = d["err_status"] + d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
        return Result(
            rps=d["requests"] / secs if secs else 0.0,
            p50_ms=d["p50_us"] / 1000,
            p90_ms=d["p90_us"] / 1000,
            p99_ms=d["p99_us"] / 1000,
            max_ms=d["max_us"] / 1000,
            requests=d["requests"],
            errors=errors,
            seconds=secs,
        )
