"""One typed settings object, read from the environment once at start.

Every setting the code reads is a field here; docs/operations.md lists them all (a test keeps the
two in step). Nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("gateway", "authz", "token", "account")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- infrastructure -------------------------------------------------------------------------
    database_url: str = "postgresql://postgres@127.0.0.1:5432/oauth"
    db_pool_min: int = Field(2, ge=1)
    db_pool_max: int = Field(10, ge=1)
    # Bounded time on every dependency call (docs/operations.md "Failure modes"): a dependency that
    # does not answer gives a 503 within about a second instead of a hung request.
    db_connect_timeout_seconds: float = Field(0.75, gt=0)  # a new PostgreSQL connection (and a cancel request)
    db_command_timeout_seconds: float = Field(1.0, gt=0)  # one query (also statement_timeout)
    db_acquire_timeout_seconds: float = Field(1.0, gt=0)  # waiting for a free pooled connection
    redis_socket_timeout_seconds: float = Field(0.5, gt=0)  # one Redis command
    redis_connect_timeout_seconds: float = Field(0.5, gt=0)
    amqp_heartbeat_seconds: int = Field(5, ge=1, le=600)  # AMQP heartbeats: a silent broker is dropped
    amqp_connect_timeout_seconds: float = Field(2.0, gt=0)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "oauth:"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    events_exchange: str = "oauth.events"
    # --- events (libs/oauth/events/): the outbox relay, consumers, event-invalidated caches ------
    events_relay_poll_seconds: float = Field(1.0, gt=0, le=60)  # fallback when no NOTIFY wakes the relay
    events_relay_batch_size: int = Field(100, ge=1, le=10000)
    events_publish_timeout_seconds: float = Field(1.0, gt=0)  # wait for a publisher confirm
    events_retry_initial_seconds: float = Field(0.2, gt=0)  # first backoff after a broker failure
    events_retry_max_seconds: float = Field(5.0, gt=0)  # backoff cap (relay and reconnects)
    events_settle_timeout_seconds: float = Field(1.0, ge=0)  # a request that wrote events waits for them
    events_outbox_retention_seconds: int = Field(7 * 24 * 3600, ge=60)  # published rows kept this long
    cache_ttl_seconds: float = Field(60.0, ge=0)  # event-invalidated in-process caches; 0 turns them off
    revocation_redis_timeout_seconds: float = Field(0.5, gt=0)  # then the revocation check asks Postgres
    # The bus lease (docs/events.md "Liveness"): every relay publishes a bus.heartbeat this often,
    # and an instance trusts its event-fed caches only while the newest heartbeat it has applied is
    # younger than bus_lease_seconds; a change waits for every trusting instance's ack at most that
    # long before it answers.
    bus_heartbeat_interval_seconds: float = Field(0.5, gt=0, le=1.0)
    bus_lease_seconds: float = Field(2.0, gt=0, le=30)

    # --- network ----------------------------------------------------------------------------------
    public_base_url: str = "http://localhost:8080"
    bind_host: str = "127.0.0.1"
    gateway_port: int = 8080
    authz_port: int = 8081
    token_port: int = 8082
    account_port: int = 8083
    authz_url: str = ""  # upstreams for the gateway; default http://127.0.0.1:<port>
    token_url: str = ""
    account_url: str = ""
    upstream_timeout_seconds: float = Field(10.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(2.0, gt=0)
    upstream_pool_size: int = Field(100, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    trust_forwarded_headers: bool = False  # the gateway trusts X-Forwarded-* only behind a known proxy
    shutdown_timeout_seconds: float = Field(10.0, ge=0)  # wait for in-flight requests after SIGTERM
    shutdown_drain_seconds: float = Field(0.0, ge=0)  # keep serving after SIGTERM while /readyz says 503
    reuse_port: bool = False  # SO_REUSEPORT: several processes of one service share its port
    # The gateway's /readyz and /metrics (and /healthz) are served on this separate, never public
    # port, bound to ADMIN_BIND_HOST (default: BIND_HOST). authz, token and account keep them on
    # their own ports, which are internal already.
    gateway_admin_port: int = Field(9080, ge=1, le=65535)
    admin_bind_host: str = ""
    # --- connection limits (libs/platform/server.py; bodies: services/gateway/app.py) -------------
    header_timeout_seconds: float = Field(5.0, gt=0)  # request line + headers must arrive within this
    gateway_body_timeout_seconds: float = Field(5.0, gt=0)  # a request body must arrive within this
    gateway_keepalive_timeout_seconds: float = Field(75.0, gt=0)  # idle keep-alive connections closed after
    gateway_max_connections_per_ip: int = Field(100, ge=0)  # concurrent; 0 = no cap
    # --- rate limits (services/gateway/limits.py; GCRA in Redis, shared by every gateway) ---------
    # Requests per minute, with bursts of up to that many at once; 0 turns a limit off.
    gateway_rate_limit_pages_per_minute: int = Field(600, ge=0)  # per client IP: pages and authorize
    gateway_rate_limit_logins_per_minute: int = Field(60, ge=0)  # per client IP: POST /login
    gateway_rate_limit_client_per_minute: int = Field(3000, ge=0)  # per client_id: token/introspect/revoke
    gateway_rate_limit_auth_failures_per_minute: int = Field(30, ge=0)  # 401s there, per client_id + IP
    gateway_rate_limit_redis_timeout_seconds: float = Field(0.5, gt=0)  # then the local fallback decides

    # --- secrets ----------------------------------------------------------------------------------
    # HMAC key for storing client secrets, developer tokens, refresh tokens and codes (docs/operations.md
    # "Settings"). Required; `make run` generates one into .env for local use.
    token_pepper: str = Field("", repr=False)
    internal_service_token: str = Field("", repr=False)

    # --- OAuth ------------------------------------------------------------------------------------
    access_token_ttl_seconds: int = Field(7200, ge=60)
    refresh_token_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    auth_code_ttl_seconds: int = Field(600, ge=10, le=600)
    refresh_grace_seconds: int = Field(5, ge=0, le=60)
    auto_authorize_enabled: bool = True
    # auto_authorize=true skips consent only for verified apps (or an existing grant); true restores
    # the guide's permissive behaviour for every app (docs/operations.md "App verification").
    auto_authorize_unverified_apps: bool = False
    session_ttl_seconds: int = Field(24 * 3600, ge=300)
    consent_request_ttl_seconds: int = Field(600, ge=60, le=3600)  # a pending consent page's lifetime
    # Login throttling (services/authz/ratelimit.py): no lockout an attacker could trigger.
    login_backoff_free_failures: int = Field(3, ge=0)  # per account+IP, before the backoff starts
    login_backoff_base_seconds: float = Field(2.0, gt=0)  # then base * 2^n after the last failure
    login_backoff_max_seconds: int = Field(15 * 60, ge=1)
    login_max_failures_per_ip: int = Field(30, ge=1)  # per client IP per window (any account)
    login_slowdown_after_failures: int = Field(10, ge=1)  # per account per window, from anywhere
    login_slowdown_seconds: float = Field(1.0, ge=0, le=10)  # then every attempt on it waits this long
    login_failure_window_seconds: int = Field(15 * 60, ge=10)
    jwt_algorithm: Literal["RS256", "ES256", "HS256"] = "RS256"
    # `oauthctl keys add`: a new key is in the JWKS this long before it signs, so every verifier and
    # every client's JWKS cache (max-age 300 s) knows it first.
    signing_key_activation_delay_seconds: int = Field(600, ge=0)
    access_token_audience: str = ""  # the access tokens' aud (RFC 9068); default: the issuer

    # --- accounts ---------------------------------------------------------------------------------
    quota_per_unit: int = Field(1000, ge=1)
    max_apps_per_developer: int = Field(100, ge=1)
    register_max_per_ip: int = Field(5, ge=1)  # sign-ups per client IP per window (Redis, all instances)
    register_window_seconds: int = Field(3600, ge=60)

    # --- local development (`make run`) ------------------------------------------------------------
    demo_password: str = Field("", repr=False)
    example_port: int = 3000

    # --- logging ----------------------------------------------------------------------------------
    log_level: str = "INFO"
    access_log: bool = True

    # --- spending (docs/spending.md): `make run`'s example resource server -------------------------
    example_resource_server_port: int = 3001

    # --- password reset by email (services/account/password_reset.py, mailer.py) ---------------------
    smtp_host: str = "127.0.0.1"  # `make run` starts a local sink here that prints each message
    smtp_port: int = Field(1025, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "tls"] = "none"  # tls: implicit TLS (port 465)
    smtp_user: str = ""
    smtp_password: str = Field("", repr=False)
    smtp_from: str = "Open Platform <no-reply@localhost>"
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    password_reset_ttl_seconds: int = Field(1800, ge=300, le=86400)
    password_reset_max_per_ip: int = Field(10, ge=1)  # reset requests per client IP per window
    password_reset_max_per_account: int = Field(3, ge=1)  # reset emails per account per window
    password_reset_window_seconds: int = Field(3600, ge=60)

    # --- branding (pages and emails; docs/operations.md "Branding") ------------------------------
    brand_name: str = ""  # empty: "开放平台" / "Open Platform" in the page's language
    brand_logo_url: str = "/assets/logo.svg"
    brand_primary_color: str = "#0969da"
    brand_support_url: str = ""
    currency_symbol: str = "$"
    currency_decimals: int = Field(2, ge=0, le=6)

    # --- device authorization grant (RFC 8628; docs/device.md) ------------------------------------
    device_code_ttl_seconds: int = Field(600, ge=60, le=1800)  # expires_in of a device/user code pair
    device_poll_interval_seconds: int = Field(5, ge=1, le=60)  # the first polling interval; +5 s per slow_down
    device_max_failures_per_session: int = Field(5, ge=1)  # wrong user codes per login session per window
    device_max_failures_per_ip: int = Field(20, ge=1)  # wrong user codes per client IP per window
    device_failure_window_seconds: int = Field(900, ge=60)

    # --- retention (`oauthctl purge`; docs/operations.md "Retention") ----------------------------
    # Dead token families (and all their refresh tokens) are kept this long after they died and
    # after their last access token expired; expired codes (authorization, device, password reset)
    # this long after they expired.
    purge_token_retention_seconds: int = Field(7 * 24 * 3600, ge=3600)
    purge_code_retention_seconds: int = Field(24 * 3600, ge=3600)
    purge_batch_size: int = Field(5000, ge=1, le=100_000)  # rows per DELETE, each its own transaction
    purge_batch_pause_seconds: float = Field(0.05, ge=0, le=60)  # between batches: replicas, WAL, vacuum

    # --- performance, round two (docs/performance.md) ----------------------------------------------
    # Threads that sign RS256 tokens in the token service, off the event loop: -1 one per core, 0
    # signs on the event loop.
    signing_threads: int = Field(-1, ge=-1, le=64)

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("PUBLIC_BASE_URL must be an absolute http(s) URL, e.g. https://auth.example.com")
        return v.rstrip("/")

    @field_validator("brand_primary_color")
    @classmethod
    def _colour(cls, v: str) -> str:
        if not re.fullmatch(r"#[0-9A-Fa-f]{6}", v):
            raise ValueError("BRAND_PRIMARY_COLOR must be a colour like #0969da")
        return v.lower()

    @field_validator("brand_logo_url", "brand_support_url")
    @classmethod
    def _brand_url(cls, v: str) -> str:
        parts = urlsplit(v)
        local = v.startswith("/") and not v.startswith("//")
        if v and not local and (parts.scheme != "https" or not parts.netloc):
            raise ValueError("brand URLs must be https:// URLs or paths on this site such as /assets/logo.svg")
        if any(c in v for c in "\"'<> ") or any(ord(c) < 32 for c in v):
            raise ValueError("brand URLs must not contain spaces, quotes or control characters")
        return v

    @field_validator("redis_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return v if v.endswith(":") else v + ":"

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def admin_port_of(self, service: str) -> int | None:
        """The separate port serving /readyz and /metrics, or None: served on the service's own port."""
        return self.gateway_admin_port if service == "gateway" else None

    def upstream_url(self, service: str) -> str:
        explicit = getattr(self, f"{service}_url")
        return (explicit or f"http://127.0.0.1:{self.port_of(service)}").rstrip("/")

    @cached_property
    def issuer(self) -> str:
        return self.public_base_url

    @property
    def resource_audience(self) -> str:
        return self.access_token_audience or self.issuer

    @property
    def cookie_secure(self) -> bool:
        return self.public_base_url.startswith("https://")

    @cached_property
    def pepper_bytes(self) -> bytes:
        if len(self.token_pepper) < 32:
            raise RuntimeError(
                "TOKEN_PEPPER is missing or shorter than 32 characters. Set it to a long random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`); `make run` "
                "creates one in .env for local use."
            )
        return self.token_pepper.encode()


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment (overrides win; tests use them)."""
    return Settings(**overrides)  # type: ignore[arg-type]
