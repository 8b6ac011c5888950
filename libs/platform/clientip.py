"""The browser's IP address as the internal services see it behind the gateway."""

from __future__ import annotations

import ipaddress

from aiohttp import web


def client_ip(request: web.Request) -> str:
    """The last X-Forwarded-For entry (the one the gateway appends: the peer it saw), else the TCP
    peer. Entries that are not IP addresses are ignored. Only for services behind the gateway."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded:
        last = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass
    return request.remote or "unknown"
