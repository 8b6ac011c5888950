"""The OpenAPI document (services/gateway/openapi.py, served at /api/openapi.json) describes exactly
the public API the services register: no undocumented API route, no documented route that is not
there. Browser pages are listed here explicitly as not being API."""

from __future__ import annotations

import re
from importlib import import_module

import pytest
from aiohttp import web

from libs.platform.config import Settings
from services.gateway import openapi
from services.gateway.routes import route_for

SETTINGS = Settings(token_pepper="x" * 40, public_base_url="https://auth.example")
# Served for people, not programs: HTML pages and their form posts; and each service's own
# health/metrics (not routed by the gateway as API).
PAGES = {
    "/login",
    "/logout",
    "/consent",
    "/device",
    "/device/consent",
    "/register",
    "/password/forgot",
    "/password/reset",
    "/password/reset/done",
    "/user",
    "/user/topup",
    "/user/authorizations",
    "/user/authorizations/{client_id}/revoke",
    "/user/authorizations/{client_id}/spend",
    "/user/authorizations/{client_id}/spend/stop",
    "/developer",
    "/developer/apps",
    "/developer/apps/{app_id}",
    "/developer/apps/{app_id}/delete",
    "/developer/apps/{app_id}/secret",
    "/developer/tokens",
    "/developer/tokens/{token_id}/revoke",
    "/developer/apps/{app_id}/test",
    "/developer/apps/{app_id}/tool-callback",
    "/developer/tool/callback",
    "/developer/static/tool.js",
}
OPERATIONAL = {"/healthz", "/readyz", "/metrics", "/", "/{tail}", "/favicon.ico", "/assets/{name}"}
METHODS = {"get", "post", "put", "delete", "patch"}


def registered() -> set[tuple[str, str]]:
    """(METHOD, path) of every public API route of every service (HEAD twins of GET left out)."""
    found: set[tuple[str, str]] = set()
    for service in ("account", "authz", "token", "gateway"):
        app: web.Application = import_module(f"services.{service}.app").build(SETTINGS)
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", info.get("formatter", ""))
            if route.method == "HEAD" or path in PAGES | OPERATIONAL or path.startswith("/internal/"):
                continue
            found.add((route.method, path))
    return found


def documented() -> set[tuple[str, str]]:
    paths = openapi.document()["paths"]
    return {(m.upper(), p) for p, item in paths.items() for m in item if m in METHODS}


def test_every_public_api_route_is_documented_and_nothing_else() -> None:
    routes = registered()
    docs = documented()
    assert routes - docs == set(), "routes missing from the OpenAPI document"
    assert docs - routes == set(), "documented operations no service registers"


@pytest.mark.parametrize("path", sorted({p for _, p in documented()}))
def test_every_documented_path_is_routed_by_the_gateway(path: str) -> None:
    concrete = re.sub(r"\{\w+\}", "1", path)
    assert path == openapi.PATH or route_for(concrete) is not None


def test_the_document_is_valid_openapi_3_1() -> None:
    from jsonschema.validators import validator_for
    from openapi_spec_validator import validate

    doc = openapi.document()
    validate(doc)
    for name, schema in doc["components"]["schemas"].items():
        validator_for(schema).check_schema(schema)


def test_every_operation_declares_a_default_error_response() -> None:
    """429 and 503 can come from any operation (rate limits, a dependency down)."""
    for path, item in openapi.document()["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                assert "default" in op["responses"], (method, path)


def test_every_operation_has_a_unique_operation_id_for_client_generators() -> None:
    ids = [
        op["operationId"]
        for item in openapi.document()["paths"].values()
        for method, op in item.items()
        if method in METHODS
    ]
    assert len(ids) == len(set(ids)) == len(documented())
