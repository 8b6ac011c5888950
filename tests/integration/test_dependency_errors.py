"""The error middleware answers every dependency failure with a clean 503 in the path's style
(RFC 6749 ``temporarily_unavailable``, the developer-API envelope, a zh/en page) and Retry-After,
never aiohttp's text/plain 500; /readyz answers within a second with ok / degraded / down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import aiohttp
import asyncpg
import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from libs.platform.config import Settings
from libs.platform.errors import DependencyUnavailable
from libs.platform.web import READY_CHECKS, create_app

FAILURES: dict[str, BaseException] = {
    "reset": ConnectionResetError(104, "Connection reset by peer"),
    "refused": ConnectionRefusedError(111, "refused"),
    "timeout": TimeoutError(),
    "pg_closed": asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    "pg_interface": asyncpg.InterfaceError("connection is closed"),
    "pg_statement_timeout": asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    "pg_too_many": asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    "redis_conn": redis.exceptions.ConnectionError("Error 111 connecting"),
    "redis_timeout": redis.exceptions.TimeoutError("Timeout reading from socket"),
    "amqp": aio_pika.exceptions.AMQPConnectionError("closed"),
    "explicit": DependencyUnavailable("redis", "session store"),
}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = create_app("test", Settings(), postgres=False, redis=False, amqp=False)

    async def fail(request: web.Request) -> web.Response:
        raise FAILURES[request.match_info["kind"]]

    async def bug(request: web.Request) -> web.Response:
        raise ValueError("a bug, not a dependency")

    async def missing_file(request: web.Request) -> web.Response:
        raise FileNotFoundError(2, "No such file", "templates/x.html")  # an OSError, but ours

    for prefix in ("/api/oauth2/x", "/api/x", "/page"):
        app.router.add_get(prefix + "/{kind}", fail)
    app.router.add_get("/api/oauth2/bug", bug)
    app.router.add_get("/api/oauth2/missing_file", missing_file)

    async def slow() -> None:
        await asyncio.sleep(30)

    async def degraded() -> str:
        return "degraded"

    app[READY_CHECKS].update({"blackholed": slow, "bus": degraded})
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize("kind", sorted(FAILURES))
async def test_dependency_failures_are_503_in_each_style(client: TestClient, kind: str) -> None:
    async with client.get(f"/api/oauth2/x/{kind}") as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["error"] == "temporarily_unavailable"
    async with client.get(f"/api/x/{kind}") as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["success"] is False
    async with client.get(f"/page/{kind}", headers={"Accept-Language": "en"}) as r:
        assert r.status == 503 and r.content_type == "text/html" and r.headers["Retry-After"] == "1"
        assert "Service temporarily unavailable" in await r.text()
    async with client.get(f"/page/{kind}") as r:
        assert "服务暂时不可用" in await r.text()


@pytest.mark.parametrize("path", ["/api/oauth2/bug", "/api/oauth2/missing_file"])
async def test_a_bug_is_still_a_500_not_a_503(client: TestClient, path: str) -> None:
    async with client.get(path) as r:
        assert r.status == 500 and (await r.json())["error"] == "server_error"


async def test_readyz_answers_within_a_second_and_names_each_state(client: TestClient) -> None:
    started = time.monotonic()
    async with client.get("/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
        body = await r.json()
    assert time.monotonic() - started < 1.0
    assert r.status == 503 and body["status"] == "unavailable"
    assert body["checks"] == {"blackholed": "down", "bus": "degraded"}
    assert body["errors"] == {"blackholed": "TimeoutError"}
