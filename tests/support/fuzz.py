"""Schemathesis against a running stack (tests/integration/test_schemathesis.py and ``make fuzz``):
valid credentials for every security scheme of the OpenAPI document (services/gateway/openapi.py),
then the ``schemathesis`` CLI in a subprocess, so the stack keeps serving on this event loop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from libs.platform.config import Settings
from tests.support.codes import make_client, obtain_tokens
from tests.support.factories import make_developer, make_user
from tests.support.oauth import login

# Every failure that matters here: a 5xx, a status, content type, header or body the document does
# not declare (so a text/plain error fails content_type_conformance).
ROOT = Path(__file__).resolve().parents[2]
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)


@dataclass(frozen=True)
class Credentials:
    developer_token: str
    client_id: str
    client_secret: str
    access_token: str
    session_id: str
    csrf_cookie: str
    csrf_token: str


async def credentials(http: aiohttp.ClientSession, base: str, db: asyncpg.Pool, settings: Settings) -> Credentials:
    """A developer token, a confidential client, a user's access token and a login session."""
    _, developer_token = await make_developer(db, settings)
    client = await make_client(db, settings)
    tokens = await obtain_tokens(http, base, db, settings, client, scope="openid profile email balance")
    user = await make_user(db, password="fuzzing password 1")
    await login(http, base, user.username, "fuzzing password 1")
    async with http.get(f"{base}/api/user/authorizations") as r:
        assert r.status == 200, await r.text()
        csrf_token = r.headers["X-CSRF-Token"]
    cookies = {c.key: c.value for c in http.cookie_jar}
    return Credentials(
        developer_token,
        client.client_id,
        client.client_secret or "",
        tokens["access_token"],
        cookies["sid"],
        cookies["csrf"],
        csrf_token,
    )


def config_toml(creds: Credentials) -> str:
    """schemathesis.toml: the credentials per securityScheme name of the document."""
    q = json.dumps  # TOML basic strings accept JSON string escapes for these ASCII values
    return f"""
[auth.openapi.developerToken]
bearer = {q(creds.developer_token)}

[auth.openapi.accessToken]
bearer = {q(creds.access_token)}

[auth.openapi.clientBasic]
username = {q(creds.client_id)}
password = {q(creds.client_secret)}

[auth.openapi.sessionCookie]
api_key = {q(creds.session_id)}

[auth.openapi.csrfCookie]
api_key = {q(creds.csrf_cookie)}

[auth.openapi.csrfHeader]
api_key = {q(creds.csrf_token)}
"""


async def run_schemathesis(base: str, creds: Credentials, workdir: Path, *, max_examples: int, within: float) -> str:
    """Run the CLI against ``base``; the output if it passed, AssertionError with the output if not."""
    config = workdir / "schemathesis.toml"
    config.write_text(config_toml(creds))
    cli = str(Path(sys.executable).with_name("schemathesis"))
    proc = await asyncio.create_subprocess_exec(
        cli,
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{base}/api/openapi.json",
        "--checks",
        os.environ.get("FUZZ_CHECKS", CHECKS),
        "--max-examples",
        str(max_examples),
        "--generation-deterministic",
        "--report-dir",
        str(workdir / "report"),
        cwd=workdir,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.fuzz_hooks", "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"schemathesis did not finish in {within} s") from None
    text = out.decode(errors="replace")
    (workdir / "output.txt").write_text(text)
    if proc.returncode != 0:
        # Generated URLs can be kilobytes long: keep every line readable.
        short = "\n".join(line if len(line) < 400 else line[:400] + " ..." for line in text.splitlines())
        raise AssertionError(f"schemathesis failed (exit {proc.returncode}), {workdir}/output.txt:\n{short[-30000:]}")
    return text
