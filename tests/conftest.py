"""Test fixtures: each test session gets its own Postgres database (created, migrated, dropped),
its own Redis key prefix and its own RabbitMQ exchange, so runs never see each other's data."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from libs.platform.config import Settings
from libs.platform.migrate import apply_all
from oauthctl.components import MIGRATIONS
from tests.support.infra import Infra, infra
from tests.support.stack import Stack, free_port

# A per-test deadline that turns a hang into a failure with every task's stack (see the module).
pytest_plugins = ["tests.support.watchdog"]


@pytest.fixture(scope="session")
def infra_urls() -> Iterator[Infra]:
    with infra() as urls:
        yield urls


@pytest.fixture(scope="session")
async def settings(infra_urls: Infra) -> AsyncIterator[Settings]:
    run_id = uuid.uuid4().hex[:10]
    parts = urlsplit(infra_urls.database_url)
    db_name = f"oauth_test_{run_id}"
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    database_url = urlunsplit(parts._replace(path=f"/{db_name}"))
    await apply_all(database_url, MIGRATIONS, log=lambda m: None)
    gateway_port = free_port()
    s = Settings(
        database_url=database_url,
        redis_url=infra_urls.redis_url,
        redis_prefix=f"test-{run_id}:",
        amqp_url=infra_urls.amqp_url,
        events_exchange=f"test-{run_id}.events",
        token_pepper=secrets.token_urlsafe(48),
        internal_service_token=secrets.token_urlsafe(32),
        public_base_url=f"http://127.0.0.1:{gateway_port}",
        gateway_port=gateway_port,
        authz_port=free_port(),
        token_port=free_port(),
        account_port=free_port(),
        db_pool_min=1,
        db_pool_max=5,
        demo_password="demo-password-for-tests",
        gateway_admin_port=free_port(),
        # The whole suite comes from 127.0.0.1: far above what it sends, so only the tests of the
        # limits themselves (tests/integration/test_gateway_limits.py, with low values) see a 429.
        gateway_rate_limit_pages_per_minute=1_000_000,
        gateway_rate_limit_logins_per_minute=1_000_000,
        gateway_rate_limit_client_per_minute=1_000_000,
        gateway_rate_limit_auth_failures_per_minute=1_000_000,
        gateway_max_connections_per_ip=10_000,
        # Every test signs up from 127.0.0.1 through the gateway; test_accounts.py checks the
        # per-IP limit (REGISTER_MAX_PER_IP) on an instance of its own with the default.
        register_max_per_ip=10_000,
    )
    try:
        yield s
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            db_name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}"')
        await admin.close()
        r = aioredis.Redis.from_url(infra_urls.redis_url)
        keys = [k async for k in r.scan_iter(match=f"test-{run_id}:*", count=1000)]
        if keys:
            await r.delete(*keys)
        await r.aclose()


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    st = Stack(settings)
    await st.start_all()
    yield st
    await st.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session
