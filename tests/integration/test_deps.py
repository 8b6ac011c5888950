"""`python -m oauthctl.deps` (what `make run`, `make test` and .ci/run call first), run for real.

The shared servers of this machine are never touched: "Redis is down" is a REDIS_URL on a free port,
"Redis is not installed" is a PATH without redis-server, and "Docker answers" is a stand-in `docker`
on PATH whose `compose up` starts a throwaway redis-server. Every Redis these tests start is shut
down by its own port afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oauthctl import deps
from tests.support.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server")
needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed here")


def run_deps(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "oauthctl.deps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    return done, time.monotonic() - started


@pytest.fixture
def redis_port() -> Iterator[int]:
    """A free port; whatever Redis a test starts there is shut down afterwards (only that one)."""
    port = free_port()
    yield port
    if deps.answers("127.0.0.1", port):
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True, timeout=10)


def base_env(port: int, path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AMQP_URL")}
    return {**env, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "PATH": path}


@needs_redis_server
def test_an_installed_redis_that_is_down_is_started(redis_port: int, tmp_path: Path) -> None:
    env = base_env(redis_port, os.environ["PATH"])
    done, _ = run_deps(env, "--wait", "20", "--redis-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Redis is installed but not answering at 127.0.0.1:{redis_port}: starting it" in done.stdout
    assert f"Redis is up at 127.0.0.1:{redis_port}" in done.stdout
    assert deps.answers("127.0.0.1", redis_port)
    ping = subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True, text=True, timeout=10)
    assert ping.stdout.strip() == "PONG"
    again, _ = run_deps(env)  # now nothing to do
    assert again.returncode == 0 and f"Redis answers at 127.0.0.1:{redis_port}" in again.stdout


def test_not_installed_and_no_docker_exits_at_once_naming_the_fix(redis_port: int, tmp_path: Path) -> None:
    done, took = run_deps(base_env(redis_port, str(tmp_path)), "--wait", "30")
    assert done.returncode == 1
    assert took < 10, f"took {took:.1f} s"
    out = done.stdout
    assert f"Redis (127.0.0.1:{redis_port}) not answering, not installed here, and no Docker engine answers." in out
    assert "sudo apt-get install -y redis-server" in out
    assert "docker compose -f deploy/compose.deps.yaml up -d" in out
    assert "PostgreSQL answers" in out and "RabbitMQ answers" in out  # the running ones are left alone


FAKE_DOCKER = """#!/bin/sh
# Stand-in Docker CLI: the engine "answers"; `compose ... up` records its arguments and starts
# the Redis it was asked for as a throwaway local redis-server.
echo "$@" >> {log}
case "$1" in
  info) exit 0 ;;
  compose) exec {redis} --daemonize yes --bind 127.0.0.1 --port {port} --save "" --appendonly no --dir {dir} ;;
esac
exit 1
"""


@needs_redis_server
def test_not_installed_with_docker_uses_the_compose_deps_file(redis_port: int, tmp_path: Path) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "docker.log"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(log=log, redis=REDIS_SERVER, port=redis_port, dir=tmp_path))
    docker.chmod(0o755)
    done, _ = run_deps(base_env(redis_port, str(bin_dir)), "--wait", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Redis not installed here; starting them with Docker" in done.stdout
    assert log.read_text().splitlines()[-1] == "compose -f deploy/compose.deps.yaml up -d redis"
    assert deps.answers("127.0.0.1", redis_port)


def test_a_remote_server_that_is_down_is_reported_not_started(tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": "redis://:secret@192.0.2.1:6379/0", "PATH": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    env.pop("AMQP_URL", None)
    done, took = run_deps(env, "--wait", "5")
    assert done.returncode == 1 and took < 15
    assert "Redis at 192.0.2.1:6379 (REDIS_URL) does not answer; it is not on this machine" in done.stdout
    assert "secret" not in done.stdout + done.stderr  # the URL's password is never printed


def test_a_start_that_never_answers_gives_up_after_the_wait(redis_port: int, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "redis-server"  # "installed", but starting it brings nothing up
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    done, took = run_deps(base_env(redis_port, str(bin_dir)), "--wait", "2", "--redis-dir", str(tmp_path))
    assert done.returncode == 1
    assert 2 <= took < 10
    assert f"Redis did not come up at 127.0.0.1:{redis_port} within 2 s" in done.stdout


def test_browser_missing_is_reported_not_fatal(tmp_path: Path) -> None:
    env = {**os.environ, "CHROMIUM_PATH": str(tmp_path / "no-chromium")}
    done, _ = run_deps(env, "--for", "test", "--browser")
    assert done.returncode == 0, done.stdout + done.stderr  # the browser tests themselves skip or fail
    assert f"no Chromium at {tmp_path / 'no-chromium'}: the browser tests will be SKIPPED (FAIL under CI=true)" in (
        done.stdout
    )
    assert "sudo apt-get install -y chromium" in done.stdout
