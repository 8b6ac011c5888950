"""The three response forms every service answers in: JSON, the developer-API envelope
``{"success", "message", "data"}`` (integration guide), and a readable HTML error page.

The error page is the platform's own (no template engine at this layer): styled by
``/assets/site.css``, in the request's language, with the brand (docs/operations.md "Branding"),
a way back and the request id to quote. ``page_context`` carries the language and settings of the
request being answered (set by ``web.observe_middleware``)."""

from __future__ import annotations

import contextvars
import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .logs import request_id_var


@dataclass(frozen=True)
class PageContext:
    lang: str = "zh"
    brand_name: str = ""
    logo_url: str = "/assets/logo.svg"
    color: str = "#0969da"
    support_url: str = ""


# Set per request to a function computing it (the language needs the query and cookies parsed:
# only worth it when a page is rendered).
page_context: contextvars.ContextVar[Callable[[], PageContext] | None] = contextvars.ContextVar(
    "page_context", default=None
)

DEFAULT_BRAND = {"zh": "开放平台", "en": "Open Platform"}
# Titles and explanations by status, for pages whose handler gave none of its own.
STATUS_TEXT: dict[int, dict[str, tuple[str, str]]] = {
    400: {
        "zh": ("请求无效", "这个请求无法处理,请返回上一页重试。"),
        "en": ("Bad request", "This request could not be handled. Go back and try again."),
    },
    403: {"zh": ("无权访问", "你没有权限查看这个页面。"), "en": ("Forbidden", "You are not allowed to see this page.")},
    404: {
        "zh": ("找不到这个页面", "地址可能有误,或者页面已经移走。"),
        "en": ("Page not found", "The address may be wrong, or the page has moved."),
    },
    405: {
        "zh": ("不支持的操作", "这个页面不支持该请求方式。"),
        "en": ("Not allowed", "This page does not accept this kind of request."),
    },
    408: {
        "zh": ("请求超时", "请求没有及时送达,请重试。"),
        "en": ("Request timeout", "The request did not arrive in time. Please try again."),
    },
    413: {"zh": ("请求过大", "提交的内容太大。"), "en": ("Request too large", "What was sent is too large.")},
    429: {
        "zh": ("请求过于频繁", "请稍候片刻再试。"),
        "en": ("Too many requests", "Please wait a moment and try again."),
    },
    500: {
        "zh": ("出错了", "服务器遇到了意外错误。请稍后再试;如果问题持续,请把下面的请求编号告诉客服。"),
        "en": (
            "Something went wrong",
            "The server hit an unexpected error. Try again later; if it keeps happening, quote the request id below to support.",
        ),
    },
    502: {
        "zh": ("服务暂时不可用", "请稍候片刻再试。"),
        "en": ("Service temporarily unavailable", "Please try again in a moment."),
    },
    503: {
        "zh": ("服务暂时不可用", "请稍候片刻再试。"),
        "en": ("Service temporarily unavailable", "Please try again in a moment."),
    },
    504: {
        "zh": ("服务响应超时", "请稍候片刻再试。"),
        "en": ("The service did not answer in time", "Please try again in a moment."),
    },
}
WORDS = {
    "zh": {"home": "返回首页", "support": "联系客服", "rid": "请求编号", "lang": "English"},
    "en": {"home": "Back to home", "support": "Contact support", "rid": "Request id", "lang": "中文"},
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def envelope(data: Any, message: str = "ok", status: int = 200) -> web.Response:
    return json_response({"success": True, "message": message, "data": data}, status=status)


def status_text(status: int, lang: str) -> tuple[str, str]:
    """The page title and explanation for ``status`` in ``lang``."""
    table = STATUS_TEXT.get(status) or STATUS_TEXT[500 if status >= 500 else 400]
    return table[lang if lang in table else "zh"]


def error_page(
    status: int, title: str | dict[str, str] = "", detail: str | dict[str, str] = "", *, back_url: str = "/"
) -> web.Response:
    """A styled error page in the request's language: ``title``/``detail`` (a string, or one per
    language), else the status's own words; a link back (``back_url``), support, the request id."""
    context_of = page_context.get()
    ctx = context_of() if context_of is not None else PageContext()
    lang = ctx.lang if ctx.lang in WORDS else "zh"
    default_title, default_detail = status_text(status, lang)
    shown_title = (title.get(lang) if isinstance(title, dict) else title) or default_title
    shown_detail = (detail.get(lang) if isinstance(detail, dict) else detail) or default_detail
    words = WORDS[lang]
    brand = html.escape(ctx.brand_name or DEFAULT_BRAND[lang])
    e = html.escape
    support = f' <a class="btn" href="{e(ctx.support_url)}">{words["support"]}</a>' if ctx.support_url else ""
    other = "en" if lang == "zh" else "zh"
    body = (
        f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(shown_title)} · {brand}</title>'
        '<link rel="icon" href="/assets/favicon.svg" type="image/svg+xml"><link rel="stylesheet" href="/assets/site.css">'
        f"<style>:root{{--brand:{e(ctx.color)}}}</style></head><body>"
        f'<header class="site-header"><div class="bar"><a class="brand" href="/"><img src="{e(ctx.logo_url)}" alt="">'
        f'{brand}</a><nav><a class="lang-switch" href="?lang={other}">{words["lang"]}</a></nav></div></header>'
        f'<main class="focus"><div class="card" id="error-page" data-status="{status}">'
        f'<p class="big-status">{status}</p><h1>{e(shown_title)}</h1><p>{e(shown_detail)}</p>'
        f'<div class="actions"><a class="btn primary" id="back" href="{e(back_url)}">{words["home"]}</a>{support}</div>'
        f'<p class="error-code">{words["rid"]}: <code id="request-id">{e(request_id_var.get())}</code></p>'
        "</div></main></body></html>"
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
