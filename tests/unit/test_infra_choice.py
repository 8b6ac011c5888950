"""Where the test fixtures get their servers (tests/support/infra.py): the URLs given, else
throwaway containers when a Docker engine answers (testcontainers), else the local defaults."""

from __future__ import annotations

import pytest

from tests.support.infra import DEFAULTS, use_containers

ALL = dict(DEFAULTS)


def never() -> bool:
    raise AssertionError("docker was asked although every URL is given")


@pytest.mark.parametrize("docker", [True, False])
def test_all_urls_given_never_asks_docker(docker: bool) -> None:
    assert use_containers(ALL, never) is False


@pytest.mark.parametrize(
    "env, docker, containers",
    [
        ({}, True, True),
        ({}, False, False),
        ({"DATABASE_URL": ALL["DATABASE_URL"]}, True, True),  # the two missing ones come from containers
        ({"DATABASE_URL": ALL["DATABASE_URL"]}, False, False),
        ({**ALL, "REDIS_URL": ""}, True, True),  # empty counts as not given
    ],
)
def test_missing_urls_use_containers_only_with_docker(env: dict[str, str], docker: bool, containers: bool) -> None:
    assert use_containers(env, lambda: docker) is containers


def test_testcontainers_modules_are_installed() -> None:
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer
    from testcontainers.community.redis import RedisContainer

    assert PostgresContainer and RabbitMqContainer and RedisContainer
