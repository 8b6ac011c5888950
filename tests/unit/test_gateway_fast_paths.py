"""The gateway's per-request shortcuts give the answers of what they replace (issue 17,
docs/performance.md round two): the route lookup, and the media type read without aiohttp's
email-parser round."""

from __future__ import annotations

import random

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from libs.platform.web import media_type
from services.gateway.routes import ROUTES, route_for


def _walk_every_prefix(path: str) -> str | None:
    """The lookup as it was: every prefix, longest first."""
    if path == "/internal" or path.startswith("/internal/"):
        return None
    for prefix, service in sorted(ROUTES.items(), key=lambda kv: len(kv[0]), reverse=True):
        if path == prefix or path.startswith(prefix + "/"):
            return service
    return None


def test_route_for_finds_the_longest_prefix_as_the_walk_did() -> None:
    pieces = [*ROUTES, "/", "//", "/x", "s", "/internal", "/api", "/oauth2", "/token", "/users", ".", "%2f", "?"]
    rng = random.Random(17)
    paths = ["", "/", "/" * 9000, "/user" + "/" * 9000] + [p + s for p in ROUTES for s in ("", "/", "x", "/x", "//y")]
    paths += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(20_000)]
    for path in paths:
        assert route_for(path) == _walk_every_prefix(path), path


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "text/html",
        "TEXT/HTML",
        " text/html ; charset=utf-8",
        "text/html(c)",
        "text/html/x",
        "text",
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        "application/x-www-form-urlencoded;",
        "text/html ,text/plain",
        '"text/html"',
        "text/ html",
        "text /html",
        "\\ttext/html\\t",
        'x/y;a="b;c"',
        "a/b c",
        "text/html;;;",
        "multipart/form-data; boundary=x",
    ],
)
def test_media_type_reads_content_type_as_aiohttp_does(value: str | None) -> None:
    headers = {} if value is None else {"Content-Type": value.replace("\\t", "\t")}
    response = web.Response(body=b"x", headers=headers)
    request = make_mocked_request("POST", "/", headers=headers)
    assert media_type(response) == response.content_type
    assert media_type(request) == request.content_type
