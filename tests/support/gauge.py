"""Instrumentation for tests: how many calls of a function run at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Gauge:
    """How many calls of the wrapped functions run at once, and the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                return fn(*args)
            finally:
                with self.lock:
                    self.running -= 1

        return counted
