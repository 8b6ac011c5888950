"""``grant_type=urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628 3.4, 3.5; docs/device.md).

The device polls with its ``device_code``. Each poll locks the code's row (``device_codes.lock_device_code``)
in one transaction, so concurrent polls are answered one after the other, and ``poll_outcome``
decides from what the row says:

- unknown, or issued to another client: ``invalid_grant`` (nothing recorded);
- already used: ``invalid_grant`` (single use: the tokens went to the first poll that found it approved);
- past ``expires_in``: ``expired_token``;
- denied by the user: ``access_denied``;
- still pending: ``authorization_pending``, or ``slow_down`` when this poll came sooner than the
  interval after the previous one; ``slow_down`` adds 5 seconds to the interval, kept on the row,
  for all later polls (RFC 8628 3.5);
- approved, by a user still active: the code is consumed and a new token family issued from it,
  exactly as an authorization code (refresh rotation, reuse detection, revocation from the user
  center); a disabled user: ``invalid_grant``.

The app must be allowed the grant (``oauth_apps.grant_types``, else ``unauthorized_client``).
Public clients use it without PKCE: RFC 8628 has no redirect to protect, and the device code
(256 bits) is the secret that the polling device alone holds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from libs.contracts import authz as device_codes
from libs.oauth.clients import Client
from libs.oauth.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    InvalidGrant,
    OAuthError,
    SlowDown,
    UnauthorizedClient,
)
from libs.oauth.vocabulary import DEVICE_CODE_GRANT, UserStatus
from libs.platform.security import token_hash

from ..form import required
from ..id_tokens import Authentication
from ..issuance import Deps, start_family

SLOW_DOWN_SECONDS = 5  # RFC 8628 3.5: "the interval MUST be increased by 5 seconds"

Outcome = Literal["unknown", "used", "expired", "denied", "pending", "slow_down", "disabled", "issue"]


@dataclass(frozen=True)
class DeviceState:
    """What the locked row says about a polled device code."""

    client_id: str
    status: str  # pending | approved | denied | used
    expired: bool
    too_fast: bool
    user_status: int | None

    @classmethod
    def of(cls, row: Any) -> DeviceState:
        return cls(row["client_id"], row["status"], row["expired"], row["too_fast"], row["user_status"])


def poll_outcome(state: DeviceState | None, client_id: str) -> Outcome:
    """The answer to one poll (RFC 8628 3.5), in this order."""
    if state is None or state.client_id != client_id:
        return "unknown"
    if state.status == "used":
        return "used"
    if state.expired:
        return "expired"
    if state.status == "denied":
        return "denied"
    if state.status == "pending":
        return "slow_down" if state.too_fast else "pending"
    if state.user_status != UserStatus.ACTIVE:
        return "disabled"
    return "issue"


ERRORS: dict[Outcome, tuple[type[OAuthError], str]] = {
    "unknown": (InvalidGrant, "The device_code is invalid or was issued to another client"),
    "used": (InvalidGrant, "The device_code was already used"),
    "expired": (ExpiredToken, "The device_code expired; start the device authorization again"),
    "denied": (AccessDenied, "The user denied the request"),
    "pending": (AuthorizationPending, "The user has not answered yet"),
    "slow_down": (SlowDown, "Polling too fast: the interval is increased by 5 seconds"),
    "disabled": (InvalidGrant, "The user account is disabled"),
}


def check_device_client(client: Client) -> None:
    """Only apps allowed the device grant in the developer API (RFC 6749 5.2 unauthorized_client)."""
    if not client.allows(DEVICE_CODE_GRANT):
        raise UnauthorizedClient(
            "This client may not use the device authorization grant: enable it in the app's grant_types"
        )


@dataclass(frozen=True)
class DeviceRequest:
    device_code: str


async def poll(deps: Deps, client: Client, device_code: str) -> dict[str, Any]:
    device_hash = token_hash(deps.settings.pepper_bytes, device_code)
    async with deps.pool.acquire() as conn:
        async with conn.transaction():
            row = await device_codes.lock_device_code(conn, device_hash)
            outcome = poll_outcome(DeviceState.of(row) if row is not None else None, client.client_id)
            if outcome == "issue":
                assert row is not None
                family_id = uuid.uuid4()
                await device_codes.consume_device_code(conn, row["id"], family_id)
                return await start_family(
                    conn,
                    deps,
                    family_id=family_id,
                    client_id=client.client_id,
                    user_id=row["user_id"],
                    scope=row["scope"],
                    auth=Authentication(auth_time=row["auth_time"], nonce=None, email=row["email"]),
                )
            if outcome in ("pending", "slow_down"):
                assert row is not None
                await device_codes.record_device_poll(
                    conn, row["id"], SLOW_DOWN_SECONDS if outcome == "slow_down" else 0
                )
    error, description = ERRORS[outcome]
    raise error(description)


class DeviceCodeGrant:
    """``grant_type=urn:ietf:params:oauth:grant-type:device_code``: validate, then poll."""

    name = DEVICE_CODE_GRANT

    def validate(self, client: Client, form: dict[str, str]) -> DeviceRequest:
        check_device_client(client)
        return DeviceRequest(required(form, "device_code"))

    async def issue(self, deps: Deps, client: Client, request: DeviceRequest) -> dict[str, Any]:
        return await poll(deps, client, request.device_code)
