"""Schemathesis over every operation of the OpenAPI document (/api/openapi.json) against the real
stack, with valid credentials: no 5xx, no undeclared status or content type (a text/plain error
fails), every body and header as the document says. Bounded here; ``make fuzz`` runs longer
(FUZZ_EXAMPLES)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiohttp
import asyncpg

from libs.platform.config import Settings
from tests.support.fuzz import credentials, run_schemathesis
from tests.support.stack import Stack

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
TIMEOUT = float(os.environ.get("FUZZ_TIMEOUT", "300"))


async def test_schemathesis_finds_nothing(
    stack: Stack, http: aiohttp.ClientSession, db: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    creds = await credentials(http, stack.base, db, settings)
    start = time.monotonic()
    out = await run_schemathesis(stack.base, creds, tmp_path, max_examples=MAX_EXAMPLES, within=TIMEOUT)
    print(f"schemathesis: {time.monotonic() - start:.1f} s\n{out[-3000:]}")
