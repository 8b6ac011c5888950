"""tests/unit does no I/O: every test here runs with PostgreSQL, Redis and RabbitMQ unreachable
(`make test-unit`, README "Testing"). A test that opens a network connection fails at once,
naming the address, instead of waiting on a server; tests that need one belong in tests/integration."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

_INET = (socket.AF_INET, socket.AF_INET6)


class NetworkInUnitTest(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(sock: socket.socket, address: object) -> None:
        raise NetworkInUnitTest(f"tests/unit must not connect to {address!r}: move the test to tests/integration")

    def connect(sock: socket.socket, address: object) -> None:
        if sock.family in _INET:
            refuse(sock, address)
        real_connect(sock, address)  # type: ignore[arg-type]

    def connect_ex(sock: socket.socket, address: object) -> int:
        if sock.family in _INET:
            refuse(sock, address)
        return real_connect_ex(sock, address)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield
