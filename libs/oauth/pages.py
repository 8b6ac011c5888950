"""Server-rendered pages: Jinja2 (autoescaped), a shared layout, Chinese and English.

Each service has ``templates/`` beside its modules; ``libs/oauth/templates`` holds the layout.
Strings live in per-service dictionaries registered with ``add_strings``; templates call
``t("key")``. The language is ``?lang=``, then the ``lang`` cookie, then Accept-Language; default zh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from libs.platform.lang import LANGS, pick_lang
from libs.platform.web import SETTINGS

from .sessions import CSRF_FIELD, csrf_token, current_session

ENV = web.AppKey("jinja_env", jinja2.Environment)
STRINGS: dict[str, dict[str, str]] = {"zh": {}, "en": {}}

add_common = {
    "zh": {
        "site.name": "开放平台",
        "nav.user": "用户中心",
        "nav.authorizations": "授权管理",
        "nav.topup": "充值",
        "nav.developer": "开发者",
        "nav.login": "登录",
        "nav.logout": "退出登录",
        "nav.register": "注册",
        "lang.switch": "English",
    },
    "en": {
        "site.name": "Open Platform",
        "nav.user": "Account",
        "nav.authorizations": "Authorized apps",
        "nav.topup": "Top up",
        "nav.developer": "Developers",
        "nav.login": "Log in",
        "nav.logout": "Log out",
        "nav.register": "Sign up",
        "lang.switch": "中文",
    },
}


def add_strings(strings: dict[str, dict[str, str]]) -> None:
    for lang, table in strings.items():
        STRINGS[lang].update(table)


add_strings(add_common)


def setup_pages(app: web.Application, templates: Path) -> None:
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(str(templates)), jinja2.FileSystemLoader(str(Path(__file__).parent / "templates"))]
        ),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )
    app[ENV] = env


MAX_NEXT = 4096


def safe_next(value: object, default: str = "/user") -> str:
    """``value`` if it is a path on this site, else ``default`` (no open redirect after login).

    A local path starts with one "/"; "//host" and "/\\host" are other sites to a browser, and
    browsers drop tabs and line breaks from URLs ("/\\t/host" is "//host"), so any backslash,
    whitespace or control character is refused too.
    """
    if not isinstance(value, str) or not value.startswith("/") or len(value) > MAX_NEXT:
        return default
    if value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 32 or ord(c) == 127 or c.isspace() for c in value):
        return default
    return value


def translator(lang: str):  # type: ignore[no-untyped-def]
    table = STRINGS[lang]
    fallback = STRINGS["zh"]

    def t(k: str, **kw: Any) -> str:
        text = table.get(k) or fallback.get(k) or k
        return text.format(**kw) if kw else text

    return t


async def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    lang = pick_lang(request)
    session = await current_session(request)
    ctx = {
        "t": translator(lang),
        "lang": lang,
        "other_lang": "en" if lang == "zh" else "zh",
        # the header's language switch; a page whose query matters passes its own lang_url
        "lang_url": "?lang=" + ("en" if lang == "zh" else "zh"),
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token(request),
        "logged_in": session is not None,
        "base_url": request.app[SETTINGS].public_base_url,
        "path": request.path,
        **context,
    }
    html = request.app[ENV].get_template(name).render(**ctx)
    resp = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    resp.headers["Cache-Control"] = "no-store"
    if request.query.get("lang") in LANGS:
        resp.set_cookie("lang", request.query["lang"], max_age=365 * 24 * 3600, path="/", samesite="Lax")
    return resp
