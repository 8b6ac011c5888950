"""Secrets: generation (CSPRNG), keyed hashing for high-entropy tokens, password hashing.

Client secrets, developer tokens, refresh tokens and codes are 256-bit random values, so a keyed
fast hash (HMAC-SHA256 with a server pepper) is the right store for them: it cannot be brute
forced and it keeps the token endpoint fast. Only passwords, which people choose, get argon2.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .cpus import usable_cpus

TOKEN_BYTES = 32  # 256 bits

_hasher = PasswordHasher()
# A valid hash of a random password (generated once and thrown away), verified when the user does
# not exist, so a login for an unknown account takes as long as one for a known account (no user
# enumeration by timing). Only its parameters matter for that, and they are the hasher's (else one
# is made at start-up, as every start once did: 170 ms of CPU). Matching it logs nobody in:
# verify_password_sync answers False without a stored hash.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$7LPCVu2PQuMUezodHZqW2A$Gdz17glU86o1MljLEpJCl/OJLaqin51VUkoTRIHZK7U"
if _hasher.check_needs_rehash(_DUMMY_HASH):  # pragma: no cover - argon2-cffi changed its defaults
    _DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(32))

# The threads argon2 runs in, one per CPU the process may use (libs/platform/cpus.py). Each hash
# or verify holds ``memory_cost`` (64 MiB) while it runs, so a burst of logins holds at most
# PASSWORD_THREADS x 64 MiB; the others wait their turn. asyncio's default executor would run up to
# min(32, cores + 4) at once, counting the node's cores, not the pod's CPU limit
# (docs/operations.md "Password hashing").
PASSWORD_THREADS = usable_cpus()
PASSWORD_MEMORY_BYTES = _hasher.memory_cost * 1024  # argon2's memory_cost is in KiB
_password_pool = ThreadPoolExecutor(PASSWORD_THREADS, thread_name_prefix="argon2")


def new_token(prefix: str) -> str:
    """``<prefix>_<43 url-safe chars>``: 256 bits from the OS CSPRNG."""
    return token_from(prefix, secrets.token_bytes(TOKEN_BYTES))


def token_from(prefix: str, random_bytes: bytes) -> str:
    """``<prefix>_<url-safe base64 of random_bytes, unpadded>`` (new_token's shape, as
    ``secrets.token_urlsafe``), for a caller that drew ``random_bytes`` from the OS CSPRNG
    (``os.urandom``) together with its other random values in one call."""
    return f"{prefix}_{base64.urlsafe_b64encode(random_bytes).rstrip(b'=').decode('ascii')}"


def token_hash(pepper: bytes, token: str) -> bytes:
    return hmac.new(pepper, token.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def same(a: bytes | str, b: bytes | str) -> bool:
    """Constant-time equality for secrets."""
    if isinstance(a, str):
        a = a.encode("utf-8", "surrogatepass")
    if isinstance(b, str):
        b = b.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(a, b)


def hash_password_sync(password: str) -> str:
    return _hasher.hash(password)


def verify_password_sync(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    # argon2 costs tens of milliseconds of CPU: keep it off the event loop, in the bounded pool.
    return await asyncio.get_running_loop().run_in_executor(_password_pool, hash_password_sync, password)


async def verify_password(stored: str | None, password: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(_password_pool, verify_password_sync, stored, password)
