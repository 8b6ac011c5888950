"""Structured JSON logs carrying the request id. Never pass secrets, tokens, codes or passwords."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import sys
import time
from typing import IO, Any

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
ACCESS_LOGGER = "oauth.access"
access_log = logging.getLogger(ACCESS_LOGGER)


class _Clock:
    """``2026-12-01T07:00:18.123Z`` for a ``time.time()``; the part up to the second is cached."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"  # as LogRecord.msecs


_clock = _Clock()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _clock(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and k not in out:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class AccessLines:
    """The access log's own path (issue 17): the line ``JsonFormatter`` would write for
    ``access_log.info("request", extra=fields)``, key for key, built without a LogRecord and written
    in batches: once per event-loop iteration, one write for every line of it, and at exit."""

    def __init__(self, service: str, stream: IO[str]) -> None:
        self.service = service
        self.stream = stream
        self._lines: list[bytes] = []

    def write(self, fields: dict[str, Any]) -> None:
        line = {
            "ts": _clock(time.time()),
            "level": "info",
            "service": self.service,
            "logger": ACCESS_LOGGER,
            "msg": "request",
            "request_id": request_id_var.get(),
            **fields,
        }
        if not self._lines:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: at once
                self._lines.append(orjson.dumps(line, default=str))
                self.flush()
                return
        self._lines.append(orjson.dumps(line, default=str))

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            try:
                self.stream.write(b"\n".join(lines).decode() + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: as logging's handleError, nothing to raise to
                pass


_access_lines: AccessLines | None = None


def log_access(fields: dict[str, Any]) -> None:
    """One access-log line (logger ``oauth.access``, message ``request``, at INFO): through the
    batched path once ``setup_logging`` installed it, else through ``logging`` (tests capture it)."""
    if _access_lines is None:
        access_log.info("request", extra=fields)
    elif access_log.isEnabledFor(logging.INFO):
        _access_lines.write(fields)


def flush_access_log() -> None:
    if _access_lines is not None:
        _access_lines.flush()


def setup_logging(service: str, level: str = "INFO") -> None:
    global _access_lines
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if _access_lines is None:
        atexit.register(flush_access_log)
    _access_lines = AccessLines(service, sys.stderr)
    # aiohttp's own access logger is replaced by ours (web.access_log_middleware).
    logging.getLogger("aiohttp.access").disabled = True
    # The JSON lines carry none of the caller's file/line/function, thread or process fields, so
    # skip collecting them for every record (the logging HOWTO's "Optimization"; it was about a
    # quarter of the access log's cost: a stack walk per request).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
