"""Prometheus metrics beyond the per-request ones in ``web.py``: in-process caches.

Every service process exposes them at ``/metrics`` (one registry per process)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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
