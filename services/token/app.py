"""The token service: token endpoint, refresh tokens, revocation, introspection, signing keys, JWKS.

The composition root (docs/architecture.md): ``build`` creates each dependency once and hands it
to what needs it, declares the service's event table, then adds the routes."""

from __future__ import annotations

from aiohttp import web

from libs.contracts.token import SIGNING_KEYS, revoked_in_db
from libs.oauth.access_tokens import setup_tokens
from libs.oauth.caches import drop_client
from libs.oauth.events.bus import setup_events
from libs.oauth.events.types import (
    AuthorizationRevoked,
    ClientDeleted,
    ClientSecretRotated,
    ClientUpdated,
    TokenRevoked,
    UserDisabled,
    UserUpdated,
)
from libs.oauth.revocation import setup_revocation
from libs.platform.config import Settings
from libs.platform.web import create_app

from . import device_authorization, discovery, introspect, jwks, revocation_endpoint, token_endpoint
from .id_tokens import load_id_keys


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("token", settings)
    bus = setup_events(app)  # outbox relay, this instance's event queue, client cache
    revocations = setup_revocation(app, bus, revoked_in_db)  # the verifier's revocation check, kept by events
    introspected = introspect.setup_cache(app, bus, revocations)
    bus.subscribe(
        {
            TokenRevoked: (revocations.on_event, introspected.on_revoked),
            AuthorizationRevoked: (revocations.on_event, introspected.on_revoked),
            UserDisabled: (revocations.on_event, introspected.on_revoked, introspected.on_user),
            UserUpdated: (introspected.on_user,),
            ClientDeleted: (drop_client, revocations.on_event, introspected.on_revoked),
            ClientUpdated: (drop_client,),
            ClientSecretRotated: (drop_client,),
        },
        after_commit={
            TokenRevoked: (revocations.write_shared_state,),
            AuthorizationRevoked: (revocations.write_shared_state,),
            UserDisabled: (revocations.write_shared_state,),
            ClientDeleted: (revocations.write_shared_state,),
        },
    )
    setup_tokens(app, SIGNING_KEYS, revocations=revocations, create_first_key=True, then=load_id_keys)
    token_endpoint.add_routes(app)
    device_authorization.add_routes(app)
    jwks.add_routes(app)
    revocation_endpoint.add_routes(app)
    introspect.add_routes(app)
    discovery.add_routes(app)
    return app
