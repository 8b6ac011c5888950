"""Prometheus metrics beyond the per-request ones in ``web.py``: tokens, revocations, caches.

Every service process exposes them at ``/metrics`` (one registry per process)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

TOKENS_ISSUED = Counter("oauth_tokens_issued_total", "Token responses issued by the token endpoint", ["grant_type"])
TOKEN_FAMILIES_REVOKED = Counter("oauth_token_families_revoked_total", "Token families revoked", ["reason"])
ACCESS_TOKENS_REVOKED = Counter("oauth_access_tokens_revoked_total", "Single access tokens revoked (RFC 7009)")
RELAY_LAG = Histogram(
    "events_relay_lag_seconds",
    "From an event's commit to its publication by the outbox relay",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

_caches: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def register_cache(name: str, cache: Any) -> None:
    """Report ``cache.hits``, ``cache.misses`` and ``len(cache)`` as cache_* metrics named ``name``."""
    _caches[name] = cache


class _CacheCollector(Collector):
    def collect(self) -> Iterator[Any]:
        hits = CounterMetricFamily("cache_hits", "In-process cache hits", labels=["cache"])
        misses = CounterMetricFamily("cache_misses", "In-process cache misses", labels=["cache"])
        size = GaugeMetricFamily("cache_entries", "Entries in the in-process cache", labels=["cache"])
        for name, cache in list(_caches.items()):
            hits.add_metric([name], cache.hits)
            misses.add_metric([name], cache.misses)
            size.add_metric([name], len(cache))
        yield hits
        yield misses
        yield size


REGISTRY.register(_CacheCollector())
