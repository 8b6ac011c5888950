"""Start the real services in-process on free ports (aiohttp AppRunner), wired like production."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from libs.platform.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    settings: Settings
    runners: dict[str, web.AppRunner] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    def url_of(self, service: str) -> str:
        return f"http://127.0.0.1:{self.settings.port_of(service)}"

    async def start(self, service: str, port: int | None = None, settings: Settings | None = None) -> web.AppRunner:
        from importlib import import_module

        from libs.platform.server import start_service

        settings = settings or self.settings
        app = import_module(f"services.{service}.app").build(settings)
        # The production server wiring (libs/platform/server.py), admin port included; another
        # instance on its own port gets its own admin port too.
        admin_port = None if port is None or settings.admin_port_of(service) is None else free_port()
        return await start_service(service, app, settings, host="127.0.0.1", port=port, admin_port=admin_port)

    def admin_url_of(self, service: str) -> str:
        return f"http://127.0.0.1:{self.settings.admin_port_of(service) or self.settings.port_of(service)}"

    async def start_all(self) -> None:
        for service in ("account", "authz", "token", "gateway"):
            self.runners[service] = await self.start(service)

    async def stop(self, service: str) -> None:
        runner = self.runners.pop(service, None)
        if runner is not None:
            await runner.cleanup()

    async def stop_all(self) -> None:
        for service in list(self.runners):
            await self.stop(service)


@contextlib.asynccontextmanager
async def extra_instance(
    stack: Stack, service: str, settings: Settings, **overrides: object
) -> AsyncIterator[tuple[str, web.Application]]:
    """Another instance of ``service`` on its own port, next to the stack's (which the gateway uses)."""
    port = free_port()
    runner = await stack.start(service, port=port, settings=settings.model_copy(update=overrides))
    try:
        yield f"http://127.0.0.1:{port}", runner.app
    finally:
        await runner.cleanup()


async def until(predicate: Callable[[], object], within: float = 10.0) -> None:
    """Wait until ``predicate()`` is true, polling every 20 ms; fail after ``within`` seconds."""
    for _ in range(int(within / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")
