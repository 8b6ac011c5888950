"""Graceful shutdown: SIGTERM under steady requests loses no request.

The service runs as a real process (python -m services.account). On SIGTERM it answers /readyz 503,
keeps serving with ``Connection: close`` for SHUTDOWN_DRAIN_SECONDS, then stops accepting and drains
in-flight requests. The clients behave like a load balancer: a probe polls /readyz every 100 ms and
new requests go to the instance only while it is ready. Every request sent gets its 200.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import aiohttp
import pytest

from libs.platform.config import Settings
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
        stop = asyncio.Event()
        routable = asyncio.Event()
        routable.set()

        async def probe() -> None:  # the load balancer's readiness probe
            async with aiohttp.ClientSession() as s:
                while routable.is_set():
                    try:
                        async with s.get(base + "/readyz") as r:
                            if r.status != 200:
                                routable.clear()
                    except aiohttp.ClientError:
                        routable.clear()
                    await asyncio.sleep(0.1)

        headers = {"Authorization": f"Bearer {token}"}

        async def worker() -> None:
            nonlocal ok
            async with aiohttp.ClientSession() as s:  # keep-alive connections, like a gateway
                while not stop.is_set() and routable.is_set():
                    try:
                        async with s.get(base + "/api/oauth_apps", headers=headers) as r:
                            await r.read()
                            if r.status == 200:
                                ok += 1
                            else:
                                failures.append(f"status {r.status}")
                    except aiohttp.ClientError as exc:
                        failures.append(repr(exc))

        prober = asyncio.create_task(probe())
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
        stop.set()
        await asyncio.gather(*workers, prober)
        assert rc == 0
        assert before > 20, "the steady load did not run"
        assert not routable.is_set(), "readiness must fail after SIGTERM"
        assert failures == [], failures[:5]
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectorError):
                await s.get(base + "/healthz")  # the port is closed: the instance is gone
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
