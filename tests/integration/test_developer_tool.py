"""The developer console's integration test tool (services/account/developer_tool.py): the page,
adding the tool's callback URL, the tool exchange (PKCE, no secret, only for that callback), and the
copy-paste snippets, of which the Python, Node.js and curl ones are run against the stack."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from html import unescape
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from libs.oauth.clients import tool_callback_url
from libs.platform.config import Settings
from tests.support.codes import pkce_pair
from tests.support.factories import make_developer
from tests.support.oauth import authorize, login, make_app
from tests.support.stack import Stack

CB = "http://localhost:3000/oauth/callback"
PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def developer(stack: Stack, db: asyncpg.Pool, settings: Settings):  # type: ignore[no-untyped-def]
    owner, _ = await make_developer(db, settings)
    client_id, secret = await make_app(db, settings, owner.id, [CB], name="Tool app")
    app_id = await db.fetchval("SELECT id FROM oauth_apps WHERE client_id = $1", client_id)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await login(http, stack.base, owner.username, PASSWORD)
        yield http, app_id, client_id, secret


async def tool_page(http: aiohttp.ClientSession, base: str, app_id: int, lang: str = "en") -> tuple[int, str]:
    async with http.get(f"{base}/developer/apps/{app_id}/test?lang={lang}") as r:
        return r.status, await r.text()


async def add_callback(http: aiohttp.ClientSession, base: str, app_id: int) -> None:
    _, page = await tool_page(http, base, app_id)
    token = CSRF_RE.search(page).group(1)  # type: ignore[union-attr]
    async with http.post(f"{base}/developer/apps/{app_id}/tool-callback", data={"csrf_token": token}) as r:
        assert r.status == 200 and str(r.url).endswith(f"/developer/apps/{app_id}/test")


async def test_tool_page_and_adding_its_callback(stack: Stack, db, settings, developer) -> None:
    http, app_id, client_id, _ = developer
    status, page = await tool_page(http, stack.base, app_id)
    callback = tool_callback_url(settings.public_base_url)
    assert status == 200 and 'id="add-callback"' in page and callback in page and 'id="tool"' not in page
    assert 'src="/developer/static/tool.js"' in page and "<script>" not in page  # CSP: no inline script
    for key in ("curl", "python", "node", "php", "java", "go", "csharp", "ruby"):
        assert f'id="snippet-{key}"' in page
    assert "client_secret" in page and "secret_" not in page  # the snippets read it from the environment
    await add_callback(http, stack.base, app_id)
    await add_callback(http, stack.base, app_id)  # idempotent
    uris = await db.fetchval("SELECT redirect_uris FROM oauth_apps WHERE id = $1", app_id)
    assert uris == [CB, callback]
    status, page = await tool_page(http, stack.base, app_id, lang="zh")
    assert (
        status == 200 and 'id="tool"' in page and "授权流程测试工具" in page and f'data-client-id="{client_id}"' in page
    )
    async with http.get(f"{stack.base}/developer/static/tool.js") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    async with http.get(f"{stack.base}{callback[len(settings.public_base_url) :]}?code=x&state=y") as r:
        assert r.status == 200 and "tool-callback" in await r.text()


async def test_tool_pages_are_the_owners_only(stack: Stack, db, settings, developer) -> None:
    _, app_id, _, _ = developer
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        someone, _ = await make_developer(db, settings)
        await login(other, stack.base, someone.username, PASSWORD)
        assert (await tool_page(other, stack.base, app_id))[0] == 404
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{stack.base}/developer/apps/{app_id}/test", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"].startswith("/login")


async def _token(http: aiohttp.ClientSession, base: str, form: dict[str, str]) -> tuple[int, dict]:
    async with http.post(f"{base}/api/oauth2/token", data=form) as r:
        return r.status, await r.json()


async def test_tool_exchange_needs_pkce_and_the_tools_callback(stack: Stack, settings, developer) -> None:
    http, app_id, client_id, secret = developer
    await add_callback(http, stack.base, app_id)
    callback = tool_callback_url(settings.public_base_url)
    verifier, challenge = pkce_pair()
    params = await authorize(
        http,
        stack.base,
        client_id,
        callback,
        scope="openid profile",
        code_challenge=challenge,
        code_challenge_method="S256",
        nonce="n1",
    )
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": callback,
        "client_id": client_id,
    }
    status, body = await _token(http, stack.base, form)  # no verifier: refused, code not burned
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await _token(http, stack.base, form | {"code_verifier": verifier})
    assert status == 200 and body["access_token"] and body["id_token"], body
    # Without PKCE there is no tool exchange: a confidential client needs its secret.
    params = await authorize(http, stack.base, client_id, callback, scope="profile")
    form["code"] = params["code"]
    assert (await _token(http, stack.base, form))[0] == 400
    # Any other redirect URI: the client authenticates as usual.
    verifier, challenge = pkce_pair()
    params = await authorize(http, stack.base, client_id, CB, code_challenge=challenge, code_challenge_method="S256")
    other = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": CB, "client_id": client_id}
    status, body = await _token(http, stack.base, other | {"code_verifier": verifier})
    assert (status, body["error"]) == (401, "invalid_client")
    assert (await _token(http, stack.base, other | {"code_verifier": verifier, "client_secret": secret}))[0] == 200


async def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, env={**os.environ, **env}, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, (argv, out.decode(), err.decode())
    return out.decode()


@pytest.mark.parametrize("language", ["curl", "python", "node"])
async def test_snippets_run_against_the_stack(stack: Stack, tmp_path: Path, developer, language: str) -> None:
    http, app_id, client_id, secret = developer
    _, page = await tool_page(http, stack.base, app_id)
    code_block = re.search(rf'id="snippet-{language}">(.*?)</pre>', page, re.S)
    assert code_block, language
    source = unescape(code_block.group(1))
    params = await authorize(http, stack.base, client_id, CB, scope="profile balance")
    env = {"CODE": params["code"], "CLIENT_SECRET": secret}
    files = {"curl": "snippet.sh", "python": "snippet.py", "node": "snippet.mjs"}
    (tmp_path / files[language]).write_text(source)
    runner = {
        "curl": [shutil.which("bash") or "bash"],
        "python": [sys.executable],
        "node": [shutil.which("node") or "node"],
    }
    out = await _run([*runner[language], files[language]], env, tmp_path)
    token_line, userinfo_line = [line for line in out.splitlines() if line.strip()][-2:]
    tokens, user = json.loads(token_line), json.loads(userinfo_line)
    assert tokens["token_type"] == "Bearer" and tokens["access_token"] and tokens["refresh_token"], out
    assert user["username"] and "balance" in json.dumps(user), out


async def test_public_client_snippet_uses_pkce(stack: Stack, db, settings, tmp_path: Path) -> None:
    owner, _ = await make_developer(db, settings)
    client_id, secret = await make_app(db, settings, owner.id, [CB], name="SPA", token_endpoint_auth_method="none")
    assert secret is None
    app_id = await db.fetchval("SELECT id FROM oauth_apps WHERE client_id = $1", client_id)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await login(http, stack.base, owner.username, PASSWORD)
        _, page = await tool_page(http, stack.base, app_id)
        source = unescape(re.search(r'id="snippet-python">(.*?)</pre>', page, re.S).group(1))  # type: ignore[union-attr]
        assert "client_secret" not in source and "CODE_VERIFIER" in source
        verifier, challenge = pkce_pair()
        params = await authorize(
            http, stack.base, client_id, CB, code_challenge=challenge, code_challenge_method="S256"
        )
    (tmp_path / "snippet.py").write_text(source)
    out = await _run([sys.executable, "snippet.py"], {"CODE": params["code"], "CODE_VERIFIER": verifier}, tmp_path)
    assert json.loads(out.splitlines()[-1])["username"] == owner.username
