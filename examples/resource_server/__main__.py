"""``python -m examples.resource_server``: the example paid API (docs/spending.md).

OAUTH_SERVER            the platform's public base URL (its issuer)   (default http://localhost:8080)
ACCOUNT_INTERNAL_URL    the account service's own URL (internal API)   (default http://127.0.0.1:8083)
INTERNAL_SERVICE_TOKEN  the platform's internal API token              (required; never logged)
ACCESS_TOKEN_AUDIENCE   the platform's access-token audience           (default: the issuer)
RESOURCE_SERVER_PRICE   minor units charged per call                   (default 100)
RESOURCE_SERVER_PORT    port to listen on                              (default 3001)
"""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from .app import Config, build_app


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = os.environ
    try:
        config = Config(
            oauth_server=env.get("OAUTH_SERVER", "http://localhost:8080"),
            account_internal_url=env.get("ACCOUNT_INTERNAL_URL", "http://127.0.0.1:8083"),
            internal_token=env.get("INTERNAL_SERVICE_TOKEN", ""),
            price=int(env.get("RESOURCE_SERVER_PRICE", "100")),
            port=int(env.get("RESOURCE_SERVER_PORT", "3001")),
            audience=env.get("ACCESS_TOKEN_AUDIENCE", ""),
        )
    except ValueError as exc:
        print(f"resource server: {exc}", file=sys.stderr)
        return 2
    if not config.internal_token:
        print("resource server: INTERNAL_SERVICE_TOKEN must be set", file=sys.stderr)
        return 2
    logging.getLogger("example.resource_server").info(
        "resource server on http://%s:%s (platform %s, %s minor units per call)",
        config.host,
        config.port,
        config.oauth_server,
        config.price,
    )
    web.run_app(build_app(config), host=config.host, port=config.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
