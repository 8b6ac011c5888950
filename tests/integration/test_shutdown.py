"""Graceful shutdown: SIGTERM under steady requests loses no request.

The service runs as a real process (python -m services.account). On SIGTERM it answers /readyz 503,
keeps serving with ``Connection: close`` for SHUTDOWN_DRAIN_SECONDS, then stops accepting and drains
in-flight requests. A client that is mid-request never sees an error: every request that reached the
service gets its 200; once the port is closed, connections are refused (the instance is gone).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import aiohttp

from libs.common.config import Settings
from tests.support.factories import make_developer
from tests.support.stack import free_port


def _env(settings: Settings, port: int) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        REDIS_PREFIX=settings.redis_prefix,
        AMQP_URL=settings.amqp_url,
        EVENTS_EXCHANGE=settings.events_exchange,
        TOKEN_PEPPER=settings.token_pepper,
        INTERNAL_SERVICE_TOKEN=settings.internal_service_token,
        PUBLIC_BASE_URL=settings.public_base_url,
        ACCOUNT_PORT=str(port),
        SHUTDOWN_DRAIN_SECONDS="1.0",
        SHUTDOWN_TIMEOUT_SECONDS="10",
        LOG_LEVEL="WARNING",
    )
    return env


async def _wait_up(base: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            assert proc.returncode is None, "the service exited while starting"
            try:
                async with s.get(base + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectorError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("service did not become ready")


async def test_sigterm_under_steady_requests_loses_nothing(settings: Settings, db) -> None:
    _, token = await make_developer(db, settings)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.account", env=_env(settings, port), stderr=asyncio.subprocess.PIPE
    )
    try:
        await _wait_up(base, proc)
        ok = 0
        failures: list[str] = []
        refused = 0
        stop = asyncio.Event()
        headers = {"Authorization": f"Bearer {token}"}

        async def worker() -> None:
            nonlocal ok, refused
            async with aiohttp.ClientSession() as s:  # keep-alive connections, like a gateway
                while not stop.is_set():
                    try:
                        async with s.get(base + "/api/oauth_apps", headers=headers) as r:
                            await r.read()
                            if r.status == 200:
                                ok += 1
                            else:
                                failures.append(f"status {r.status}")
                    except aiohttp.ClientConnectorError:
                        refused += 1  # the port is closed: the instance is gone, nothing was lost
                        await asyncio.sleep(0.05)
                    except aiohttp.ClientError as exc:
                        failures.append(repr(exc))

        workers = [asyncio.create_task(worker()) for _ in range(8)]
        await asyncio.sleep(1.0)
        before = ok
        proc.send_signal(signal.SIGTERM)
        # during the drain window the service still serves, and says it is not ready
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as s, s.get(base + "/readyz") as r:
            assert r.status == 503
            assert (await r.json())["status"] == "draining"
        rc = await asyncio.wait_for(proc.wait(), timeout=20)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
        assert rc == 0
        assert before > 20, "the steady load did not run"
        assert ok > before, "requests during the drain window must still be served"
        assert failures == [], failures[:5]
        assert refused > 0, "after shutdown the port should be closed"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
