"""A local SMTP sink (``aiosmtpd``) for ``make run`` and the tests: it accepts every message on
``SMTP_HOST:SMTP_PORT`` and prints it (``make run``) or keeps it (tests) instead of delivering it,
so the password-reset emails can be read without a mail server (docs/operations.md "Accounts")."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


class SinkHandler:
    """aiosmtpd handler: every accepted message goes to ``on_message``."""

    def __init__(self, on_message: Callable[[EmailMessage], None]) -> None:
        self.on_message = on_message

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.on_message(message)
        return "250 Message accepted"


def print_message(message: EmailMessage) -> None:
    body = message.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    print(
        f"mail: to {message['To']} | {message['Subject']}\n" + "\n".join(f"mail: {line}" for line in text.splitlines()),
        flush=True,
    )


def start_sink(host: str, port: int, on_message: Callable[[EmailMessage], None] = print_message) -> Controller:
    """Start the sink in its own thread; ``.stop()`` the returned controller to end it."""
    controller = Controller(SinkHandler(on_message), hostname=host, port=port)
    controller.start()
    return controller
