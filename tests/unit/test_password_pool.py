"""Password hashing runs in a pool bounded by the CPUs the process may use (docs/operations.md
"Password hashing"): however many logins arrive at once, at most PASSWORD_THREADS argon2 hashes
(64 MiB each) run together. Also: the CPU count honours the container's CPU limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from libs.oauth.keys import signing_threads
from libs.platform import cpus, security
from tests.support.gauge import Gauge


async def test_a_burst_of_password_work_never_exceeds_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    gauge = Gauge()
    monkeypatch.setattr(security, "verify_password_sync", gauge.wrap(security.verify_password_sync))
    monkeypatch.setattr(security, "hash_password_sync", gauge.wrap(security.hash_password_sync))
    # Stored with lighter parameters than the default (a verify uses the stored hash's), to keep
    # the test short; the unknown user's verify and the new hash use the real ones.
    stored = PasswordHasher(time_cost=2, memory_cost=8192).hash("correct horse battery")
    burst = security.PASSWORD_THREADS * 4 + 1
    checks = [security.verify_password(stored, "correct horse battery") for _ in range(burst)]
    results = await asyncio.gather(
        *checks, security.verify_password(None, "anything"), security.hash_password("another horse")
    )
    assert results[:burst] == [True] * burst
    assert results[burst] is False
    assert PasswordHasher().verify(results[-1], "another horse")
    assert 1 <= gauge.peak <= security.PASSWORD_THREADS
    assert security.PASSWORD_MEMORY_BYTES == 64 * 1024 * 1024


def test_the_dummy_hash_costs_what_a_real_one_does() -> None:
    """Logins for unknown accounts verify it: same parameters, same time (no user enumeration)."""
    assert PasswordHasher().check_needs_rehash(security._DUMMY_HASH) is False
    assert security.verify_password_sync(None, "x") is False


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [
        ("max 100000\n", None, None),
        ("150000 100000\n", None, 1.5),
        ("100000 100000\n", None, 1.0),
        (None, ("-1", "100000"), None),
        (None, ("50000", "100000"), 0.5),
        (None, None, None),
    ],
)
def test_the_container_cpu_limit_is_read_from_cgroups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, v2: str | None, v1: tuple[str, str] | None, expected: float | None
) -> None:
    monkeypatch.setattr(cpus, "CGROUP_V2_CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.setattr(cpus, "CGROUP_V1_QUOTA", tmp_path / "cpu.cfs_quota_us")
    monkeypatch.setattr(cpus, "CGROUP_V1_PERIOD", tmp_path / "cpu.cfs_period_us")
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (tmp_path / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    assert cpus.cgroup_cpu_limit() == expected


def test_usable_cpus_is_capped_by_the_limit_rounded_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda _pid: set(range(64)))
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert cpus.usable_cpus() == 64
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1.0)
    assert cpus.usable_cpus() == 1
    assert signing_threads(-1) == 1 and signing_threads(3) == 3 and signing_threads(0) == 0
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 2.5)
    assert cpus.usable_cpus() == 3
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 0.1)
    assert cpus.usable_cpus() == 1
