"""The account service: users, developer tokens, OAuth apps, balances, userinfo and top-up."""

from __future__ import annotations

from aiohttp import web

from libs.common.config import Settings
from libs.common.web import create_app

from . import apps


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("account", settings)
    apps.add_routes(app)
    return app
