"""The account service: users, developer tokens, OAuth apps, balances, userinfo and top-up."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from libs.oauth.access_tokens import setup_tokens
from libs.oauth.events.bus import setup_events
from libs.oauth.pages import setup_pages
from libs.oauth.revocation import setup_revocation
from libs.oauth.sessions import enable_csrf
from libs.platform.config import Settings
from libs.platform.web import create_app

from . import (
    apps,
    cors_origins,
    developer_console,
    developer_tool,
    internal_quota,
    password_reset,
    register,
    strings,
    user_cache,
    user_center,
    userinfo,
)

TEMPLATES = Path(__file__).parent / "templates"


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("account", settings)
    setup_events(app)  # outbox relay, this instance's event queue, client cache
    setup_revocation(app)  # the access-token verifier's revocation check, kept by events
    user_cache.setup(app)  # userinfo's users, kept by quota.changed / user.* events
    setup_tokens(app)
    cors_origins.setup(app)  # the gateway's CORS origins (Redis), rebuilt at start and periodically
    setup_pages(app, TEMPLATES)
    enable_csrf(app)
    strings.register()
    apps.add_routes(app)
    userinfo.add_routes(app)
    register.add_routes(app)
    password_reset.add_routes(app)
    user_center.add_routes(app)
    developer_console.add_routes(app)
    developer_tool.add_routes(app)
    internal_quota.add_routes(app)
    return app
