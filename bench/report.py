"""The one table `make bench` prints, the goals under it, and the profile summaries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .wrk import Result


@dataclass
class Row:
    workload: str
    procs: int
    ours: Result | None
    peer: Result | None = None
    ours_na: str = ""  # why ours is n/a
    peer_na: str = "not shared"  # why the peer's is n/a
    unit: str = "req/s"


def _fig(r: Result | None, unit: str) -> tuple[str, str, str]:
    if r is None:
        return ("n/a", "", "")
    return (f"{r.rps:,.0f}" if unit == "req/s" else "-", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}")


ORDER = (
    "client_credentials",
    "  same, without the gateway",
    "  same, ES256 instead of RS256",
    "authorization_code",
    "refresh_token",
    "userinfo",
    "userinfo at half",
    "userinfo, caches off",
    "introspection",
    "revocation",
)


def _order(row: Row) -> tuple[int, int]:
    """Workloads in ORDER (the longest matching prefix), 1 then 2 processes under each."""
    matches = [(len(prefix), i) for i, prefix in enumerate(ORDER) if row.workload.startswith(prefix)]
    return (max(matches)[1] if matches else len(ORDER), row.procs)


def table(rows: list[Row]) -> str:
    rows = sorted(rows, key=_order)
    head = (
        f"{'workload':<44} {'procs':>5} | {'ours/s':>8} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'peer/s':>8} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>6}"
    )
    lines = [head, "-" * len(head)]
    notes: list[str] = []
    for row in rows:
        o = _fig(row.ours, row.unit)
        p = _fig(row.peer, row.unit)
        ratio = f"{row.ours.rps / row.peer.rps:.2f}x" if row.ours and row.peer and row.peer.rps else ""
        lines.append(
            f"{row.workload:<44} {row.procs:>5} | {o[0]:>8} {o[1]:>7} {o[2]:>7} | {p[0]:>8} {p[1]:>7} {p[2]:>7} | {ratio:>6}"
        )
        for who, r, na in (("ours", row.ours, row.ours_na), ("peer", row.peer, row.peer_na)):
            if r is None and na and na != "not shared":
                notes.append(f"  {row.workload} ({row.procs} procs), {who}: n/a: {na}")
            elif r is not None and r.errors:
                notes.append(
                    f"  {row.workload} ({row.procs} procs), {who}: {r.errors} failed requests of {r.requests + r.errors}"
                )
            if r is not None and r.note:
                notes.append(f"  {row.workload} ({row.procs} procs), {who}: {r.note}")
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


# --- profiles (py-spy raw/collapsed output) ------------------------------------------------------
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("JWT sign/verify (pyjwt + cryptography)", ("jwt/", "cryptography/")),
    ("PostgreSQL client (asyncpg)", ("asyncpg/",)),
    ("Redis client", ("redis/",)),
    ("RabbitMQ client", ("aio_pika/", "aiormq/", "pamqp/")),
    ("access log + JSON logging", ("logging/", "libs/platform/logs.py")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("gateway proxy (aiohttp client)", ("aiohttp/client", "aiohttp/connector", "services/gateway/")),
    ("aiohttp server (parse, route, respond)", ("aiohttp/",)),
    ("event loop (uvloop/asyncio)", ("uvloop/", "asyncio/")),
    ("our code", ("services/", "libs/platform/", "libs/oauth/")),
]


def _category(stack: list[str]) -> str:
    for frame in reversed(stack):  # the innermost frame that belongs to a known layer
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def summarize_profile(path: Path, top: int = 12) -> str:
    self_time: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        n = int(count_text)
        frames = stack_text.split(";")
        total += n
        leaf = frames[-1]
        fn, _, where = leaf.partition(" (")
        file = where.split(":")[0]
        self_time[f"{fn} ({'/'.join(file.split('/')[-2:])})"] += n
        cats[_category(frames)] += n
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {total} samples (CPU-busy only)", "  by layer (innermost known frame):"]
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in cats.most_common()]
    out.append("  top functions by own time:")
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in self_time.most_common(top)]
    return "\n".join(out)
