"""The integration test tool of the developer console (the guide's Q4: "使用我们提供的测试工具验证
授权流程"): ``/developer/apps/{app_id}/test``.

For one of the developer's apps the page builds the authorize URL (scopes, PKCE S256, state,
auto_authorize), runs the flow in a popup and shows each step: the callback parameters, the token
response (tokens masked), the decoded access-token and id_token claims and the userinfo response;
plus the same calls as copy-paste code in eight languages (``snippets``).

Safety: the popup's redirect_uri is the platform's own tool callback
(``libs.oauth.clients.TOOL_CALLBACK_PATH``), which the developer adds to the app with one button
(``POST /developer/apps/{app_id}/tool-callback``). The callback page gives the parameters only to a
same-origin opener (``postMessage`` with this origin as target), and the page exchanges the code
itself with the PKCE verifier it generated and no client secret: the token service accepts that
only for codes sent to the tool callback (services/token/client_auth.py "tool exchange"). No secret
reaches the browser, and the scripts are static files (the pages' CSP allows no inline script).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from libs.oauth.clients import TOOL_CALLBACK_PATH, tool_callback_url
from libs.oauth.pages import render, translator
from libs.oauth.vocabulary import SCOPES
from libs.platform.errors import ApiError
from libs.platform.lang import pick_lang
from libs.platform.web import PG, SETTINGS

from . import apps, cors_origins, strings_safety  # noqa: F401 - strings_safety registers the texts
from .browser import posted_form, redirect, require_user
from .developer_console import own_app
from .snippets import snippets

STATIC = Path(__file__).parent / "static"


async def handle_tool(request: web.Request) -> web.Response:
    user = await require_user(request)
    app = await own_app(request, user)
    base = request.app[SETTINGS].public_base_url
    callback = tool_callback_url(base)
    example_redirect = next((u for u in app["redirect_uris"] if u != callback), app["redirect_uris"][0])
    return await render(
        request,
        "developer_tool.html",
        app=app,
        callback=callback,
        callback_registered=callback in app["redirect_uris"],
        scopes=SCOPES,
        snippets=snippets(base, app["client_id"], example_redirect, public=app["token_endpoint_auth_method"] == "none"),
        public=app["token_endpoint_auth_method"] == "none",
        error=request.query.get("error") == "full",
    )


async def handle_add_callback(request: web.Request) -> web.Response:
    user = await require_user(request, back=f"/developer/apps/{request.match_info['app_id']}/test")
    await posted_form(request)
    app = await own_app(request, user)
    callback = tool_callback_url(request.app[SETTINGS].public_base_url)
    target = f"/developer/apps/{app['id']}/test"
    if callback not in app["redirect_uris"]:
        try:
            await apps.update_app(
                request.app[PG], user.id, app["id"], {"redirect_uris": [*app["redirect_uris"], callback]}
            )
        except ApiError:  # already 10 redirect URIs
            return redirect(target + "?error=full")
        await cors_origins.refresh(request.app)
    return redirect(target)


async def handle_callback(request: web.Request) -> web.Response:
    """Where the popup lands: its script hands the query to the opening tool page and closes."""
    t = translator(pick_lang(request))
    return await render(request, "tool_callback.html", message=t("acct.tool.callback_done"))


async def handle_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "tool.js", headers={"Content-Type": "text/javascript; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/developer/apps/{app_id}/test", handle_tool)
    app.router.add_post("/developer/apps/{app_id}/tool-callback", handle_add_callback)
    app.router.add_get(TOOL_CALLBACK_PATH, handle_callback)
    app.router.add_get("/developer/static/tool.js", handle_script)
