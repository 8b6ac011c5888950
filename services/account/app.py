"""The account service: users, developer tokens, OAuth apps, balances, userinfo and top-up."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from libs.common.access_tokens import setup_tokens
from libs.common.config import Settings
from libs.common.pages import setup_pages
from libs.common.sessions import enable_csrf
from libs.common.web import create_app

from . import apps, developer_console, register, strings, user_center, userinfo

TEMPLATES = Path(__file__).parent / "templates"


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("account", settings)
    setup_tokens(app)
    setup_pages(app, TEMPLATES)
    enable_csrf(app)
    strings.register()
    apps.add_routes(app)
    userinfo.add_routes(app)
    register.add_routes(app)
    user_center.add_routes(app)
    developer_console.add_routes(app)
    return app
