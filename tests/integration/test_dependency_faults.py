"""Redis or PostgreSQL cut, blackholed or slow, in front of one authz, token and account instance
each (docs/operations.md "Failure modes"): every public endpoint answers within 2 s with a correct
result or a clean 503 in its protocol's style (never text/plain, never a 500), what can be served
without the dependency is served, and everything recovers by itself when the dependency returns."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from libs.platform.config import Settings
from services.account import store as account_store
from services.account.emails import skeleton
from tests.support.codes import ClientApp, make_client, obtain_tokens, refresh_form
from tests.support.events import TcpProxy, Watcher, scratch_database
from tests.support.factories import make_developer, make_user
from tests.support.oauth import CSRF_RE, form_value
from tests.support.stack import Stack, extra_instance

ANSWER_WITHIN_SECONDS = 2.0
# Smaller than the defaults (a query 1 s, a connection or cancel request 0.75 s) so that a loaded
# test machine still shows the bound with room to spare.
TIGHT = {"db_command_timeout_seconds": 0.5, "db_connect_timeout_seconds": 0.5, "db_acquire_timeout_seconds": 0.5}
PASSWORD = "correct horse battery"


@dataclass
class Answer:
    name: str
    status: int
    content_type: str
    headers: dict[str, str]
    body: str
    elapsed: float


@dataclass
class Instances:
    authz: str
    token: str
    account: str


@dataclass
class Fixture:
    app: ClientApp
    tokens: dict[str, Any]
    dev_token: str
    username: str


Probe = Callable[[aiohttp.ClientSession, Instances, Fixture], Awaitable[aiohttp.ClientResponse]]


def _probes() -> dict[str, tuple[str, Probe]]:
    """Every public endpoint family: name -> (error style, request)."""

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def client_form(f: Fixture, **extra: str) -> dict[str, str]:
        return {"client_id": f.app.client_id, "client_secret": f.app.client_secret or "", **extra}

    authorize = "/api/oauth2/authorize?response_type=code&scope=profile&state=s&client_id={}&redirect_uri={}"
    return {
        "userinfo": ("oauth", lambda h, i, f: h.get(f"{i.account}/api/oauth2/userinfo", headers=bearer(f.tokens["access_token"]))),
        "introspect": ("oauth", lambda h, i, f: h.post(f"{i.token}/api/oauth2/introspect", data=client_form(f, token=f.tokens["access_token"]))),
        "token": ("oauth", lambda h, i, f: h.post(f"{i.token}/api/oauth2/token", data=refresh_form(f.app, f.tokens["refresh_token"]))),
        "revoke": ("oauth", lambda h, i, f: h.post(f"{i.token}/api/oauth2/revoke", data=client_form(f, token="refresh_unknown"))),
        "discovery": ("oauth", lambda h, i, f: h.get(f"{i.token}/.well-known/openid-configuration")),
        "jwks": ("oauth", lambda h, i, f: h.get(f"{i.token}/api/oauth2/jwks")),
        "authorize": ("oauth", lambda h, i, f: h.get(i.authz + authorize.format(f.app.client_id, f.app.redirect_uri), allow_redirects=False)),
        "apps": ("envelope", lambda h, i, f: h.get(f"{i.account}/api/oauth_apps", headers=bearer(f.dev_token))),
        "login page": ("page", lambda h, i, f: h.get(f"{i.authz}/login")),
        "user center": ("page", lambda h, i, f: h.get(f"{i.account}/user", allow_redirects=False)),
        "register page": ("page", lambda h, i, f: h.get(f"{i.account}/register")),
        "spend allowance": ("oauth", lambda h, i, f: h.get(f"{i.account}/api/oauth2/spend", headers=bearer(f.tokens["access_token"]))),
        "spend charge": ("oauth", lambda h, i, f: h.post(f"{i.account}/api/oauth2/spend", json={"amount": 1, "idempotency_key": "k"}, headers=bearer(f.tokens["access_token"]))),
        "device authorization": ("oauth", lambda h, i, f: h.post(f"{i.token}/api/oauth2/device_authorization", data=client_form(f))),
        "device page": ("page", lambda h, i, f: h.get(f"{i.authz}/device", allow_redirects=False)),
    }  # fmt: skip


PROBES = _probes()


async def ask(http: aiohttp.ClientSession, name: str, instances: Instances, fx: Fixture) -> Answer:
    _, probe = PROBES[name]
    started = time.monotonic()
    async with await probe(http, instances, fx) as r:
        body = await r.text()
        return Answer(name, r.status, r.content_type, dict(r.headers), body, time.monotonic() - started)


async def login(http: aiohttp.ClientSession, instances: Instances, fx: Fixture) -> Answer:
    """The real login: the page's CSRF token, then the form (sessions and rate limits need Redis)."""
    started = time.monotonic()
    async with http.get(f"{instances.authz}/login") as r:
        page = await r.text()
    if r.status != 200:
        return Answer("login", r.status, r.content_type, dict(r.headers), page, time.monotonic() - started)
    form = {"username": fx.username, "password": PASSWORD, "csrf_token": form_value(page, CSRF_RE)}
    async with http.post(f"{instances.authz}/login", data=form, allow_redirects=False) as r:
        return Answer("login", r.status, r.content_type, dict(r.headers), await r.text(), time.monotonic() - started)


def assert_clean(answer: Answer, style: str) -> None:
    """A correct result or a clean 503 in the protocol's style, in time."""
    where = f"{answer.name}: {answer.status} {answer.content_type} {answer.body[:200]!r}"
    assert answer.elapsed < ANSWER_WITHIN_SECONDS, f"{where} after {answer.elapsed:.2f}s"
    assert answer.status < 400 or answer.content_type != "text/plain", where  # redirects: aiohttp's body
    assert answer.status < 500 or answer.status == 503, where
    if answer.status != 503:
        return
    assert answer.headers.get("Retry-After") == "1", where
    if style == "oauth":
        assert answer.content_type == "application/json" and '"temporarily_unavailable"' in answer.body, where
    elif style == "envelope":
        assert answer.content_type == "application/json" and '"success":false' in answer.body, where
    else:
        assert answer.content_type == "text/html" and "服务暂时不可用" in answer.body, where


@contextlib.asynccontextmanager
async def behind_proxy(stack: Stack, settings: Settings, dependency: str) -> AsyncIterator[tuple[TcpProxy, Instances]]:
    setting = {"redis": "redis_url", "postgres": "database_url"}[dependency]
    real = getattr(settings, setting)
    async with TcpProxy.for_url(real) as proxy, contextlib.AsyncExitStack() as started:
        bases = {}
        for service in ("authz", "token", "account"):
            base, _ = await started.enter_async_context(
                extra_instance(stack, service, settings, **{setting: proxy.url(real)}, **TIGHT)
            )
            bases[service] = base
        started.callback(proxy.heal)  # first on the way out: the instances shut down cleanly
        yield proxy, Instances(**bases)


@pytest.fixture
async def fx(stack: Stack, http, db: asyncpg.Pool, settings: Settings) -> Fixture:
    app = await make_client(db, settings)
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    _, dev_token = await make_developer(db, settings)
    user = await make_user(db, PASSWORD)
    return Fixture(app, tokens, dev_token, user.username)


async def fail(proxy: TcpProxy, mode: str) -> None:
    if mode == "cut":
        await proxy.close()
    elif mode == "blackhole":
        proxy.blackhole()
    else:
        proxy.slow(0.3)


async def recover(proxy: TcpProxy, mode: str) -> None:
    proxy.heal()
    if mode == "cut":
        await proxy.open()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=10)  # a hung request fails the test instead of hanging it
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=timeout) as session:
        yield session


@pytest.mark.parametrize("mode", ["cut", "blackhole", "slow"])
@pytest.mark.parametrize("dependency", ["redis", "postgres"])
async def test_every_endpoint_answers_in_time_and_recovers(stack: Stack, http, settings, fx, dependency, mode) -> None:
    async with behind_proxy(stack, settings, dependency) as (proxy, instances):
        healthy = await ask(http, "userinfo", instances, fx)
        assert healthy.status == 200, healthy
        await fail(proxy, mode)
        answers = {}
        for name, (style, _) in PROBES.items():
            answers[name] = await ask(http, name, instances, fx)
            assert_clean(answers[name], style)
        answers["login"] = await login(http, instances, fx)
        assert_clean(answers["login"], "page")
        if dependency == "redis":  # served without Redis (the revocation check asks PostgreSQL)
            assert answers["userinfo"].status == 200 and answers["introspect"].status == 200
            assert '"active":true' in answers["introspect"].body
        if mode != "slow":  # a dependency that is gone shows: something answered 503
            assert any(a.status == 503 for a in answers.values()), answers

        await recover(proxy, mode)

        async def all_well() -> bool:
            userinfo = await ask(http, "userinfo", instances, fx)
            apps = await ask(http, "apps", instances, fx)
            logged_in = await login(http, instances, fx)
            return userinfo.status == 200 and apps.status == 200 and logged_in.status == 302

        await until_async(all_well, within=15)


async def until_async(predicate: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("did not recover in time")


# --- nothing lost across an outage -----------------------------------------------------------------
async def credit(http: aiohttp.ClientSession, base: str, settings: Settings, user_id: int, key: str) -> int:
    body = {"user_id": user_id, "amount": 1, "idempotency_key": key, "reason": "outage-test"}
    headers = {"Authorization": f"Bearer {settings.internal_service_token}"}
    async with http.post(f"{base}/internal/quota/credit", json=body, headers=headers) as r:
        await r.read()
        assert r.status in (200, 503), r.status
        return r.status


async def test_no_event_and_no_balance_change_is_lost_across_outages(http, settings: Settings) -> None:
    """One account instance alone on a scratch database (so its relay is the only publisher):
    credits while RabbitMQ is cut, then while PostgreSQL is blackholed and cut. Every credit that
    answered 200 is applied once, every 503 is retried after recovery with its idempotency key,
    and every event reaches the exchange."""
    async with (
        scratch_database(settings) as url,
        TcpProxy.for_url(url) as pg,
        TcpProxy.for_url(settings.amqp_url) as mq,
        Watcher(settings, ["quota.changed"]) as watcher,
    ):
        scratch = await asyncpg.connect(url)
        try:
            user = await create_user_on(scratch)
            stack = Stack(settings)
            overrides = {"database_url": pg.url(url), "amqp_url": mq.url(settings.amqp_url), **TIGHT}
            async with extra_instance(stack, "account", settings, **overrides) as (base, _):
                await mq.close()  # RabbitMQ cut: credits are served, events wait in the outbox
                outcomes = {f"k{i}": await credit(http, base, settings, user, f"k{i}") for i in range(5)}
                assert set(outcomes.values()) == {200}
                pg.blackhole()
                outcomes |= {f"k{i}": await credit(http, base, settings, user, f"k{i}") for i in range(5, 10)}
                pg.heal()
                await pg.close()
                outcomes |= {f"k{i}": await credit(http, base, settings, user, f"k{i}") for i in range(10, 15)}
                assert 503 in outcomes.values()
                await pg.open()
                await mq.open()
                for key, status in outcomes.items():
                    while status != 200:  # the client retries with the same key
                        await asyncio.sleep(0.2)
                        status = await credit(http, base, settings, user, key)
                ids = {
                    str(r["id"])
                    for r in await scratch.fetch("SELECT id FROM event_outbox WHERE type = 'quota.changed'")
                }
                for _ in range(150):
                    if ids <= set(watcher.ids()):
                        break
                    await asyncio.sleep(0.1)
            assert await scratch.fetchval("SELECT quota FROM users WHERE id = $1", user) == 15
            assert await scratch.fetchval("SELECT count(*) FROM quota_operations") == 15
            assert len(ids) == 15 and ids <= set(watcher.ids())
            unpublished = "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
            assert await scratch.fetchval(unpublished) == 0
        finally:
            await scratch.close()


async def create_user_on(conn: asyncpg.Connection) -> int:
    row = await account_store.insert_user(conn, "outage", "o@example.com", skeleton("o@example.com"), "x")
    return int(row["id"])
