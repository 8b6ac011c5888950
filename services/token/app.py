"""The token service: token endpoint, refresh tokens, revocation, introspection, signing keys, JWKS."""

from __future__ import annotations

from aiohttp import web

from libs.oauth.access_tokens import setup_tokens
from libs.oauth.events.bus import setup_events
from libs.oauth.revocation import setup_revocation
from libs.platform.config import Settings
from libs.platform.web import create_app

from . import device_authorization, discovery, introspect, jwks, revocation_endpoint, token_endpoint
from .id_tokens import setup_id_tokens


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("token", settings)
    setup_events(app)  # outbox relay, this instance's event queue, client cache
    setup_revocation(app)  # the access-token verifier's revocation check, kept by events
    setup_tokens(app, create_first_key=True)
    setup_id_tokens(app)  # after setup_tokens: uses its KeyStore
    token_endpoint.add_routes(app)
    device_authorization.add_routes(app)
    jwks.add_routes(app)
    revocation_endpoint.add_routes(app)
    introspect.setup_cache(app)  # after setup_revocation: relies on its event-fed family check
    introspect.add_routes(app)
    discovery.add_routes(app)
    return app
