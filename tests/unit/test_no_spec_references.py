"""Docstrings and comments cite docs/, the RFCs and the integration guide, never the product spec
file, which is not in the repository (issue 12). Two applied migrations keep their old comments:
an applied migration never changes (libs/platform/migrate refuses an edited one)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "SPEC" + ".md"  # spelled in two parts so this file does not count itself
SEARCHED = ("services", "libs", "oauthctl", "bench", "examples", "tests", "docs", "deploy", "README.md", "Makefile")
SUFFIXES = {".py", ".md", ".sql", ".html", ".txt", ".toml", ".yaml", ".yml", ".json", ".js", ".sh", ".cfg", ""}
APPLIED_MIGRATIONS = {
    "services/token/migrations/0001_keys_tokens.sql",
    "libs/oauth/migrations/0001_outbox.sql",
}


def searched_files() -> list[Path]:
    files: list[Path] = []
    for name in SEARCHED:
        top = ROOT / name
        candidates = [top] if top.is_file() else top.rglob("*")
        files.extend(p for p in candidates if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts)
    return files


def test_nothing_cites_the_spec_file() -> None:
    offenders = []
    for path in searched_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in APPLIED_MIGRATIONS:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if NAME in line:
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "cite docs/, an RFC or the guide instead:\n" + "\n".join(offenders)


def test_the_applied_migrations_still_exist() -> None:
    """If one is ever squashed away, drop it from the exemption list too."""
    assert all((ROOT / rel).is_file() for rel in APPLIED_MIGRATIONS)
