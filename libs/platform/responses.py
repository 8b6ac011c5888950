"""The three response forms every service answers in: JSON, the developer-API envelope
``{"success", "message", "data"}`` (integration guide), and a readable HTML error page."""

from __future__ import annotations

import html
from typing import Any

import orjson
from aiohttp import web

from .logs import request_id_var


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def envelope(data: Any, message: str = "ok", status: int = 200) -> web.Response:
    return json_response({"success": True, "message": message, "data": data}, status=status)


def error_page(status: int, title: str, detail: str = "") -> web.Response:
    body = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f'<title>{html.escape(title)}</title><meta name="viewport" content="width=device-width">'
        "<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}"
        "h1{font-size:1.4rem}p{color:#555}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(detail)}</p>"
        f"<p><small>request id: {html.escape(request_id_var.get())}</small></p></body></html>"
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
