"""The one table `make bench` prints, the goals under it, and the profile summaries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path

from .wrk import Result


@dataclass
class Row:
    workload: str
    procs: int
    ours: Result | None
    peer: Result | None = None  # the peer with its in-memory adapter
    ours_na: str = ""  # why ours is n/a
    peer_na: str = "not shared"  # why the peer's is n/a
    unit: str = "req/s"
    peer_redis: Result | None = None  # the peer with its Redis adapter
    peer_redis_na: str = "not shared"

    def ratio(self, redis: bool = False) -> float | None:
        other = self.peer_redis if redis else self.peer
        if self.ours is None or other is None or not other.rps or self.unit != "req/s":
            return None
        return self.ours.rps / other.rps


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
        f"{'mem/s':>8} {'p50 ms':>7} {'p99 ms':>7} | {'redis/s':>8} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'vs mem':>6} {'vs redis':>8}"
    )
    lines = [
        f"{'':<50} | {'ours':^24} | {'peer, in-memory adapter':^24} | {'peer, Redis adapter':^24} |",
        head,
        "-" * len(head),
    ]
    notes: list[str] = []
    for row in rows:
        o, p, q = _fig(row.ours, row.unit), _fig(row.peer, row.unit), _fig(row.peer_redis, row.unit)
        mem, red = row.ratio(), row.ratio(redis=True)
        lines.append(
            f"{row.workload:<44} {row.procs:>5} | {o[0]:>8} {o[1]:>7} {o[2]:>7} | {p[0]:>8} {p[1]:>7} {p[2]:>7} | "
            f"{q[0]:>8} {q[1]:>7} {q[2]:>7} | {f'{mem:.2f}x' if mem else '':>6} {f'{red:.2f}x' if red else '':>8}"
        )
        for who, r, na in (
            ("ours", row.ours, row.ours_na),
            ("peer (memory)", row.peer, row.peer_na),
            ("peer (redis)", row.peer_redis, row.peer_redis_na),
        ):
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


def svg_report(rows: list[Row], title: str, goals: list[str]) -> str:
    """A self-contained HTML page: throughput ratios per workload (bars, against both peers) and
    the latency percentiles side by side, and the goal lines."""
    rows = sorted(rows, key=_order)
    shared = [r for r in rows if r.ratio() is not None or r.ratio(redis=True) is not None]
    bar_h, width, left = 22, 900, 380
    scale = (
        (width - left - 160) / max(2.0, *(max(r.ratio() or 0, r.ratio(redis=True) or 0) for r in shared))
        if shared
        else 1
    )
    height = 40 + len(shared) * (2 * bar_h + 10)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">'
    ]
    x1 = left + scale
    parts.append(f'<line x1="{x1:.0f}" y1="20" x2="{x1:.0f}" y2="{height}" stroke="#c00" stroke-dasharray="4"/>')
    parts.append(f'<text x="{x1 + 4:.0f}" y="14" fill="#c00">1.0x (the peer)</text>')
    y = 30
    for r in shared:
        label = f"{r.workload.strip()} ({r.procs} proc)"
        parts.append(f'<text x="4" y="{y + bar_h + 4}">{escape(label)}</text>')
        for i, (name, value, colour) in enumerate(
            (("vs in-memory", r.ratio(), "#4d90fe"), ("vs Redis", r.ratio(redis=True), "#34a853"))
        ):
            if value is None:
                continue
            yy = y + i * bar_h
            parts.append(
                f'<rect x="{left}" y="{yy}" width="{value * scale:.0f}" height="{bar_h - 4}" fill="{colour}"/>'
            )
            parts.append(f'<text x="{left + value * scale + 4:.0f}" y="{yy + bar_h - 8}">{value:.2f}x {name}</text>')
        y += 2 * bar_h + 10
    parts.append("</svg>")
    cells = []
    for r in rows:
        figs = [_fig(x, r.unit) for x in (r.ours, r.peer, r.peer_redis)]
        cells.append(
            "<tr><td>"
            + escape(f"{r.workload.strip()} ({r.procs} proc)")
            + "</td>"
            + "".join(f"<td>{a}</td><td>{b}</td><td>{c}</td>" for a, b, c in figs)
            + "</tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + escape(title) + "</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}</style></head><body>"
        f"<h1>{escape(title)}</h1><h2>Throughput, ours / the peer</h2>{''.join(parts)}"
        "<h2>Throughput and latency percentiles</h2><table><tr><th>workload</th>"
        "<th>ours/s</th><th>p50 ms</th><th>p99 ms</th><th>peer mem/s</th><th>p50 ms</th><th>p99 ms</th>"
        "<th>peer redis/s</th><th>p50 ms</th><th>p99 ms</th></tr>" + "".join(cells) + "</table>"
        "<h2>Goals</h2><pre>" + escape("\n".join(goals)) + "</pre></body></html>"
    )


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
