"""``python -m examples.third_party_app``: read the configuration from the environment once and serve.

OAUTH_SERVER         the platform's public base URL          (default http://localhost:8080)
OAUTH_CLIENT_ID      the app's client_id                     (required)
OAUTH_CLIENT_SECRET  the app's client_secret                 (required; never logged, never sent to browsers
                     except by the guide's SDK page at /sdk/, see EXAMPLE_SDK_PAGE)
OAUTH_REDIRECT_URI   the registered callback of this app     (default http://localhost:3000/oauth/callback)
EXAMPLE_PORT         port to listen on                        (default 3000)
EXAMPLE_HOST         address to bind                          (default 127.0.0.1)
EXAMPLE_SDK_PAGE     serve the guide's browser SDK page at /sdk/ (default 1; 0 turns it off)
RESOURCE_SERVER_URL  the example paid API (examples/resource_server) behind the spend button (default: none)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from aiohttp import web

from .app import Config, PathOnlyAccessLogger, build_app

log = logging.getLogger("example.third_party_app")


def config_from_env(env: Mapping[str, str]) -> Config:
    port_text = env.get("EXAMPLE_PORT", "3000")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"EXAMPLE_PORT must be a port number, got {port_text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"EXAMPLE_PORT must be between 1 and 65535, got {port}")
    config = Config(
        oauth_server=env.get("OAUTH_SERVER", "http://localhost:8080"),
        client_id=env.get("OAUTH_CLIENT_ID", ""),
        client_secret=env.get("OAUTH_CLIENT_SECRET", ""),
        redirect_uri=env.get("OAUTH_REDIRECT_URI", "http://localhost:3000/oauth/callback"),
        port=port,
        host=env.get("EXAMPLE_HOST", "127.0.0.1"),
        serve_sdk_page=env.get("EXAMPLE_SDK_PAGE", "1").strip().lower() not in ("0", "false", "no", "off"),
        resource_server_url=env.get("RESOURCE_SERVER_URL", ""),
    )
    missing = [
        name
        for name, value in (("OAUTH_CLIENT_ID", config.client_id), ("OAUTH_CLIENT_SECRET", config.client_secret))
        if not value
    ]
    if missing:
        raise ValueError(f"{' and '.join(missing)} must be set (create an app with POST /api/oauth_apps)")
    return config


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_env(os.environ)
    except ValueError as exc:  # Config's own checks raise ValueError too
        print(f"example app: {exc}", file=sys.stderr)
        return 2
    log.info(
        "example app on http://%s:%s (platform %s, client_id %s, redirect_uri %s)",
        config.host,
        config.port,
        config.oauth_server,
        config.client_id,
        config.redirect_uri,
    )
    try:
        web.run_app(
            build_app(config),
            host=config.host,
            port=config.port,
            access_log_class=PathOnlyAccessLogger,
            access_log=logging.getLogger("example.access"),
            print=None,
        )
    except OSError as exc:
        print(f"example app: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
