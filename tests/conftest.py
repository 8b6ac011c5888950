"""Test fixtures: each test session gets its own Postgres database (created, migrated, dropped),
its own Redis key prefix and its own RabbitMQ exchange, so runs never see each other's data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import asyncpg
import pytest

from libs.platform.config import Settings
from tests.support.infra import Infra, infra
from tests.support.isolated import isolated_settings
from tests.support.stack import Stack

# A per-test deadline that turns a hang into a failure with every task's stack (see the module).
pytest_plugins = ["tests.support.watchdog", "tests.support.mail"]


@pytest.fixture(scope="session")
def infra_urls() -> Iterator[Infra]:
    with infra() as urls:
        yield urls


@pytest.fixture(scope="session")
async def settings(infra_urls: Infra) -> AsyncIterator[Settings]:
    async with isolated_settings(infra_urls) as s:
        yield s


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
