"""The device authorization grant's rules (RFC 8628 3.4, 3.5; docs/device.md), table-driven, no I/O:
the answer to one poll, the error each answer maps to, the client's permission, scopes, and the
user codes (alphabet, display form, case/dash-insensitive input)."""

from __future__ import annotations

import dataclasses

import pytest

from libs.oauth import user_codes
from libs.oauth.clients import Client
from libs.oauth.errors import OAuthError
from libs.oauth.vocabulary import BROWSER_GRANT_TYPES, DEVICE_CODE_GRANT, UserStatus
from services.token.device_authorization import granted_scope
from services.token.grants.device_code import (
    ERRORS,
    DeviceCodeGrant,
    DeviceRequest,
    DeviceState,
    poll_outcome,
)

BASE = DeviceState("app", "pending", expired=False, too_fast=False, user_status=None)
APPROVED = dataclasses.replace(BASE, status="approved", user_status=UserStatus.ACTIVE)

POLLS = [
    ("unknown code", None, "app", "unknown"),
    ("another client's code", BASE, "other", "unknown"),
    ("pending", BASE, "app", "pending"),
    ("pending, polled too fast", dataclasses.replace(BASE, too_fast=True), "app", "slow_down"),
    ("pending but expired", dataclasses.replace(BASE, expired=True, too_fast=True), "app", "expired"),
    ("denied", dataclasses.replace(BASE, status="denied", user_status=1), "app", "denied"),
    ("denied and expired", dataclasses.replace(BASE, status="denied", expired=True), "app", "expired"),
    ("approved", APPROVED, "app", "issue"),
    ("approved, polled too fast: issued anyway", dataclasses.replace(APPROVED, too_fast=True), "app", "issue"),
    ("approved but expired", dataclasses.replace(APPROVED, expired=True), "app", "expired"),
    ("approved, user disabled", dataclasses.replace(APPROVED, user_status=UserStatus.DISABLED), "app", "disabled"),
    ("used", dataclasses.replace(APPROVED, status="used"), "app", "used"),
    ("used and expired: still single use", dataclasses.replace(APPROVED, status="used", expired=True), "app", "used"),
    ("used, asked by another client", dataclasses.replace(APPROVED, status="used"), "other", "unknown"),
]


@pytest.mark.parametrize(("state", "client_id", "expected"), [p[1:] for p in POLLS], ids=[p[0] for p in POLLS])
def test_poll_outcome(state: DeviceState | None, client_id: str, expected: str) -> None:
    assert poll_outcome(state, client_id) == expected


ERROR_CODES = [
    ("unknown", "invalid_grant"),
    ("used", "invalid_grant"),
    ("expired", "expired_token"),
    ("denied", "access_denied"),
    ("pending", "authorization_pending"),
    ("slow_down", "slow_down"),
    ("disabled", "invalid_grant"),
]


@pytest.mark.parametrize(("outcome", "error"), ERROR_CODES)
def test_rfc8628_error_codes(outcome: str, error: str) -> None:
    assert ERRORS[outcome][0].error == error  # type: ignore[index]


def client(grant_types: tuple[str, ...], method: str = "none") -> Client:
    secret = None if method == "none" else b"h"
    return Client(
        1, "app", "n", "", ("https://app.example/cb",), secret, method, False, False, False, grant_types=grant_types
    )


@pytest.mark.parametrize("method", ["none", "client_secret_post", "client_secret_basic"])
def test_allowed_client_validates(method: str) -> None:
    grant = DeviceCodeGrant()
    allowed = client((*BROWSER_GRANT_TYPES, DEVICE_CODE_GRANT), method)
    assert grant.validate(allowed, {"device_code": "device_x"}) == DeviceRequest("device_x")


def test_missing_device_code_is_invalid_request() -> None:
    with pytest.raises(OAuthError) as caught:
        DeviceCodeGrant().validate(client((*BROWSER_GRANT_TYPES, DEVICE_CODE_GRANT)), {})
    assert caught.value.error == "invalid_request"


def test_client_without_the_grant_is_unauthorized() -> None:
    with pytest.raises(OAuthError) as caught:
        DeviceCodeGrant().validate(client(BROWSER_GRANT_TYPES), {"device_code": "device_x"})
    assert caught.value.error == "unauthorized_client"


SCOPES = [
    (None, "profile"),
    ("openid profile", "openid profile"),
    ("profile profile balance", "profile balance"),
]


@pytest.mark.parametrize(("requested", "granted"), SCOPES)
def test_granted_scope(requested: str | None, granted: str) -> None:
    assert granted_scope(requested) == granted


@pytest.mark.parametrize("requested", ["admin", "profile write", "quota:read"])
def test_unknown_scope_is_invalid_scope(requested: str) -> None:
    with pytest.raises(OAuthError) as caught:
        granted_scope(requested)
    assert caught.value.error == "invalid_scope"


def test_new_user_codes_use_the_alphabet_and_show_as_two_halves() -> None:
    codes = {user_codes.new_user_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == 8 and set(code) <= set(user_codes.ALPHABET)
        display = user_codes.shown(code)
        assert display == f"{code[:4]}-{code[4:]}"
        assert user_codes.normalize(display) == code


def test_the_alphabet_has_no_look_alikes_or_vowels() -> None:
    assert set(user_codes.ALPHABET).isdisjoint(set("AEIOUY01258"))
    assert len(set(user_codes.ALPHABET)) == 20


TYPED = [
    ("WDJB-MJHT", "WDJBMJHT"),
    ("wdjb-mjht", "WDJBMJHT"),
    ("wdjbmjht", "WDJBMJHT"),
    (" WDJB MJHT ", "WDJBMJHT"),
    ("WD-JB-MJ-HT", "WDJBMJHT"),
    ("ＷＤＪＢ－ＭＪＨＴ", "WDJBMJHT"),  # full-width, from a Chinese keyboard
    ("WDJB-MJH", None),  # too short
    ("WDJB-MJHTX", None),  # too long
    ("WDJB-MJH0", None),  # a digit
    ("AEIO-UBCD", None),  # vowels are not in the alphabet
    ("", None),
    ("W" * 100, None),
]


@pytest.mark.parametrize(("typed", "normal"), TYPED)
def test_normalize(typed: str, normal: str | None) -> None:
    assert user_codes.normalize(typed) == normal
