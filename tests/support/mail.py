"""The tests' SMTP sink (oauthctl/mailsink.py) on ``SMTP_PORT``: it keeps the messages the account
service sends (password-reset emails) so a test can read them, as a user reads their inbox."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest

from libs.platform.config import Settings
from oauthctl.mailsink import start_sink

RESET_LINK_RE = re.compile(r"(https?://\S+/password/reset\?token=(pwreset_[A-Za-z0-9_-]+)&lang=(zh|en))")


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, message: EmailMessage) -> None:
        with self.lock:
            self.messages.append(message)

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]

    async def wait_for(self, address: str, count: int = 1, within: float = 10.0) -> list[EmailMessage]:
        """The messages to ``address`` once there are ``count`` of them (fails after ``within`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(found := self.to(address)) < count:
            assert loop.time() < deadline, f"no email to {address} within {within}s (got {len(found)})"
            await asyncio.sleep(0.05)
        return found


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def reset_link(message: EmailMessage) -> tuple[str, str, str]:
    """(link, token, lang) of a password-reset email."""
    m = RESET_LINK_RE.search(text_of(message))
    assert m, text_of(message)
    return m.group(1), m.group(2), m.group(3)


@pytest.fixture(scope="session")
def inbox(settings: Settings) -> Iterator[Inbox]:
    box = Inbox()
    controller = start_sink(settings.smtp_host, settings.smtp_port, box.add)
    try:
        yield box
    finally:
        controller.stop()
