"""The authz service: login sessions, login/consent pages, /api/oauth2/authorize, codes, grants."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from libs.oauth.events.bus import setup_events
from libs.oauth.pages import setup_pages
from libs.oauth.sessions import enable_csrf
from libs.platform.config import Settings
from libs.platform.web import create_app

from . import authorizations, authorize, consent, device, login, strings  # noqa: F401 - strings registers the page texts


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("authz", settings)
    setup_events(app)  # outbox relay, this instance's event queue, client cache
    setup_pages(app, Path(__file__).parent / "templates")
    enable_csrf(app)
    login.add_routes(app)
    authorize.add_routes(app)
    consent.add_routes(app)
    authorizations.add_routes(app)
    device.add_routes(app)
    return app
