"""The developer API for OAuth apps, through the gateway, against real Postgres (guide section 2)."""

from __future__ import annotations

import hashlib
import hmac

import aiohttp
import asyncpg
import pytest

from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from services.account import store as account_store
from tests.support.factories import make_developer
from tests.support.stack import Stack

GUIDE_BODY = {
    "name": "我的第三方应用",
    "description": "应用描述信息",
    "redirect_uri": "https://yourapp.com/oauth/callback",
}


@pytest.fixture
async def dev(db: asyncpg.Pool, settings: Settings) -> tuple[int, dict[str, str]]:
    user, token = await make_developer(db, settings)
    return user.id, {"Authorization": f"Bearer {token}"}


async def create(http: aiohttp.ClientSession, stack: Stack, headers: dict[str, str], body: object = GUIDE_BODY):
    async with http.post(f"{stack.base}/api/oauth_apps", json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_create_returns_the_guides_shape(stack: Stack, http, dev, db, settings) -> None:
    status, body = await create(http, stack, dev[1])
    assert status == 200
    assert body["success"] is True
    assert body["message"] == "应用创建成功"
    data = body["data"]
    for field in ("id", "name", "client_id", "client_secret", "redirect_uri", "created_time"):
        assert field in data
    assert isinstance(data["id"], int) and isinstance(data["created_time"], int)
    assert data["name"] == "我的第三方应用"
    assert data["redirect_uri"] == "https://yourapp.com/oauth/callback"
    assert data["client_id"].startswith("client_") and len(data["client_id"]) >= len("client_") + 32
    assert data["client_secret"].startswith("secret_") and len(data["client_secret"]) >= len("secret_") + 43

    # The secret is stored only as HMAC-SHA256(pepper, secret), never in clear.
    row = await db.fetchrow("SELECT * FROM oauth_apps WHERE id = $1", data["id"])
    stored = [str(v) for v in dict(row).values()]
    assert not any(data["client_secret"] in v for v in stored)
    expected = hmac.new(settings.pepper_bytes, data["client_secret"].encode(), hashlib.sha256).digest()
    assert bytes(row["client_secret_hash"]) == expected


async def test_secret_is_shown_once(stack: Stack, http, dev) -> None:
    _, body = await create(http, stack, dev[1])
    app_id = body["data"]["id"]
    async with http.get(f"{stack.base}/api/oauth_apps/{app_id}", headers=dev[1]) as r:
        got = await r.json()
    assert r.status == 200 and "client_secret" not in got["data"]
    async with http.get(f"{stack.base}/api/oauth_apps", headers=dev[1]) as r:
        listed = await r.json()
    assert r.status == 200
    assert all("client_secret" not in a for a in listed["data"])
    assert app_id in [a["id"] for a in listed["data"]]


async def test_list_get_update_delete(stack: Stack, http, dev) -> None:
    _, body = await create(http, stack, dev[1])
    app_id = body["data"]["id"]
    url = f"{stack.base}/api/oauth_apps/{app_id}"
    async with http.put(
        url,
        json={"name": "Renamed", "redirect_uris": ["https://a.example/cb", "http://localhost:3000/cb"]},
        headers=dev[1],
    ) as r:
        upd = await r.json()
    assert r.status == 200 and upd["success"] is True
    assert upd["data"]["name"] == "Renamed"
    assert upd["data"]["description"] == "应用描述信息"
    assert upd["data"]["redirect_uris"] == ["https://a.example/cb", "http://localhost:3000/cb"]
    async with http.get(url, headers=dev[1]) as r:
        assert (await r.json())["data"]["name"] == "Renamed"
    async with http.delete(url, headers=dev[1]) as r:
        assert r.status == 200 and (await r.json())["success"] is True
    async with http.get(url, headers=dev[1]) as r:
        gone = await r.json()
    assert r.status == 404 and gone == {"success": False, "message": "app not found", "data": None}
    async with http.delete(url, headers=dev[1]) as r:
        assert r.status == 404


async def test_rotate_secret(stack: Stack, http, dev, db, settings) -> None:
    _, body = await create(http, stack, dev[1])
    old = body["data"]["client_secret"]
    app_id = body["data"]["id"]
    async with http.post(f"{stack.base}/api/oauth_apps/{app_id}/secret", headers=dev[1]) as r:
        rot = await r.json()
    assert r.status == 200 and rot["success"] is True
    new = rot["data"]["client_secret"]
    assert new.startswith("secret_") and new != old
    assert rot["data"]["client_id"] == body["data"]["client_id"]
    stored = await db.fetchval("SELECT client_secret_hash FROM oauth_apps WHERE id = $1", app_id)
    assert bytes(stored) == hmac.new(settings.pepper_bytes, new.encode(), hashlib.sha256).digest()


async def test_changes_write_events_to_the_outbox(stack: Stack, http, dev, db) -> None:
    _, body = await create(http, stack, dev[1])
    app_id, client_id = body["data"]["id"], body["data"]["client_id"]
    async with http.post(f"{stack.base}/api/oauth_apps/{app_id}/secret", headers=dev[1]):
        pass
    async with http.delete(f"{stack.base}/api/oauth_apps/{app_id}", headers=dev[1]):
        pass
    rows = await db.fetch("SELECT type FROM event_outbox WHERE data->>'client_id' = $1 ORDER BY occurred_at", client_id)
    assert [r["type"] for r in rows] == ["client.updated", "client.secret_rotated", "client.deleted"]


async def test_another_developers_app_is_404(stack: Stack, http, dev, db, settings) -> None:
    _, body = await create(http, stack, dev[1])
    app_id = body["data"]["id"]
    _, other = await make_developer(db, settings)
    h = {"Authorization": f"Bearer {other}"}
    base = f"{stack.base}/api/oauth_apps/{app_id}"
    for method, url in (("GET", base), ("PUT", base), ("DELETE", base), ("POST", base + "/secret")):
        async with http.request(method, url, headers=h, json={"name": "x"}) as r:
            assert r.status == 404, method
            assert (await r.json())["success"] is False
    async with http.get(f"{stack.base}/api/oauth_apps", headers=h) as r:
        assert (await r.json())["data"] == []
    # and the app is untouched
    async with http.get(base, headers=dev[1]) as r:
        assert r.status == 200 and (await r.json())["data"]["name"] == GUIDE_BODY["name"]


@pytest.mark.parametrize("app_id", ["abc", "-1", "1.5", "99999999999999999999", "0x10", "%27%20OR%201=1"])
async def test_malformed_app_id_is_404(stack: Stack, http, dev, app_id) -> None:
    async with http.get(f"{stack.base}/api/oauth_apps/{app_id}", headers=dev[1]) as r:
        assert r.status == 404
        assert (await r.json())["success"] is False


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer two tokens"},
        {"Authorization": "Bearer devtoken_unknown"},
        {"Authorization": "Bearer ' OR '1'='1"},
        {"Authorization": "Bearer 令牌"},
    ],
)
async def test_bad_developer_token_is_401_envelope(stack: Stack, http, headers) -> None:
    async with http.post(f"{stack.base}/api/oauth_apps", json=GUIDE_BODY, headers=headers) as r:
        body = await r.json()
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["success"] is False and body["data"] is None and body["message"]


async def test_revoked_developer_token_is_401(stack: Stack, http, db, settings) -> None:
    from services.account.developer_tokens import create_developer_token, revoke_developer_token
    from tests.support.factories import make_user

    user = await make_user(db)
    token, rec = await create_developer_token(db, settings.pepper_bytes, user.id)
    h = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{stack.base}/api/oauth_apps", headers=h) as r:
        assert r.status == 200
    assert await revoke_developer_token(db, rec.id)
    async with http.get(f"{stack.base}/api/oauth_apps", headers=h) as r:
        assert r.status == 401
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


async def test_disabled_users_developer_token_is_401(stack: Stack, http, db, settings) -> None:
    user, token = await make_developer(db, settings)
    await account_store.set_user_status(db, user.id, UserStatus.DISABLED)
    async with http.get(f"{stack.base}/api/oauth_apps", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 401


INVALID = [
    ({"name": "x", "redirect_uri": "ftp://yourapp.com/cb"}, "https"),
    ({"name": "x", "redirect_uri": "http://yourapp.com/cb"}, "https"),
    ({"name": "x", "redirect_uri": "https://yourapp.com/cb#frag"}, "fragment"),
    ({"name": "x", "redirect_uri": "https://yourapp.com/cb#"}, "fragment"),
    ({"name": "x", "redirect_uri": "/oauth/callback"}, "absolute"),
    ({"name": "x", "redirect_uri": "yourapp.com/cb"}, "absolute"),
    ({"name": "x", "redirect_uri": "https://user:pw@yourapp.com/cb"}, "user information"),
    ({"name": "x", "redirect_uri": "https://*.yourapp.com/cb"}, "wildcard"),
    ({"name": "x", "redirect_uri": "https://yourapp.com:99999/cb"}, "valid"),
    ({"name": "x", "redirect_uri": "https://yourapp.com/c b"}, "spaces"),
    ({"name": "x", "redirect_uri": "javascript:alert(1)"}, "absolute"),
    ({"name": "x", "redirect_uri": "https://a.example/" + "a" * 2100}, "characters"),
    ({"name": "x", "redirect_uri": ""}, "characters"),
    ({"name": "x", "redirect_uri": 42}, "string"),
    ({"name": "x", "redirect_uris": "https://a.example/cb"}, "list"),
    ({"name": "x", "redirect_uris": [1]}, "string"),
    ({"name": "x", "redirect_uris": [f"https://a.example/{i}" for i in range(11)]}, "at most 10"),
    ({"name": "x"}, "redirect_uri is required"),
    ({"redirect_uri": "https://a.example/cb"}, "name is required"),
    ({"name": "", "redirect_uri": "https://a.example/cb"}, "name must not be empty"),
    ({"name": "   ", "redirect_uri": "https://a.example/cb"}, "name must not be empty"),
    ({"name": "n" * 101, "redirect_uri": "https://a.example/cb"}, "at most 100"),
    ({"name": 123, "redirect_uri": "https://a.example/cb"}, "name must be a string"),
    ({"name": ["x"], "redirect_uri": "https://a.example/cb"}, "name must be a string"),
    ({"name": "a\x00b", "redirect_uri": "https://a.example/cb"}, "control"),
    ({"name": "x", "description": 5, "redirect_uri": "https://a.example/cb"}, "description must be a string"),
    ({"name": "x", "description": "d" * 1001, "redirect_uri": "https://a.example/cb"}, "at most 1000"),
    ({"name": "x", "redirect_uri": "https://a.example/cb", "admin": True}, "unknown field"),
    ({"name": "x", "redirect_uri": "https://a.example/cb", "token_endpoint_auth_method": "magic"}, "one of"),
    (["name", "x"], "JSON object"),
    ("just a string", "JSON object"),
]


@pytest.mark.parametrize(("body", "fragment"), INVALID)
async def test_validation_errors(stack: Stack, http, dev, body, fragment) -> None:
    status, got = await create(http, stack, dev[1], body)
    assert status == 400, got
    assert got["success"] is False and got["data"] is None
    assert fragment in got["message"]


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:3000/oauth/callback",
        "http://127.0.0.1/cb",
        "http://[::1]:8000/cb",
        "https://yourapp.com/oauth/callback?x=1",
        "https://例子.测试/回调",
    ],
)
async def test_accepted_redirect_uris(stack: Stack, http, dev, uri) -> None:
    status, got = await create(http, stack, dev[1], {"name": "ok", "redirect_uri": uri})
    assert status == 200, got
    assert got["data"]["redirect_uri"] == uri


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b'{"name": "x",}', b"\xff\xfe"])
async def test_body_that_is_not_json(stack: Stack, http, dev, raw) -> None:
    headers = dev[1] | {"Content-Type": "application/json"}
    async with http.post(f"{stack.base}/api/oauth_apps", data=raw, headers=headers) as r:
        got = await r.json()
    assert r.status == 400 and got["success"] is False
    assert "JSON" in got["message"]


async def test_redirect_uri_and_list_are_merged_without_duplicates(stack: Stack, http, dev) -> None:
    status, got = await create(
        http,
        stack,
        dev[1],
        {
            "name": "x",
            "redirect_uri": "https://a.example/cb",
            "redirect_uris": ["https://a.example/cb", "https://b.example/cb"],
        },
    )
    assert status == 200
    assert got["data"]["redirect_uris"] == ["https://a.example/cb", "https://b.example/cb"]


async def test_update_validation(stack: Stack, http, dev) -> None:
    _, body = await create(http, stack, dev[1])
    url = f"{stack.base}/api/oauth_apps/{body['data']['id']}"
    for payload, fragment in (
        ({}, "nothing to update"),
        ({"redirect_uri": "http://evil.example/cb"}, "https"),
        ({"name": ""}, "empty"),
        ({"client_id": "client_mine"}, "unknown field"),
        ({"token_endpoint_auth_method": "none"}, "cannot be changed"),
    ):
        async with http.put(url, json=payload, headers=dev[1]) as r:
            got = await r.json()
        assert r.status == 400 and fragment in got["message"], (payload, got)


async def test_injection_strings_are_stored_verbatim(stack: Stack, http, dev) -> None:
    name = "'); DROP TABLE oauth_apps; -- <script>alert(1)</script>"
    status, got = await create(http, stack, dev[1], {"name": name, "redirect_uri": "https://a.example/cb"})
    assert status == 200 and got["data"]["name"] == name
    async with http.get(f"{stack.base}/api/oauth_apps/{got['data']['id']}", headers=dev[1]) as r:
        assert (await r.json())["data"]["name"] == name


async def test_public_client_has_no_secret(stack: Stack, http, dev) -> None:
    status, got = await create(
        http,
        stack,
        dev[1],
        {"name": "spa", "redirect_uri": "https://a.example/cb", "token_endpoint_auth_method": "none"},
    )
    assert status == 200
    assert got["data"]["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in got["data"] or got["data"]["client_secret"] is None
    async with http.post(f"{stack.base}/api/oauth_apps/{got['data']['id']}/secret", headers=dev[1]) as r:
        assert r.status == 400


async def test_app_limit_per_developer(stack: Stack, http, db, settings) -> None:
    from services.account import apps

    user, _ = await make_developer(db, settings)
    new = apps.NewApp("n", "", ["https://a.example/cb"], "client_secret_post")
    for _ in range(3):
        await apps.create_app(db, settings.pepper_bytes, user.id, new, max_apps=3)
    from libs.platform.errors import ApiError

    with pytest.raises(ApiError) as exc:
        await apps.create_app(db, settings.pepper_bytes, user.id, new, max_apps=3)
    assert exc.value.status == 400 and "limit" in exc.value.message
