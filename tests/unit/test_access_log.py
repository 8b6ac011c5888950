"""The access log's batched path (libs/platform/logs.AccessLines, issue 17): the same line, key for
key, as ``JsonFormatter`` writes for ``access_log.info("request", extra=...)``; written once per
event-loop iteration, and nothing lost when the process stops."""

from __future__ import annotations

import asyncio
import io
import logging
import re

import orjson
import pytest

from libs.platform import logs
from libs.platform.logs import AccessLines, JsonFormatter, request_id_var

FIELDS = {"method": "POST", "path": "/api/oauth2/introspect", "status": 200, "duration_ms": 0.42, "remote": None}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def formatter_line(fields: dict[str, object]) -> dict[str, object]:
    record = logging.LogRecord("oauth.access", logging.INFO, __file__, 1, "request", (), None)
    record.__dict__.update(fields)
    return orjson.loads(JsonFormatter("token").format(record))


def test_the_line_is_the_formatters_key_for_key() -> None:
    stream = CountingStream()
    token = request_id_var.set("rid-1")
    try:
        AccessLines("token", stream).write(dict(FIELDS))  # no event loop: written at once
        expected = formatter_line(FIELDS)
    finally:
        request_id_var.reset(token)
    line = orjson.loads(stream.getvalue())
    assert stream.getvalue().endswith("}\n") and stream.getvalue().count("\n") == 1
    assert list(line) == list(expected)  # the same keys in the same order
    assert TS.match(str(line.pop("ts"))) and TS.match(str(expected.pop("ts")))
    assert line == expected


async def test_lines_are_written_once_per_loop_iteration_and_flushed_at_the_end() -> None:
    stream = CountingStream()
    lines = AccessLines("token", stream)
    for i in range(5):
        lines.write(FIELDS | {"status": 200 + i})
    assert stream.writes == 0
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert [orjson.loads(x)["status"] for x in stream.getvalue().splitlines()] == [200, 201, 202, 203, 204]
    lines.write(dict(FIELDS))
    lines.flush()  # what run_service and atexit do when the process stops
    assert stream.getvalue().count("\n") == 6


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> CountingStream:
    stream = CountingStream()
    monkeypatch.setattr(logs, "_access_lines", AccessLines("token", stream))
    return stream


def test_the_log_level_still_applies(installed: CountingStream) -> None:
    logs.access_log.setLevel(logging.WARNING)  # as LOG_LEVEL=WARNING does through the root logger
    try:
        logs.log_access(dict(FIELDS))
        logs.flush_access_log()
        assert installed.getvalue() == ""
    finally:
        logs.access_log.setLevel(logging.NOTSET)


def test_without_setup_the_line_goes_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    assert logs._access_lines is None
    with caplog.at_level(logging.INFO, logger="oauth.access"):
        logs.log_access(dict(FIELDS))
    [record] = [r for r in caplog.records if r.name == "oauth.access"]
    assert record.getMessage() == "request" and record.__dict__["path"] == FIELDS["path"]
