"""The systems under test as real processes: our four services (``python -m services.X``, 1 or 2
processes each, SO_REUSEPORT for 2) and the peer (``node bench/peer/server.mjs``, 1 or 2 workers).
Every process is started in its own session and stopped by its own pid/process group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from libs.platform.migrate import apply_all
from oauthctl.components import MIGRATIONS

from .tools import PEER_DIR

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("account", "authz", "token", "gateway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fresh_database(database_url: str, name: str) -> str:
    """Drop and create ``name`` next to DATABASE_URL's database, migrate it; its URL."""
    parts = urlsplit(database_url)
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = urlunsplit(parts._replace(path=f"/{name}"))
    await apply_all(url, MIGRATIONS, log=lambda m: None)
    return url


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _spawn(name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        popen = subprocess.Popen(  # noqa: S603 - our own commands
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, popen, log)


async def _stop(procs: list[Proc], grace_seconds: float = 15.0) -> None:
    for p in procs:
        if p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)  # its own group: it was started with a new session
    deadline = time.monotonic() + grace_seconds
    while any(p.popen.poll() is None for p in procs) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    for p in procs:
        if p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.popen.wait()


async def _wait_log(proc: Proc, marker: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} while starting:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            if marker in proc.log.read_text(errors="replace"):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not start within {within:.0f}s:\n{proc.tail()}")


async def _wait_http(url: str, within: float, method: str = "GET") -> None:
    deadline = time.monotonic() + within
    last = ""
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    body = await r.text()
                    if r.status == 200:
                        return
                    last = f"{r.status} {body[:300]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {within:.0f}s (last: {last})")


@dataclass
class OurStack:
    """Our services as processes with production settings (access log on, INFO logs)."""

    env: dict[str, str]  # the base environment (settings) shared by every process
    ports: dict[str, int]
    per_service: int
    logs: Path
    extra_account_port: int | None = None  # a second account instance on its own port (revocation)
    procs: list[Proc] = field(default_factory=list)
    grow: frozenset[str] | None = None  # only these services get per_service processes; the others 1

    def count(self, service: str) -> int:
        """Processes of ``service``: per_service, or 1 for a service not in ``grow``."""
        return self.per_service if self.grow is None or service in self.grow else 1

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def url_of(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def extra_account_url(self) -> str | None:
        return f"http://127.0.0.1:{self.extra_account_port}" if self.extra_account_port else None

    def pids(self, service: str) -> list[int]:
        return [p.pid for p in self.procs if p.name.startswith(service + "-")]

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(self.env)
        env.update({f"{s.upper()}_PORT": str(p) for s, p in self.ports.items()})
        env["REUSE_PORT"] = "true" if self.per_service > 1 else "false"  # harmless for a single process
        env.update(extra or {})
        return env

    async def start(self) -> None:
        try:
            for service in ORDER:
                for i in range(self.count(service)):
                    name = f"{service}-{i + 1}"
                    cmd = [sys.executable, "-m", f"services.{service}"]
                    self.procs.append(_spawn(name, cmd, self._env(), self.logs / f"{name}.log"))
            if self.extra_account_port:
                env = self._env({"ACCOUNT_PORT": str(self.extra_account_port), "REUSE_PORT": "false"})
                cmd = [sys.executable, "-m", "services.account"]
                self.procs.append(_spawn("account-extra", cmd, env, self.logs / "account-extra.log"))
            for p in self.procs:
                await _wait_log(p, '"msg":"started"', 60)
            await _wait_http(self.url_of("gateway_admin") + "/readyz", 30)
            for service in ("account", "authz", "token"):
                await _wait_http(self.url_of(service) + "/readyz", 30)
        except BaseException:
            await self.stop()
            raise

    async def restart(self, service: str, extra_env: dict[str, str]) -> None:
        """Restart the gateway-routed processes of ``service`` with ``extra_env`` on top."""
        old = [p for p in self.procs if p.name.startswith(service + "-") and p.name[len(service) + 1 :].isdigit()]
        await _stop(old)
        self.procs = [p for p in self.procs if p not in old]
        new = []
        for i in range(self.count(service)):
            name = f"{service}-{i + 1}"
            cmd = [sys.executable, "-m", f"services.{service}"]
            new.append(_spawn(name, cmd, self._env(extra_env), self.logs / f"{name}-restarted.log"))
        self.procs += new
        for p in new:
            await _wait_log(p, '"msg":"started"', 60)
        await _wait_http(self.url_of(service) + "/readyz", 30)

    async def stop(self) -> None:
        await _stop(self.procs)
        self.procs.clear()


@dataclass
class Peer:
    """node oidc-provider (bench/peer/server.mjs) on loopback: ``adapter`` "memory" or "redis",
    ``alg`` RS256 or ES256 for every signature."""

    node: str
    port: int
    workers: int
    client_id: str
    client_secret: str
    logs: Path
    adapter: str = "memory"
    alg: str = "RS256"
    redis_url: str = ""
    redis_prefix: str = ""
    web_client_id: str = "bench-web"
    web_client_secret: str = "bench-web-secret-" + "w" * 24
    redirect_uri: str = "http://127.0.0.1:9/callback"
    proc: Proc | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = dict(
            os.environ,
            NODE_ENV="production",
            PEER_PORT=str(self.port),
            PEER_WORKERS=str(self.workers),
            PEER_CLIENT_ID=self.client_id,
            PEER_CLIENT_SECRET=self.client_secret,
            PEER_WEB_CLIENT_ID=self.web_client_id,
            PEER_WEB_CLIENT_SECRET=self.web_client_secret,
            PEER_REDIRECT_URI=self.redirect_uri,
            PEER_ALG=self.alg,
            PEER_ADAPTER=self.adapter,
            PEER_REDIS_URL=self.redis_url,
            PEER_REDIS_PREFIX=self.redis_prefix,
        )
        name = f"peer-{self.adapter}-{self.alg}-{self.workers}"
        self.proc = _spawn(name, [self.node, "server.mjs"], env, self.logs / f"{name}.log", PEER_DIR)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.proc.popen.poll() is not None:
                    raise RuntimeError(f"the peer exited while starting:\n{self.proc.tail()}")
                text = self.proc.log.read_text(errors="replace")
                if text.count("listening on") >= self.workers:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the peer did not start:\n{self.proc.tail()}")
            await _wait_http(self.base + "/.well-known/openid-configuration", 10)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.proc is not None:
            await _stop([self.proc])
            self.proc = None
