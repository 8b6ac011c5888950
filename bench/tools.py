"""The benchmark's outside tools, installed on first use with a progress message: wrk (Debian's
package) and the peer, node ``oidc-provider`` at the version pinned in bench/peer/package.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEER_DIR = BENCH / "peer"


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def _run(cmd: list[str], **kw: object) -> bool:
    try:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, **kw).returncode == 0  # type: ignore[call-overload]  # noqa: S603
    except OSError:
        return False


def ensure_wrk() -> str:
    """The path of wrk, installing Debian's package if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise SystemExit("bench: wrk is missing and there is no apt-get; install wrk (https://github.com/wg/wrk)")
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else [])
    if os.geteuid() != 0 and not prefix:
        raise SystemExit("bench: wrk is missing; install it with 'apt-get install -y wrk' as root")
    say("installing wrk (apt-get install -y wrk) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _run([*prefix, apt, "install", "-y", "-qq", "wrk"], env=env):
        say("refreshing the package lists (apt-get update) ...")
        _run([*prefix, apt, "update", "-qq"], env=env)
        if not _run([*prefix, apt, "install", "-y", "-qq", "wrk"], env=env):
            raise SystemExit("bench: 'apt-get install -y wrk' failed; install wrk and run again")
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: wrk was installed but is not on PATH")
    return found


def peer_pin() -> str:
    deps = json.loads((PEER_DIR / "package.json").read_text())["dependencies"]
    return str(deps["oidc-provider"])


def ensure_peer() -> str | None:
    """``node`` when the peer is installed (npm install on first use), else None with the reason said."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        say("node/npm not found: the peer's column will be n/a (install Node.js 20+ to compare)")
        return None
    installed = PEER_DIR / "node_modules" / "oidc-provider" / "package.json"
    pin = peer_pin()
    if installed.exists() and json.loads(installed.read_text()).get("version") == pin:
        return node
    say(f"installing the peer (npm install --prefix bench/peer oidc-provider@{pin}) ...")
    cmd = [npm, "install", "--prefix", str(PEER_DIR), "--no-audit", "--no-fund", "--save-exact", f"oidc-provider@{pin}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0 or not installed.exists():
        say(f"npm install failed, the peer's column will be n/a:\n{proc.stderr[-2000:]}")
        return None
    return node


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"
