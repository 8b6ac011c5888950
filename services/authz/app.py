"""The authz service: login sessions, login/consent pages, /api/oauth2/authorize, codes, consent
records.

The composition root (docs/architecture.md): ``build`` creates each dependency once, declares the
service's event table, then adds the routes."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from libs.oauth.caches import drop_client
from libs.oauth.events.bus import setup_events
from libs.oauth.events.types import ClientDeleted, ClientSecretRotated, ClientUpdated
from libs.oauth.pages import setup_pages
from libs.oauth.sessions import enable_csrf
from libs.platform.config import Settings
from libs.platform.web import create_app

from . import authorizations, authorize, consent, device, login, spend_limits, strings  # noqa: F401 - strings registers the page texts


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("authz", settings)
    bus = setup_events(app)  # outbox relay, this instance's event queue, client cache
    bus.subscribe(
        {
            ClientUpdated: (drop_client,),
            ClientDeleted: (drop_client,),
            ClientSecretRotated: (drop_client,),
        }
    )
    setup_pages(app, Path(__file__).parent / "templates")
    enable_csrf(app)
    login.add_routes(app)
    authorize.add_routes(app)
    consent.add_routes(app)
    authorizations.add_routes(app)
    spend_limits.add_routes(app)
    device.add_routes(app)
    return app
