"""Sending email over SMTP (``aiosmtplib``) with the ``SMTP_*`` settings (docs/operations.md):
plain, STARTTLS or implicit TLS, optional login. ``make run`` starts a local sink that prints the
messages (oauthctl/mailsink.py). Only the recipient and subject are ever logged, never a body
(a reset link is a credential)."""

from __future__ import annotations

import asyncio
import logging
from email.message import EmailMessage

import aiosmtplib

from libs.platform.config import Settings

log = logging.getLogger("account.mail")
_PENDING: set[asyncio.Task[None]] = set()


def build_message(settings: Settings, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    return message


async def send(settings: Settings, message: EmailMessage) -> None:
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_user or None,
        password=settings.smtp_password or None,
        use_tls=settings.smtp_tls == "tls",
        start_tls=settings.smtp_tls == "starttls",
        timeout=settings.smtp_timeout_seconds,
    )


async def _deliver(settings: Settings, message: EmailMessage) -> None:
    try:
        await send(settings, message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        log.warning("email not sent", extra={"subject": message["Subject"], "error": type(exc).__name__})


def send_in_background(settings: Settings, message: EmailMessage) -> None:
    """Deliver without making the request wait: the answer must not take longer when an account
    exists (no enumeration by timing). Failures are logged."""
    task = asyncio.create_task(_deliver(settings, message))
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)
