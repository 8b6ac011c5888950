"""User codes of the device authorization grant (RFC 8628 6.1; docs/device.md).

A user code is 8 characters from ``ALPHABET``: 20 consonants without vowels (no words can be
spelled) and without look-alikes (no 0/O, 1/I/L, 5/S... only letters, and of those not I, O, U,
or Y), shown as ``XXXX-XXXX``. That is 20^8 (about 2^34.6) codes; with the guess limits on /device
(per session and per IP, docs/operations.md "Device flow") and a code life of minutes, guessing a
live code is out of reach (RFC 8628 5.1).

What the user types is compared in its normal form: case-insensitive, with dashes, spaces and other
punctuation dropped (RFC 8628 6.1: "SHOULD ignore the characters like punctuation"). Full-width letters typed on a Chinese keyboard are folded by NFKC first.
Codes are stored only as ``token_hash(pepper, normal form)``.
"""

from __future__ import annotations

import secrets
import unicodedata

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
LENGTH = 8
MAX_INPUT = 64  # anything longer is not a typed user code


def new_user_code() -> str:
    """A fresh code in its normal form (8 letters), from the CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def shown(code: str) -> str:
    """The display form ``XXXX-XXXX`` of a normal-form code."""
    half = LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def normalize(typed: str) -> str | None:
    """The normal form of what a user typed, or None when it cannot be a user code."""
    if not typed or len(typed) > MAX_INPUT:
        return None
    folded = unicodedata.normalize("NFKC", typed).upper()
    letters = "".join(c for c in folded if c.isalnum())
    if len(letters) != LENGTH or any(c not in ALPHABET for c in letters):
        return None
    return letters
