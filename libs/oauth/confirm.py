"""The confirm step of destructive actions (rotate a client secret, delete an app, revoke an
authorization or a developer token): a page with a POST form (CSRF token) that works without
JavaScript, as GitHub's "Are you sure?" pages do.

The action's form posts to the action URL without ``confirm``; the handler answers with this page
(``confirm_page``), whose form posts again with ``confirm=1``; only then does the action run
(``confirmed``). The same page is served by GET on the action URL, so a link works too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .pages import add_strings, render

CONFIRM_FIELD = "confirm"

add_strings(
    {
        "zh": {
            "confirm.title": "请确认",
            "confirm.cancel": "取消",
            "confirm.irreversible": "此操作无法撤销。",
        },
        "en": {
            "confirm.title": "Please confirm",
            "confirm.cancel": "Cancel",
            "confirm.irreversible": "This cannot be undone.",
        },
    }
)


@dataclass(frozen=True)
class Choice:
    """One radio option of the confirm form (e.g. the grace period of a secret rotation)."""

    value: str
    label: str
    checked: bool = False


@dataclass(frozen=True)
class Confirmation:
    title: str
    message: str
    action: str  # where the confirmed form posts
    button: str
    back: str  # the page the cancel link returns to
    danger: bool = True
    choice_name: str = ""
    choice_legend: str = ""
    choices: tuple[Choice, ...] = field(default_factory=tuple)


def confirmed(form: Any) -> bool:
    """Did the user press the confirm page's button (``confirm=1`` in the posted form)?"""
    return form.get(CONFIRM_FIELD) == "1"


async def confirm_page(request: web.Request, confirmation: Confirmation) -> web.Response:
    return await render(request, "confirm.html", confirmation=confirmation, confirm_field=CONFIRM_FIELD)
