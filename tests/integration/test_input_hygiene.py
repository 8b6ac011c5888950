"""Hostile input at the edge of every handler (docs/api.md "Input rules"): values with NUL and
other control characters, lone surrogates, over-long values, wrong JSON types and repeated
parameters get the endpoint's own error form, never a 500 and never a lookup.

The first table is the finding "a NUL byte in a JWT ``kid`` gives an unauthenticated 500" on the
four endpoints that verify access tokens (userinfo, topup, introspect, revoke)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest

from libs.platform.config import Settings
from services.account import apps
from tests.support.codes import ClientApp, make_client
from tests.support.factories import make_developer, make_user
from tests.support.oauth import login
from tests.support.stack import Stack

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, object]) -> str:
    claims = {"sub": "1", "jti": "j", "client_id": "c", "exp": 4102444800, "iat": 1, "scope": "profile"}
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(b"sig")])


# ``kid`` values that are no kid this platform could have minted (RFC 7515 4.1.4).
HOSTILE_KIDS = [
    "k\u0000",
    "\u0000",
    "k\u0001x",
    "k\u007f",
    "k\u0085",  # a C1 control
    "k\nk",
    "k" * 65,
    "k\u202e",  # bidi override: not a control character, but no kid of ours
    "ключ",
    1,
    None,
    ["k"],
]


@pytest.fixture(scope="module")
async def client(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


@pytest.mark.parametrize("kid", HOSTILE_KIDS, ids=repr)
@pytest.mark.parametrize("path", ["/api/oauth2/userinfo", "/api/oauth2/topup"])
async def test_bearer_endpoints_answer_invalid_token_for_a_hostile_kid(
    stack: Stack, http: aiohttp.ClientSession, path: str, kid: object
) -> None:
    token = forged({"alg": "RS256", "typ": "at+jwt", "kid": kid})
    async with http.get(stack.base + path, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 401, await r.text()
        assert r.content_type == "application/json"
        assert (await r.json())["error"] == "invalid_token"
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="oauth", error="invalid_token"')


@pytest.mark.parametrize("kid", HOSTILE_KIDS, ids=repr)
async def test_introspection_of_a_token_with_a_hostile_kid_is_inactive(
    stack: Stack, http: aiohttp.ClientSession, client: ClientApp, kid: object
) -> None:
    form = {"token": forged({"alg": "RS256", "typ": "at+jwt", "kid": kid})}
    form |= {"client_id": client.client_id, "client_secret": client.client_secret or ""}
    async with http.post(stack.base + "/api/oauth2/introspect", data=form, headers=FORM) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"active": False}


@pytest.mark.parametrize("kid", HOSTILE_KIDS, ids=repr)
async def test_revocation_of_a_token_with_a_hostile_kid_is_a_no_op(
    stack: Stack, http: aiohttp.ClientSession, client: ClientApp, kid: object
) -> None:
    form = {"token": forged({"alg": "RS256", "typ": "at+jwt", "kid": kid})}
    form |= {"client_id": client.client_id, "client_secret": client.client_secret or ""}
    async with http.post(stack.base + "/api/oauth2/revoke", data=form, headers=FORM) as r:
        assert r.status == 200, await r.text()


# --- hostile input per endpoint, over a raw socket (so bytes that are not UTF-8 can be sent) -----
async def raw(stack: Stack, request: bytes) -> tuple[int, str, bytes]:
    """Send ``request`` as-is to the gateway; (status, content type, body)."""
    host, port = "127.0.0.1", stack.settings.gateway_port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers.get("content-type", ""), body
    finally:
        writer.close()


def http_request(method: str, target: bytes, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [k.encode() + b": " + v for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Who:
    developer_token: str
    sid: str
    csrf_cookie: str
    csrf_token: str
    client: ClientApp
    app_id: int


@pytest.fixture(scope="module")
async def who(stack: Stack, db: asyncpg.Pool, settings: Settings, client: ClientApp) -> Who:
    developer, devtoken = await make_developer(db, settings)
    new = apps.NewApp("named app", "", ["https://a.example/cb"], "client_secret_post")
    app_id = (await apps.create_app(db, settings.pepper_bytes, developer.id, new, max_apps=10))["id"]
    user = await make_user(db, password="hostile input 1")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await login(http, stack.base, user.username, "hostile input 1")
        async with http.get(stack.base + "/api/user/authorizations") as r:
            csrf_token = r.headers["X-CSRF-Token"]
        cookies = {c.key: c.value for c in http.cookie_jar}
    return Who(devtoken, cookies["sid"], cookies["csrf"], csrf_token, client, app_id)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


NUL_JSON = b'"a\\u0000b"'
# (name, method, target, headers (with {dev}, {sid}, {csrf}, {csrf_token} filled in), body, expected status)
CASES: list[tuple[str, str, bytes, dict[str, bytes], bytes, int]] = [
    # developer API: JSON bodies (wrong types, NUL, over-long) and the bearer header
    (
        "app name NUL",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":' + NUL_JSON + b',"redirect_uri":"https://a.example/cb"}',
        400,
    ),
    (
        "app description NUL",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":"n","description":' + NUL_JSON + b',"redirect_uri":"https://a.example/cb"}',
        400,
    ),
    (
        "app name number",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":1,"redirect_uri":"https://a.example/cb"}',
        400,
    ),
    (
        "app name list",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":["n"],"redirect_uri":"https://a.example/cb"}',
        400,
    ),
    (
        "app redirect_uri number",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":"n","redirect_uri":5}',
        400,
    ),
    (
        "app auth method object",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":"n","redirect_uri":"https://a.example/cb","token_endpoint_auth_method":{"a":1}}',
        400,
    ),
    (
        "app name huge",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        _json({"name": "n" * 5000, "redirect_uri": "https://a.example/cb"}),
        400,
    ),
    (
        "app body not UTF-8",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":"\xff\xfe","redirect_uri":"https://a.example/cb"}',
        400,
    ),
    (
        "app update description NUL",
        "PUT",
        b"/api/oauth_apps/1",
        {"ct": b"application/json"},
        b'{"description":' + NUL_JSON + b"}",
        400,
    ),
    (
        "app update name null does not clear it",
        "PUT",
        b"/api/oauth_apps/{app_id}",
        {"ct": b"application/json"},
        b'{"name":null,"description":"d"}',
        200,
    ),
    ("app update name empty", "PUT", b"/api/oauth_apps/{app_id}", {"ct": b"application/json"}, b'{"name":" "}', 400),
    ("app id not a number", "GET", b"/api/oauth_apps/%00", {}, b"", 404),
    ("app id huge", "GET", b"/api/oauth_apps/" + b"9" * 40, {}, b"", 404),
    ("app id not UTF-8", "GET", b"/api/oauth_apps/%ff", {}, b"", 404),
    ("devtoken not UTF-8", "GET", b"/api/oauth_apps", {"auth": b"Bearer devtoken_\xff\xfe"}, b"", 401),
    (
        "app auth method false",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":"n","redirect_uri":"https://a.example/cb","token_endpoint_auth_method":false}',
        400,
    ),
    (
        "app auth method empty list",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        b'{"name":"n","redirect_uri":"https://a.example/cb","token_endpoint_auth_method":[]}',
        400,
    ),
    (
        "app 11 redirect_uris",
        "POST",
        b"/api/oauth_apps",
        {"ct": b"application/json"},
        _json({"name": "n", "redirect_uris": ["https://a.example/cb"] * 11}),
        400,
    ),
    (
        "devtoken name empty object",
        "POST",
        b"/api/user/developer_token",
        {"session": b"", "csrf": b"{csrf_token}", "ct": b"application/json"},
        b'{"name":{}}',
        400,
    ),
    (
        "devtoken name false",
        "POST",
        b"/api/user/developer_token",
        {"session": b"", "csrf": b"{csrf_token}", "ct": b"application/json"},
        b'{"name":false}',
        400,
    ),
    # user-center API: session cookie, CSRF header, path segment
    ("sid not UTF-8", "GET", b"/api/user/authorizations", {"cookie": b"sid=\xff\xfe" + b"a" * 30}, b"", 401),
    (
        "sid non-ASCII",
        "GET",
        b"/api/user/authorizations",
        {"cookie": "sid=ключключключключключключ".encode()},
        b"",
        401,
    ),
    (
        "csrf header non-ASCII",
        "DELETE",
        b"/api/user/authorizations/x",
        {"session": b"", "csrf": "ключ".encode()},
        b"",
        403,
    ),
    ("csrf header not UTF-8", "DELETE", b"/api/user/authorizations/x", {"session": b"", "csrf": b"\xff\xfe"}, b"", 403),
    (
        "client_id path not UTF-8",
        "DELETE",
        b"/api/user/authorizations/%ff%fe",
        {"session": b"", "csrf": b"{csrf_token}"},
        b"",
        404,
    ),
    (
        "client_id path surrogate",
        "DELETE",
        b"/api/user/authorizations/%ed%a0%80",
        {"session": b"", "csrf": b"{csrf_token}"},
        b"",
        404,
    ),
    (
        "devtoken csrf non-ASCII",
        "POST",
        b"/api/user/developer_token",
        {"session": b"", "csrf": "ключ".encode(), "ct": b"application/json"},
        b"{}",
        403,
    ),
    (
        "devtoken name NUL",
        "POST",
        b"/api/user/developer_token",
        {"session": b"", "csrf": b"{csrf_token}", "ct": b"application/json"},
        b'{"name":' + NUL_JSON + b"}",
        400,
    ),
    (
        "devtoken name number",
        "POST",
        b"/api/user/developer_token",
        {"session": b"", "csrf": b"{csrf_token}", "ct": b"application/json"},
        b'{"name":5}',
        400,
    ),
    (
        "devtoken multipart without boundary",
        "POST",
        b"/api/user/developer_token",
        {"session": b"", "csrf": b"{csrf_token}", "ct": b"multipart/form-data"},
        b"x",
        400,
    ),
    # OAuth endpoints: forms and the authorize query
    (
        "token form not UTF-8",
        "POST",
        b"/api/oauth2/token",
        {"ct": b"application/x-www-form-urlencoded"},
        b"grant_type=%ff",
        400,
    ),
    (
        "token repeated parameter",
        "POST",
        b"/api/oauth2/token",
        {"ct": b"application/x-www-form-urlencoded"},
        b"grant_type=client_credentials&grant_type=client_credentials",
        400,
    ),
    (
        "token Basic not UTF-8",
        "POST",
        b"/api/oauth2/token",
        {"ct": b"application/x-www-form-urlencoded", "auth": b"Basic " + base64.b64encode(b"\xff:\xfe")},
        b"grant_type=client_credentials",
        401,
    ),
    (
        "token Basic NUL",
        "POST",
        b"/api/oauth2/token",
        {"ct": b"application/x-www-form-urlencoded", "auth": b"Basic " + base64.b64encode(b"a%00:b")},
        b"grant_type=client_credentials",
        401,
    ),
    (
        "introspect NUL token",
        "POST",
        b"/api/oauth2/introspect",
        {"ct": b"application/x-www-form-urlencoded"},
        b"token=a%00b",
        400,
    ),
    (
        "revoke repeated token",
        "POST",
        b"/api/oauth2/revoke",
        {"ct": b"application/x-www-form-urlencoded"},
        b"token=a&token=b",
        400,
    ),
    (
        "authorize client_id NUL",
        "GET",
        b"/api/oauth2/authorize?client_id=a%00b&redirect_uri=https://a.example/cb",
        {},
        b"",
        400,
    ),
    (
        "authorize client_id not UTF-8",
        "GET",
        b"/api/oauth2/authorize?client_id=%ff%fe&redirect_uri=https://a.example/cb",
        {},
        b"",
        400,
    ),
    (
        "authorize client_id surrogate",
        "GET",
        b"/api/oauth2/authorize?client_id=%ed%a0%80&redirect_uri=https://a.example/cb",
        {},
        b"",
        400,
    ),
    (
        "authorize client_id huge",
        "GET",
        b"/api/oauth2/authorize?client_id=" + b"c" * 5000 + b"&redirect_uri=https://a.example/cb",
        {},
        b"",
        400,
    ),
    ("authorize repeated client_id", "GET", b"/api/oauth2/authorize?client_id=a&client_id=b", {}, b"", 400),
    ("userinfo bearer not UTF-8", "GET", b"/api/oauth2/userinfo", {"auth": b"Bearer \xff\xfe.\xff.\xff"}, b"", 401),
    ("topup bearer NUL header", "GET", b"/api/oauth2/topup", {"auth": b"Bearer e30.e30.e30"}, b"", 401),
    ("userinfo Origin not UTF-8", "GET", b"/api/oauth2/userinfo", {"origin": b"https://\xff\xfe.example"}, b"", 401),
    (
        "token Origin huge",
        "POST",
        b"/api/oauth2/token",
        {"origin": b"https://" + b"a" * 4000 + b".example", "ct": b"application/x-www-form-urlencoded"},
        b"grant_type=client_credentials",
        400,
    ),
    (
        "CORS preflight refused",
        "OPTIONS",
        b"/api/oauth2/token",
        {"origin": b"https://evil.example", "acrm": b"POST"},
        b"",
        403,
    ),
    # pages: a readable HTML page, never a 500
    (
        "top-up page code NUL",
        "POST",
        b"/user/topup",
        {"session": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&code=a%00b",
        400,
    ),
    ("csrf cookie not UTF-8 on a form page", "GET", b"/login", {"cookie": b"csrf=\xff\xfe"}, b"", 200),
    (
        "login username NUL",
        "POST",
        b"/login",
        {"csrfonly": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&username=a%00b&password=x",
        401,
    ),
    (
        "login username huge",
        "POST",
        b"/login",
        {"csrfonly": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&username=" + b"a" * 20000 + b"&password=x",
        401,
    ),
    (
        "login form not UTF-8",
        "POST",
        b"/login",
        {"csrfonly": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&username=%ff%fe&password=x",
        401,
    ),
    (
        "register username NUL",
        "POST",
        b"/register",
        {"csrfonly": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&username=a%00b&email=a%40b.example&password=long+enough+pw+1&password_confirm=long+enough+pw+1",
        400,
    ),
    (
        "register email C1",
        "POST",
        b"/register",
        {"csrfonly": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&username=abcdef&email=a%C2%85%40b.example&password=long+enough+pw+1&password_confirm=long+enough+pw+1",
        400,
    ),
    (
        "consent request NUL",
        "POST",
        b"/consent",
        {"session": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&decision=allow&request=a%00b",
        400,
    ),
    (
        "developer console app name NUL",
        "POST",
        b"/developer/apps",
        {"session": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&name=a%00b&redirect_uris=https%3A%2F%2Fa.example%2Fcb",
        400,
    ),
    (
        "developer console token name NUL",
        "POST",
        b"/developer/tokens",
        {"session": b"", "ct": b"application/x-www-form-urlencoded"},
        b"csrf_token={csrf_token}&name=a%00b",
        400,
    ),
    ("login multipart without boundary", "POST", b"/login", {"ct": b"multipart/form-data"}, b"x", 400),
    ("authorizations page revoked NUL", "GET", b"/user/authorizations?revoked=a%00b", {"session": b""}, b"", 200),
    (
        "authorizations page revoked repeated",
        "GET",
        b"/user/authorizations?revoked=a&revoked=b",
        {"session": b""},
        b"",
        200,
    ),
    (
        "authorizations page revoked not UTF-8",
        "GET",
        b"/user/authorizations?revoked=%ff%fe",
        {"session": b""},
        b"",
        200,
    ),
]
EXPECTED_TYPE = {"/api/oauth2/": "application/json", "/api/": "application/json", "/": "text/html"}


def _headers(spec: dict[str, bytes], who: Who, client: ClientApp) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in spec.items():
        value = value.replace(b"{csrf_token}", who.csrf_token.encode())
        if key == "ct":
            out["Content-Type"] = value
        elif key == "auth":
            out["Authorization"] = value
        elif key == "cookie":
            out["Cookie"] = value
        elif key == "csrfonly":
            out["Cookie"] = f"csrf={who.csrf_cookie}".encode()
        elif key == "session":
            out["Cookie"] = f"sid={who.sid}; csrf={who.csrf_cookie}".encode()
        elif key == "origin":
            out["Origin"] = value
        elif key == "acrm":
            out["Access-Control-Request-Method"] = value
        elif key == "csrf":
            out["X-CSRF-Token"] = value
    return out


@pytest.mark.parametrize(("name", "method", "target", "headers", "body", "status"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_input_gets_the_endpoint_error_form(
    stack: Stack, who: Who, name: str, method: str, target: bytes, headers: dict[str, bytes], body: bytes, status: int
) -> None:
    path = target.split(b"?")[0].decode("latin-1")
    sent = _headers(headers, who, who.client)
    if path.startswith("/api/oauth_apps") and "Authorization" not in sent:
        sent["Authorization"] = f"Bearer {who.developer_token}".encode()
    if path.startswith(("/api/oauth2/introspect", "/api/oauth2/revoke")) or (
        path == "/api/oauth2/token" and "Authorization" not in sent
    ):
        sent["Authorization"] = b"Basic " + base64.b64encode(
            f"{who.client.client_id}:{who.client.client_secret}".encode()
        )
    body = body.replace(b"{csrf_token}", who.csrf_token.encode())
    target = target.replace(b"{app_id}", str(who.app_id).encode())
    got, content_type, answer = await raw(stack, http_request(method, target, sent, body))
    assert got == status, (got, answer[:300])
    expected = next(t for prefix, t in EXPECTED_TYPE.items() if path.startswith(prefix))
    if path.startswith("/api/oauth2/authorize"):
        expected = "text/html"
    assert content_type.split(";")[0] == expected, (content_type, answer[:300])


async def test_a_null_name_in_an_update_leaves_the_name(
    stack: Stack, http: aiohttp.ClientSession, who: Who, db: asyncpg.Pool
) -> None:
    """JSON null means "not sent" (docs/api.md): it once cleared the name to ""."""
    async with http.put(
        f"{stack.base}/api/oauth_apps/{who.app_id}",
        json={"name": None, "description": "d"},
        headers={"Authorization": f"Bearer {who.developer_token}"},
    ) as r:
        assert r.status == 200, await r.text()
    assert await db.fetchval("SELECT name FROM oauth_apps WHERE id = $1", who.app_id) == "named app"
