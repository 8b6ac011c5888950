"""Prometheus metrics of the protocol core: tokens issued and revoked, the event relay's lag.

Every service process exposes them at ``/metrics`` (libs/platform/web.py, one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOKENS_ISSUED = Counter("oauth_tokens_issued_total", "Token responses issued by the token endpoint", ["grant_type"])
TOKEN_FAMILIES_REVOKED = Counter("oauth_token_families_revoked_total", "Token families revoked", ["reason"])
ACCESS_TOKENS_REVOKED = Counter("oauth_access_tokens_revoked_total", "Single access tokens revoked (RFC 7009)")
RELAY_LAG = Histogram(
    "events_relay_lag_seconds",
    "From an event's commit to its publication by the outbox relay",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
