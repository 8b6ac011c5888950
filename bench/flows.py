"""The OAuth flows the benchmark drives over HTTP, the way a browser and a third-party app do:
log in (login page, CSRF, password), authorize (one-click), exchange the code, refresh, revoke."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import aiohttp
import orjson

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class App:
    client_id: str
    client_secret: str
    redirect_uri: str


@dataclass
class BenchConfig:
    """What the driver process needs (written by the orchestrator as JSON)."""

    base: str
    username: str
    password: str
    web: App  # the third-party app of the authorization_code flow
    internal: App  # the internal app (client_credentials, introspection)
    scope: str = "openid profile balance"  # openid: an id_token too, as the peer signs
    peer: bool = False  # the peer (oidc-provider's paths and its development login), not ours

    @property
    def authorize_url(self) -> str:
        return f"{self.base}/auth" if self.peer else f"{self.base}/api/oauth2/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base}/token" if self.peer else f"{self.base}/api/oauth2/token"

    def to_json(self) -> bytes:
        return orjson.dumps(self, default=lambda o: o.__dict__)

    @classmethod
    def from_json(cls, raw: bytes) -> BenchConfig:
        d = orjson.loads(raw)
        return cls(
            base=d["base"],
            username=d["username"],
            password=d["password"],
            web=App(**d["web"]),
            internal=App(**d["internal"]),
            scope=d.get("scope", "openid profile balance"),
            peer=bool(d.get("peer", False)),
        )


class FlowError(RuntimeError):
    pass


def new_session(limit: int = 100) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def login(http: aiohttp.ClientSession, cfg: BenchConfig) -> None:
    if cfg.peer:
        await peer_login(http, cfg)
        return
    async with http.get(f"{cfg.base}/login", allow_redirects=False) as r:
        page = await r.text()
        if r.status != 200:
            raise FlowError(f"GET /login answered {r.status}")
    m = CSRF_RE.search(page)
    if not m:
        raise FlowError("no CSRF token on the login page")
    data = {"csrf_token": unescape(m.group(1)), "username": cfg.username, "password": cfg.password}
    async with http.post(f"{cfg.base}/login", data=data, allow_redirects=False) as r:
        if r.status != 302:
            raise FlowError(f"POST /login answered {r.status}: {(await r.text())[:300]}")


def authorize_params(cfg: BenchConfig) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": cfg.web.client_id,
        "redirect_uri": cfg.web.redirect_uri,
        "scope": cfg.scope,
        "state": secrets.token_urlsafe(12),
    }
    if not cfg.peer:
        params["auto_authorize"] = "true"
    return params


FORM_ACTION_RE = re.compile(r'<form[^>]*action="([^"]+)"')
PROMPT_RE = re.compile(r'name="prompt" value="([a-z]+)"')


async def peer_login(http: aiohttp.ClientSession, cfg: BenchConfig) -> None:
    """The peer's development interactions (devInteractions: any login and password), once: log in
    and consent; the session cookie and the grant it leaves make later authorize requests answer
    with a code at once. The first code is exchanged, as a real client would."""
    url: str = cfg.authorize_url + "?" + urlencode(authorize_params(cfg))
    for _ in range(12):
        async with http.get(url, allow_redirects=False) as r:
            page = await r.text()
            location = r.headers.get("Location", "")
        if r.status in (302, 303):
            if location.startswith(cfg.web.redirect_uri):
                query = dict(parse_qsl(urlsplit(location).query))
                if "code" not in query:
                    raise FlowError(f"peer login ended without a code: {location[:200]}")
                await exchange(http, cfg, query["code"])
                return
            url = urljoin(url, location)
            continue
        action, prompt = FORM_ACTION_RE.search(page), PROMPT_RE.search(page)
        if r.status != 200 or not action or not prompt:
            raise FlowError(f"peer interaction answered {r.status}: {page[:200]}")
        form = {"prompt": prompt.group(1)}
        if form["prompt"] == "login":
            form |= {"login": cfg.username, "password": cfg.password}
        async with http.post(urljoin(url, unescape(action.group(1))), data=form, allow_redirects=False) as r:
            await r.read()
            if r.status not in (302, 303):
                raise FlowError(f"peer interaction submit answered {r.status}")
            url = urljoin(url, r.headers["Location"])
    raise FlowError("peer login: too many steps")


async def authorize(http: aiohttp.ClientSession, cfg: BenchConfig) -> str:
    """GET the authorize endpoint as the logged-in browser; the code from the redirect."""
    params = authorize_params(cfg)
    async with http.get(cfg.authorize_url, params=params, allow_redirects=False) as r:
        location = r.headers.get("Location", "")
        await r.read()
    if r.status not in (302, 303) or not location.startswith(cfg.web.redirect_uri):
        raise FlowError(f"authorize answered {r.status} {location[:200]}")
    query = dict(parse_qsl(urlsplit(location).query))
    if "code" not in query or query.get("state") != params["state"]:
        raise FlowError(f"authorize redirected without a code: {location[:200]}")
    return query["code"]


async def post_form(http: aiohttp.ClientSession, url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with http.post(url, data=form, headers=FORM) as r:
        raw = await r.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {"raw": raw[:200].decode(errors="replace")}
    return r.status, body if isinstance(body, dict) else {"body": body}


async def exchange(http: aiohttp.ClientSession, cfg: BenchConfig, code: str) -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": cfg.web.redirect_uri,
        "client_id": cfg.web.client_id,
        "client_secret": cfg.web.client_secret,
    }
    status, body = await post_form(http, cfg.token_url, form)
    if status != 200 or "access_token" not in body:
        raise FlowError(f"code exchange answered {status}: {body}")
    return body


async def code_flow(http: aiohttp.ClientSession, cfg: BenchConfig) -> dict[str, Any]:
    """authorize + token: a fresh token pair for the web app's user."""
    return await exchange(http, cfg, await authorize(http, cfg))


def client_credentials_form(app: App, scope: str = "quota:read") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "scope": scope,
    }
