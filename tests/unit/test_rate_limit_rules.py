"""The gateway's rate-limit rules without a server: GCRA arithmetic (the in-process fallback, the
same as the Redis script), bucket choice and client_id extraction (RFC 6749 2.3.1)."""

from __future__ import annotations

import base64
import random
from urllib.parse import parse_qs

import pytest
from aiohttp.test_utils import make_mocked_request

from libs.platform.config import Settings
from services.gateway.limits import Bucket, LocalGcra, _form_client_id, client_id_of, client_ip, rule_for


def test_gcra_allows_a_burst_of_n_then_one_per_interval() -> None:
    gcra = LocalGcra()
    bucket = Bucket("k", per_minute=6)  # one every 10 s, bursts of 6
    assert [gcra.acquire([bucket]) for _ in range(6)] == [0.0] * 6
    wait = gcra.acquire([bucket])
    assert 9_900 < wait <= 10_000  # ms until the oldest of the six has leaked out


def test_a_checked_bucket_refuses_without_being_counted() -> None:
    gcra = LocalGcra()
    counted, checked = Bucket("a", 60), Bucket("b", 2, count=False)
    for _ in range(5):
        assert gcra.acquire([counted, checked]) == 0.0  # "b" never fills by being checked
    for _ in range(2):
        assert gcra.acquire([Bucket("b", 2)]) == 0.0  # two failures counted
    assert gcra.acquire([counted, checked]) > 0  # now "b" refuses, and "a" is not counted
    assert gcra.acquire([Bucket("a", 60)]) == 0.0


def basic(raw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (basic("my%20app:secret"), None, "my app"),  # form-urlencoded inside Basic (RFC 6749 2.3.1)
        (basic("app:sec:ret"), None, "app"),
        ({"Authorization": "Basic !!!"}, None, None),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"grant_type=x&client_id=abc", "abc"),
        ({"Content-Type": "application/json"}, b'{"client_id": "abc"}', None),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"client_id=" + b"a" * 200, None),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"client_id=a%00b", None),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"&".join([b"x=1"] * 100), None),
        ({"Authorization": "Bearer abc"}, None, None),
    ],
)
def test_client_id_of(headers: dict[str, str], body: bytes | None, expected: str | None) -> None:
    request = make_mocked_request("POST", "/api/oauth2/token", headers=headers)
    assert client_id_of(request, body) == expected


def _parse_qs_client_id(form: str) -> str | None:
    """What the gateway read with ``parse_qs`` before it scanned for the one field it needs."""
    try:
        return (parse_qs(form, max_num_fields=64).get("client_id") or [""])[0]
    except ValueError:
        return None


FORM_PIECES = [
    "client_id",
    "client%5Fid",
    "client+id",
    "client_i%64",
    "=",
    "&",
    "a",
    "%",
    "%2",
    "%zz",
    "+",
    "client_id=",
    "client_id=abc",
    "client_id=&",
    "x=1",
    "%26",
    "é",
    "%C3%A9",
    ";",
    "==",
    "grant_type=y",
]


def test_the_form_client_id_is_read_as_parse_qs_reads_it() -> None:
    rng = random.Random(17)
    forms = ["".join(rng.choice(FORM_PIECES) for _ in range(rng.randint(0, 12))) for _ in range(20_000)]
    forms += ["&".join(["x=1"] * n + ["client_id=z"]) for n in (62, 63, 64)] + ["&" * n for n in (62, 63, 64)]
    for form in forms:
        assert _form_client_id(form) == _parse_qs_client_id(form), form


@pytest.mark.parametrize(
    ("method", "path", "bucket"),
    [
        ("POST", "/api/oauth2/token", "client"),
        ("POST", "/api/oauth2/introspect", "client"),
        ("POST", "/api/oauth2/revoke", "client"),
        ("POST", "/login", "login"),
        ("GET", "/login", "page"),
        ("GET", "/api/oauth2/authorize", "page"),
        ("GET", "/user", "page"),
        ("GET", "/api/oauth2/userinfo", None),
        ("GET", "/api/oauth_apps", None),
        ("GET", "/.well-known/openid-configuration", None),
        ("GET", "/assets/site.css", None),  # what every page loads is not a page view
        ("GET", "/favicon.ico", None),
        ("GET", "/no-such-page", "page"),
    ],
)
def test_rule_for(method: str, path: str, bucket: str | None) -> None:
    rule = rule_for(make_mocked_request(method, path), Settings())
    assert (rule[0] if rule else None) == bucket


def test_client_ip_trusts_forwarded_for_only_when_told() -> None:
    request = make_mocked_request("GET", "/", headers={"X-Forwarded-For": "1.2.3.4, 10.0.0.9"})
    assert client_ip(request, Settings(trust_forwarded_headers=True)) == "10.0.0.9"
    assert client_ip(request, Settings(trust_forwarded_headers=False)) != "10.0.0.9"
