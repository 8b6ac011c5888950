"""The page language: ``?lang=``, then the ``lang`` cookie, then Accept-Language; default zh."""

from __future__ import annotations

from aiohttp import web

LANGS = ("zh", "en")


def pick_lang(request: web.Request) -> str:
    for candidate in (request.query.get("lang"), request.cookies.get("lang")):
        if candidate in LANGS:
            return candidate
    accept = request.headers.get("Accept-Language", "").lower()
    if accept.startswith("en"):
        return "en"
    return "zh"
