"""Start the real services in-process on free ports (aiohttp AppRunner), wired like production."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from aiohttp import web

from libs.common.config import Settings


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

        settings = settings or self.settings
        app = import_module(f"services.{service}.app").build(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port or settings.port_of(service))
        await site.start()
        return runner

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
