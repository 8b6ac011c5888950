"""The account service: users, developer tokens, OAuth apps, balances, userinfo and top-up.

The composition root (docs/architecture.md): ``build`` creates each dependency once and hands it
to what needs it, declares the service's event table, then adds the routes."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from libs.contracts.token import VERIFYING_KEYS, revoked_in_db
from libs.oauth.access_tokens import setup_tokens
from libs.oauth.caches import drop_client
from libs.oauth.events.bus import setup_events
from libs.oauth.events.types import (
    AuthorizationRevoked,
    ClientDeleted,
    ClientSecretRotated,
    ClientUpdated,
    QuotaChanged,
    TokenRevoked,
    UserDisabled,
    UserUpdated,
)
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
    spending,
    strings,
    user_cache,
    user_center,
    userinfo,
)

TEMPLATES = Path(__file__).parent / "templates"


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("account", settings)
    bus = setup_events(app)  # outbox relay, this instance's event queue, client cache
    revocations = setup_revocation(app, bus, revoked_in_db)  # the verifier's revocation check, kept by events
    users = user_cache.setup(app, bus)  # userinfo's and top-up's users
    bus.subscribe(
        {
            TokenRevoked: (revocations.on_event,),
            AuthorizationRevoked: (revocations.on_event,),
            UserDisabled: (revocations.on_event, users.drop),
            UserUpdated: (users.drop,),
            QuotaChanged: (users.drop,),
            ClientDeleted: (drop_client, revocations.on_event),
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
    setup_tokens(app, VERIFYING_KEYS, revocations=revocations)
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
    spending.add_routes(app)
    return app
