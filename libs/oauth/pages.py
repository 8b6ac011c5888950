"""Server-rendered pages: Jinja2 (autoescaped), a shared layout, Chinese and English.

Each service has ``templates/`` beside its modules; ``libs/oauth/templates`` holds the layout.
Strings live in per-service dictionaries registered with ``add_strings``; templates call
``t("key")``. The language is ``?lang=``, then the ``lang`` cookie, then Accept-Language; default zh.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from libs.platform.config import Settings
from libs.platform.lang import LANGS, pick_lang
from libs.platform.logs import request_id_var
from libs.platform.responses import DEFAULT_BRAND
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
        "footer.support": "帮助与客服",
        "nav.label": "网站导航",
        "nav.menu": "菜单",
        "footer.home": "首页",
        "pw.show": "显示",
        "pw.hide": "隐藏",
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
        "footer.support": "Help & support",
        "nav.label": "Site navigation",
        "nav.menu": "Menu",
        "footer.home": "Home",
        "pw.show": "Show",
        "pw.hide": "Hide",
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
    env.globals["time_tag"] = time_tag
    env.filters["host_of"] = host_of
    app[ENV] = env


def time_tag(value: datetime | int | float | None, date_only: bool = False, time_only: bool = False) -> Markup:
    """``<time datetime="...">`` with the UTC text as the fallback; /assets/site.js shows it in the
    browser's time zone and language (the date, the time of day, or both). Empty for None."""
    if value is None or value == "":
        return Markup("")
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(float(value), UTC)
    when = when.astimezone(UTC)
    if date_only:
        shown, fmt = when.strftime("%Y-%m-%d"), ' data-format="date"'
    elif time_only:
        shown, fmt = when.strftime("%H:%M:%S UTC"), ' data-format="time"'
    else:
        shown, fmt = when.strftime("%Y-%m-%d %H:%M UTC"), ""
    iso = when.isoformat().replace("+00:00", "Z")
    return Markup(f'<time datetime="{escape(iso)}"{fmt}>{escape(shown)}</time>')  # noqa: S704 - parts escaped


def host_of(url: str) -> str:
    """The host (and port) of a URL, as pages show where a link or a redirect goes."""
    return urlsplit(url).netloc or url


def brand(settings: Settings, lang: str) -> dict[str, str]:
    """The platform's brand as the pages and emails show it (docs/operations.md "Branding")."""
    return {
        "name": settings.brand_name or DEFAULT_BRAND[lang],
        "logo_url": settings.brand_logo_url,
        "color": settings.brand_primary_color,
        "support_url": settings.brand_support_url,
    }


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
        "brand": brand(request.app[SETTINGS], lang),
        "page_request_id": request_id_var.get(),  # X-Request-Id, to quote on error pages
        "path": request.path,
        **context,
    }
    html = request.app[ENV].get_template(name).render(**ctx)
    resp = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    resp.headers["Cache-Control"] = "no-store"
    if request.query.get("lang") in LANGS:
        resp.set_cookie("lang", request.query["lang"], max_age=365 * 24 * 3600, path="/", samesite="Lax")
    return resp
