"""docs/operations.md documents every setting the code reads, and nothing that is not a setting."""

from __future__ import annotations

import re
from pathlib import Path

from libs.platform.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \|", re.MULTILINE)


def documented() -> set[str]:
    return set(ROW.findall(DOC.read_text(encoding="utf-8")))


def test_every_setting_is_documented() -> None:
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in documented())
    assert missing == [], f"add these settings to docs/operations.md: {missing}"


def test_every_documented_setting_exists() -> None:
    unknown = sorted(name for name in documented() if name.lower() not in Settings.model_fields)
    assert unknown == [], f"docs/operations.md lists settings the code does not read: {unknown}"


def test_documented_defaults_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, bool):
            shown = str(default).lower()
        elif isinstance(default, float) and default.is_integer():
            shown = str(int(default))
        else:
            shown = str(default)
        if not shown:
            continue  # computed or required: the row explains it
        row = re.search(rf"^\| `{name.upper()}` \| `([^`]*)` \|", text, re.MULTILINE)
        assert row, f"{name.upper()}: its default should be shown as `{shown}`"
        assert row.group(1) == shown, f"{name.upper()}: docs say {row.group(1)!r}, code says {shown!r}"
