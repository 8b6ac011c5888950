"""Client.verify_secret with a previous secret in its grace period (docs/api.md "Rotating a client
secret"): the current secret always, the previous one only before its expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from libs.oauth.clients import Client
from libs.platform.security import token_hash

PEPPER = b"p" * 32
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def client(previous: str | None, expires: datetime | None) -> Client:
    return Client(
        id=1,
        client_id="client_x",
        name="x",
        description="",
        redirect_uris=("https://a.example/cb",),
        secret_hash=token_hash(PEPPER, "new"),
        auth_method="client_secret_post",
        auto_authorize=True,
        internal=False,
        previous_secret_hash=token_hash(PEPPER, previous) if previous else None,
        previous_secret_expires_at=expires,
    )


@pytest.mark.parametrize(
    ("previous", "expires", "presented", "ok"),
    [
        (None, None, "new", True),
        (None, None, "old", False),
        ("old", NOW + timedelta(hours=1), "old", True),
        ("old", NOW + timedelta(hours=1), "new", True),
        ("old", NOW + timedelta(seconds=1), "old", True),
        ("old", NOW, "old", False),  # the expiry itself is outside the grace period
        ("old", NOW - timedelta(seconds=1), "old", False),
        ("old", NOW - timedelta(days=1), "new", True),
        ("old", NOW + timedelta(hours=1), "other", False),
        ("old", None, "old", False),  # a hash without an expiry is never accepted
        ("old", NOW + timedelta(hours=1), "", False),
    ],
)
def test_verify_secret_with_grace(previous: str | None, expires: datetime | None, presented: str, ok: bool) -> None:
    assert client(previous, expires).verify_secret(PEPPER, presented, now=NOW) is ok


def test_public_client_has_no_secret() -> None:
    public = Client(1, "c", "n", "", ("https://a/cb",), None, "none", True, False)
    assert public.verify_secret(PEPPER, "") is False
