"""Email addresses: the stored form, and the skeleton that makes look-alikes collide.

Normalised form (what is stored and shown): NFKC (full-width and compatibility characters become
their plain forms), surrounding spaces trimmed, the domain lower-cased (RFC 5321 2.4: domains are
case-insensitive; the local part is kept as typed).

Skeleton (Unicode TR39 section 4, "confusable detection"): every character replaced by its
prototype, so ``exаmple@x.com`` with a Cyrillic ``а`` and ``example@x.com`` share one skeleton.
``users.email_skeleton`` has a unique index (migration 0005), so refusing a look-alike of an
existing address is race-free: the INSERT itself fails. The prototypes come from the Unicode
confusables data shipped with ``confusable_homoglyphs`` (each confusable character -> the Latin
look-alike when it has one), plus TR39's own mappings among ASCII characters.
"""

from __future__ import annotations

import json
import unicodedata
from functools import cache
from importlib.resources import files

# TR39 confusables.txt among ASCII: 0 -> O, 1/I/| -> l, m -> rn (applied before case folding).
_ASCII_PROTOTYPES = {"0": "O", "1": "l", "I": "l", "|": "l", "m": "rn"}


def normalize_email(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw).strip()
    local, at, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}" if at else text


@cache
def _latin_prototypes() -> dict[str, str]:
    """Each non-ASCII confusable character -> its ASCII look-alike (when it has one)."""
    data = json.loads(files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8"))
    table: dict[str, str] = {}
    for char, homoglyphs in data.items():
        if len(char) != 1 or char.isascii():
            continue
        ascii_forms = [h["c"] for h in homoglyphs if h["c"].isascii() and h["c"].isprintable()]
        if ascii_forms:
            table[char] = ascii_forms[0]
    return table


def _prototypes(text: str) -> str:
    table = _latin_prototypes()
    out = []
    for char in text:
        proto = table.get(char, char)
        out.append("".join(_ASCII_PROTOTYPES.get(c, c) for c in proto))
    return "".join(out)


def skeleton(email: str) -> str:
    """The TR39 skeleton of a normalised address, case-insensitive like the existing unique index
    on lower(email): prototypes, case folding, prototypes again (case folding can produce
    characters that have one), NFD."""
    text = unicodedata.normalize("NFD", normalize_email(email))
    return unicodedata.normalize("NFD", _prototypes(_prototypes(text).casefold()))
