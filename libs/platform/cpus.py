"""How many CPUs this process may use: what thread pools that run CPU-bound C code are sized from."""

from __future__ import annotations

import math
import os
from pathlib import Path

# cgroup v2 (one file: "<quota> <period>" or "max <period>") and v1 (two files; quota -1: none).
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit() -> float | None:
    """The container's CPU limit in CPUs (a Kubernetes ``limits.cpu``), or None without one."""
    try:
        quota, period = CGROUP_V2_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = CGROUP_V1_QUOTA.read_text().strip(), CGROUP_V1_PERIOD.read_text().strip()
        except OSError:
            return None
    if quota == "max" or int(quota) <= 0 or int(period) <= 0:
        return None
    return int(quota) / int(period)


def usable_cpus() -> int:
    """The cores this process may run on (``sched_getaffinity``), capped by the container's CPU
    limit rounded up (a pod limited to 1 CPU on a 64-core node: 1, not 64). At least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)
