"""Make sure PostgreSQL, Redis and RabbitMQ answer before `make run`, `make test` and .ci/run.

    python -m oauthctl.deps [--for run|test] [--browser] [--wait SECONDS]

For each server at its configured URL (DATABASE_URL, REDIS_URL, AMQP_URL, else the local defaults):
answering -> nothing to do; not answering on this machine and installed here -> start it the way
Debian packages it; not installed but a Docker engine answers -> `docker compose -f
deploy/compose.deps.yaml up -d` (or, for the tests with no URL set, nothing: the fixtures then start
throwaway containers with testcontainers); otherwise exit 1 with the commands that fix it. Every
step prints a line and every wait is bounded, so a missing server never hangs `make`.

``--browser`` also looks for the Chromium the browser tests drive (CHROMIUM_PATH, default
/usr/bin/chromium) and installs Debian's ``chromium`` when it is missing and this is root on Debian.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = "deploy/compose.deps.yaml"
COMPOSE_UP = f"docker compose -f {COMPOSE_FILE} up -d"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", ""})
DEFAULT_CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class Server:
    name: str
    env: str  # the variable holding its URL
    default_url: str
    program: str  # on PATH when the server is installed here
    apt: str  # the Debian package that installs it
    compose_service: str  # its service in deploy/compose.deps.yaml

    def url(self, environ: Mapping[str, str]) -> str:
        return environ.get(self.env) or self.default_url

    def address(self, environ: Mapping[str, str]) -> tuple[str, int]:
        parts = urlsplit(self.url(environ))
        return parts.hostname or "127.0.0.1", parts.port or urlsplit(self.default_url).port or 0


SERVERS = (
    Server(
        "PostgreSQL",
        "DATABASE_URL",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "pg_ctlcluster",
        "postgresql",
        "postgres",
    ),
    Server("Redis", "REDIS_URL", "redis://127.0.0.1:6379/0", "redis-server", "redis-server", "redis"),
    Server(
        "RabbitMQ", "AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "rabbitmq-server", "rabbitmq-server", "rabbitmq"
    ),
)


def say(msg: str) -> None:
    print(f"deps: {msg}", flush=True)


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """A TCP connect succeeds (the server is listening; the clients report anything deeper)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run(cmd: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> bool:
    """Run one command with a bounded time, its output passed through; False when it failed."""
    say("$ " + shlex.join(cmd))
    try:
        # The commands are this module's fixed argument lists (no shell); the programs come from PATH.
        done = subprocess.run(list(cmd), cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL, env=env)  # noqa: S603
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"{cmd[0]} failed: {exc}")
        return False


def docker_engine() -> bool:
    """A Docker CLI on PATH whose engine answers within five seconds."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0  # noqa: S607
    except (OSError, subprocess.TimeoutExpired):
        return False


def postgres_clusters() -> list[str]:
    """The Debian cluster versions (directories of /etc/postgresql), newest first."""
    base = Path("/etc/postgresql")
    return sorted((p.name for p in base.iterdir() if (p / "main").is_dir()), reverse=True) if base.is_dir() else []


def default_redis_dir() -> str:
    """Debian's /var/lib/redis when we may write there (root, as in CI), else a per-user directory."""
    debian = Path("/var/lib/redis")
    if os.access(debian if debian.exists() else debian.parent, os.W_OK):
        return str(debian)
    return str(Path.home() / ".cache" / "oauth-platform" / "redis")


def local_start(server: Server, port: int, redis_dir: str) -> list[str] | None:
    """The command that starts an installed server here, None when it is not installed."""
    if not shutil.which(server.program):
        return None
    if server.program == "pg_ctlcluster":
        versions = postgres_clusters()
        return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"] if versions else None
    if server.program == "redis-server":
        # Like Debian's service but in the foreground-free, persistence-free form a dev machine needs.
        Path(redis_dir).mkdir(parents=True, exist_ok=True)
        return [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            redis_dir,
            "--logfile",
            str(Path(redis_dir) / "redis-server.log"),
        ]
    return ["rabbitmq-server", "-detached"]


def wait_for(servers: Sequence[Server], environ: Mapping[str, str], seconds: float) -> list[Server]:
    """Wait until each server answers or the deadline passes; the ones still silent."""
    deadline, silent = time.monotonic() + seconds, list(servers)
    next_note = time.monotonic() + 10
    while silent and time.monotonic() < deadline:
        silent = [s for s in silent if not answers(*s.address(environ))]
        if silent and time.monotonic() >= next_note:
            say("still waiting for " + ", ".join(s.name for s in silent))
            next_note += 10
        if silent:
            time.sleep(0.5)
    for s in servers:
        if s not in silent:
            say(f"{s.name} is up at {hostport(s, environ)}")
    return silent


def hostport(server: Server, environ: Mapping[str, str]) -> str:
    host, port = server.address(environ)
    return f"{host}:{port}"  # never the URL: it may hold a password


def help_lines(missing: Sequence[Server]) -> list[str]:
    pkgs = " ".join(s.apt for s in missing)
    return [
        "install them here:   sudo apt-get install -y " + pkgs + "   (then run make again)",
        "or, with Docker:     " + COMPOSE_UP,
        "or point " + "/".join(s.env for s in missing) + " at servers that run elsewhere.",
    ]


@dataclass
class Plan:
    local: list[tuple[Server, list[str]]]
    docker: list[Server]
    remote: list[Server]
    missing: list[Server]


def plan(down: Sequence[Server], environ: Mapping[str, str], redis_dir: str, has_docker: Callable[[], bool]) -> Plan:
    """Sort the silent servers by what can be done about each."""
    p = Plan([], [], [], [])
    for s in down:
        host, port = s.address(environ)
        if host not in LOCAL_HOSTS:
            p.remote.append(s)
        elif (cmd := local_start(s, port, redis_dir)) is not None:
            p.local.append((s, cmd))
        else:
            p.missing.append(s)
    if p.missing and has_docker():
        p.docker, p.missing = p.missing, []
    return p


def ensure_servers(environ: Mapping[str, str], purpose: str, wait: float, redis_dir: str) -> int:
    """Exit status 0 when all three answer (starting what can be started), else 1 with the fix."""
    down = [s for s in SERVERS if not answers(*s.address(environ))]
    for s in SERVERS:
        if s not in down:
            say(f"{s.name} answers at {hostport(s, environ)}")
    if not down:
        return 0
    unset = [s for s in down if not environ.get(s.env)]
    if purpose == "test" and unset and docker_engine():
        # tests/support/infra.py: for each URL not given, a Docker engine -> a throwaway container.
        say(
            ", ".join(s.name for s in unset) + ": no URL set and a Docker engine answers: the tests start "
            "throwaway containers (testcontainers)"
        )
        down = [s for s in down if s not in unset]
    p = plan(down, environ, redis_dir, docker_engine)
    for s in p.remote:
        say(
            f"{s.name} at {hostport(s, environ)} ({s.env}) does not answer; it is not on this machine: "
            f"start it there or fix {s.env}"
        )
    if p.missing:
        names = ", ".join(f"{s.name} ({hostport(s, environ)})" for s in p.missing)
        say(f"{names} not answering, not installed here, and no Docker engine answers.")
        for line in help_lines(p.missing):
            say(line)
        return 1
    for s, cmd in p.local:
        say(f"{s.name} is installed but not answering at {hostport(s, environ)}: starting it")
        run(cmd, timeout=wait)
    if p.docker:
        say(", ".join(s.name for s in p.docker) + " not installed here; starting them with Docker")
        run([*COMPOSE_UP.split(), *(s.compose_service for s in p.docker)], timeout=max(wait, 300))
    silent = wait_for([s for s, _ in p.local] + p.docker, environ, wait)
    for s in silent:
        say(
            f"{s.name} did not come up at {hostport(s, environ)} within {wait:.0f} s (is the port taken by "
            "something else? see README, Troubleshooting)"
        )
    return 1 if silent or p.remote else 0


def chromium_path(environ: Mapping[str, str] = os.environ) -> str:
    """The browser the browser tests drive: CHROMIUM_PATH, else Debian's /usr/bin/chromium."""
    return environ.get("CHROMIUM_PATH") or DEFAULT_CHROMIUM


def executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def can_apt_install() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def ensure_chromium(environ: Mapping[str, str]) -> None:
    """Install Debian's chromium when it is missing and we may (root on Debian); else say how.
    Never fatal here: tests/browser/conftest.py skips or (under CI=true) fails the browser tests."""
    path = chromium_path(environ)
    if executable(path):
        return
    if path == DEFAULT_CHROMIUM and can_apt_install():
        say(f"no {path}: installing Debian's chromium for the browser tests (a few minutes the first time)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "chromium"]
        if run(["apt-get", "update", "-qq"], 600, env) and run(install, 1200, env) and executable(path):
            return
    say(
        f"no Chromium at {path}: the browser tests will be SKIPPED (FAIL under CI=true); "
        "enable them with: sudo apt-get install -y chromium"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m oauthctl.deps", description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--for",
        dest="purpose",
        choices=("run", "test"),
        default="run",
        help="test: leave missing servers to testcontainers when no URL is set and Docker answers",
    )
    ap.add_argument("--browser", action="store_true", help="also make sure Chromium is there for the browser tests")
    ap.add_argument("--wait", type=float, default=90.0, help="seconds to wait for a started server (default 90)")
    ap.add_argument("--redis-dir", default=default_redis_dir(), help="working directory of a Redis started here")
    args = ap.parse_args(argv)
    status = ensure_servers(os.environ, args.purpose, args.wait, args.redis_dir)
    if status == 0 and args.browser:
        ensure_chromium(os.environ)
    return status


if __name__ == "__main__":
    sys.exit(main())
