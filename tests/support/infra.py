"""Where the tests find PostgreSQL, Redis and RabbitMQ: the environment (DATABASE_URL, REDIS_URL,
AMQP_URL), else testcontainers when a Docker engine is there, else the local defaults."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from oauthctl.deps import docker_engine

DEFAULTS = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
}


@dataclass
class Infra:
    database_url: str
    redis_url: str
    amqp_url: str


def use_containers(environ: Mapping[str, str], has_docker: Callable[[], bool] = docker_engine) -> bool:
    """Throwaway containers for the URLs not given, when some are missing and a Docker engine answers
    (asked only then: `docker info` may take seconds)."""
    return not all(environ.get(k) for k in DEFAULTS) and has_docker()


@contextlib.contextmanager
def infra() -> Iterator[Infra]:
    env = {k: os.environ.get(k) for k in DEFAULTS}
    if not use_containers(os.environ):
        yield Infra(*(env[k] or DEFAULTS[k] for k in DEFAULTS))
        return
    # A Docker engine and URLs missing: throwaway containers (testcontainers is a dev dependency).
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer
    from testcontainers.community.redis import RedisContainer

    with contextlib.ExitStack() as stack:
        urls = dict(env)
        if not urls["DATABASE_URL"]:
            pg = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
            urls["DATABASE_URL"] = pg.get_connection_url()
        if not urls["REDIS_URL"]:
            rd = stack.enter_context(RedisContainer("redis:7-alpine"))
            urls["REDIS_URL"] = f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0"
        if not urls["AMQP_URL"]:
            mq = stack.enter_context(RabbitMqContainer("rabbitmq:3-alpine"))
            urls["AMQP_URL"] = f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"
        yield Infra(urls["DATABASE_URL"], urls["REDIS_URL"], urls["AMQP_URL"])  # type: ignore[arg-type]
