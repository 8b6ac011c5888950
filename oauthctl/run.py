"""`make run`: migrate, demo data, then every service as its own process; Ctrl-C stops them all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time

import aiohttp

from libs.platform.config import SERVICES, Settings

from .demo import DemoInfo, ensure_demo, print_demo
from .mailsink import start_sink
from .util import migrate


async def _wait_healthy(url: str, proc: asyncio.subprocess.Process, name: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} while starting; see its log lines above")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{name} did not become healthy at {url} within {within:.0f}s")


async def run_stack(settings: Settings, with_example: bool = True) -> int:
    print("run: checking the database and applying migrations ...", flush=True)
    await migrate(settings)
    print("run: creating demo data ...", flush=True)
    info = await ensure_demo(settings)

    print(f"run: starting a local SMTP sink on {settings.smtp_host}:{settings.smtp_port} (emails are printed) ...")
    try:
        sink = start_sink(settings.smtp_host, settings.smtp_port)
    except (OSError, RuntimeError) as exc:  # e.g. the port is taken (a real mail server, or another run)
        print(f"run: no SMTP sink ({exc}); emails go to {settings.smtp_host}:{settings.smtp_port}", flush=True)
        sink = None
    procs: dict[str, asyncio.subprocess.Process] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        order = ["account", "authz", "token", "gateway"]
        assert set(order) == set(SERVICES)
        for name in order:
            admin = settings.admin_port_of(name)
            also = f" (/readyz and /metrics on {admin})" if admin else ""
            print(f"run: starting {name} on port {settings.port_of(name)}{also} ...", flush=True)
            procs[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"services.{name}", env=os.environ.copy(), start_new_session=True
            )
        for name in order:
            await _wait_healthy(f"http://127.0.0.1:{settings.port_of(name)}/healthz", procs[name], name)
        if with_example and settings.internal_service_token:
            port = settings.example_resource_server_port
            print(f"run: starting the example resource server on port {port} ...", flush=True)
            procs["resource_server"] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "examples.resource_server",
                env=_resource_server_env(settings),
                start_new_session=True,
            )
            await _wait_healthy(f"http://127.0.0.1:{port}/healthz", procs["resource_server"], "resource server")
        if with_example:
            example = _example_command(settings, info)
            if example is not None:
                print(f"run: starting the example app on port {settings.example_port} ...", flush=True)
                procs["example"] = await asyncio.create_subprocess_exec(
                    *example[0], env=example[1], start_new_session=True
                )
                await _wait_healthy(
                    f"http://127.0.0.1:{settings.example_port}/healthz", procs["example"], "example app"
                )
        print_demo(settings, info)
        print("run: all services are up; press Ctrl-C to stop them.", flush=True)
        waiters = [asyncio.create_task(p.wait()) for p in procs.values()]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            dead = [n for n, p in procs.items() if p.returncode is not None]
            print(f"run: {', '.join(dead)} exited unexpectedly; stopping the others", file=sys.stderr, flush=True)
            return 1
        return 0
    except RuntimeError as exc:
        print(f"run: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        await _stop_all(procs)
        if sink is not None:
            sink.stop()


def _example_command(settings: Settings, info: DemoInfo) -> tuple[list[str], dict[str, str]] | None:
    try:
        import examples.third_party_app  # noqa: F401
    except ImportError:
        return None
    env = os.environ.copy()
    env.update(
        OAUTH_SERVER=settings.public_base_url,
        OAUTH_CLIENT_ID=info.client_id,
        OAUTH_CLIENT_SECRET=info.client_secret,
        OAUTH_REDIRECT_URI=info.redirect_uris[0],
        EXAMPLE_PORT=str(settings.example_port),
    )
    if settings.internal_service_token:  # the spend button calls the example resource server
        env["RESOURCE_SERVER_URL"] = f"http://127.0.0.1:{settings.example_resource_server_port}"
    return [sys.executable, "-m", "examples.third_party_app"], env


def _resource_server_env(settings: Settings) -> dict[str, str]:
    """docs/spending.md "A resource server": it verifies tokens with the platform's JWKS and charges
    through the account service's internal API (never through the gateway)."""
    env = os.environ.copy()
    env.update(
        OAUTH_SERVER=settings.public_base_url,
        ACCOUNT_INTERNAL_URL=settings.upstream_url("account"),
        INTERNAL_SERVICE_TOKEN=settings.internal_service_token,
        RESOURCE_SERVER_PORT=str(settings.example_resource_server_port),
        ACCESS_TOKEN_AUDIENCE=settings.resource_audience,
    )
    return env


async def _stop_all(procs: dict[str, asyncio.subprocess.Process]) -> None:
    running = {n: p for n, p in procs.items() if p.returncode is None}
    if not running:
        return
    print(f"run: stopping {', '.join(running)} ...", flush=True)
    for p in running.values():
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running.values())), timeout=15)
    except TimeoutError:
        for p in running.values():
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    print("run: stopped.", flush=True)
