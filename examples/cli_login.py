"""Log in from a terminal with the device authorization grant (RFC 8628; docs/device.md).

Standard library only, so a CLI can copy it as it is::

    python examples/cli_login.py --issuer https://auth.example.com --client-id client_xxx login
    python examples/cli_login.py --issuer https://auth.example.com --client-id client_xxx userinfo

``login`` asks the platform for a device code (its endpoints come from the discovery document,
RFC 8414), prints the URL and the user code to open on any device with a browser, and polls the
token endpoint at the ``interval`` it was given, 5 seconds slower after each ``slow_down``
(RFC 8628 3.5), until the user approves (tokens), denies (``access_denied``) or the code expires
(``expired_token``). The tokens are stored in the user's config directory
(``$XDG_CONFIG_HOME/<name>/tokens.json``, else ``~/.config/<name>/tokens.json``), readable by the
user only (mode 0600, in a 0700 directory). ``userinfo`` calls the userinfo endpoint, refreshing
the tokens first when the access token has expired (or is refused); ``refresh`` rotates them now;
``logout`` revokes the refresh token (RFC 7009) and deletes the file.

The app must be allowed the device grant (developer console: "Allow device login", or
``grant_types`` in the developer API). A public app needs only ``--client-id``; a confidential one
also ``--client-secret`` (or ``OAUTH_CLIENT_SECRET``), sent as ``client_secret_post``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_SECONDS = 5  # RFC 8628 3.5
TIMEOUT = 15
EARLY_REFRESH_SECONDS = 30  # refresh a little before the access token expires
USER_AGENT = "cli_login.py (oauth-platform example)"


class LoginError(Exception):
    """Something the user should read (printed without a traceback)."""


# --- HTTP -------------------------------------------------------------------------------------------
def _request(req: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    req.add_header("User-Agent", USER_AGENT)
    req.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310 - http(s) only (_http_url)
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            body = json.loads(err.read() or b"{}")
        except ValueError:
            body = {}
        return err.code, body if isinstance(body, dict) else {}
    except (urllib.error.URLError, TimeoutError, ValueError) as err:
        raise LoginError(f"cannot reach {req.full_url}: {err}") from None


def _http_url(url: str) -> str:
    """Only http(s) URLs are ever opened (never file: or custom schemes)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise LoginError(f"not an http(s) URL: {url}")
    return url


def get_json(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(_http_url(url))  # noqa: S310 - checked just now
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    return _request(req)


def post_form(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(_http_url(url), data=data, method="POST")  # noqa: S310 - checked just now
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    return _request(req)


# --- the token file --------------------------------------------------------------------------------
def config_dir(name: str, environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/<name>`` (XDG Base Directory), else ``~/.config/<name>``."""
    base = environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / name


def token_file(name: str) -> Path:
    return config_dir(name) / "tokens.json"


def save_tokens(path: Path, tokens: dict[str, Any]) -> None:
    """Write atomically, readable by the user only (0600 file in a 0700 directory)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file existed with other bits
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(tokens, f, indent=2)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load_tokens(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoginError(f"not logged in (no {path}); run the 'login' command first") from None
    if not isinstance(data, dict) or "refresh_token" not in data:
        raise LoginError(f"{path} is not a token file; run the 'login' command again")
    return data


def with_expiry(tokens: dict[str, Any], issuer: str, client_id: str) -> dict[str, Any]:
    """The token response plus what later runs need: when it expires, which issuer and client."""
    return tokens | {
        "expires_at": int(time.time()) + int(tokens.get("expires_in", 0)),
        "issuer": issuer,
        "client_id": client_id,
    }


# --- the flow ---------------------------------------------------------------------------------------
class Platform:
    """The endpoints of one issuer (from its RFC 8414 metadata) and this app's credentials."""

    def __init__(self, issuer: str, client_id: str, client_secret: str | None) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        status, meta = get_json(self.issuer + "/.well-known/oauth-authorization-server")
        if status != 200 or "token_endpoint" not in meta:
            raise LoginError(f"{self.issuer} did not answer its discovery document (HTTP {status})")
        if "device_authorization_endpoint" not in meta:
            raise LoginError(f"{self.issuer} does not offer the device authorization grant")
        self.meta = meta

    def client_form(self, **extra: str) -> dict[str, str]:
        form = {"client_id": self.client_id, **extra}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        return form

    def start(self, scope: str) -> dict[str, Any]:
        status, body = post_form(self.meta["device_authorization_endpoint"], self.client_form(scope=scope))
        if status != 200:
            raise LoginError(f"the platform refused the login: {describe(body)}")
        return body

    def poll(self, device_code: str, interval: int, expires_in: int) -> dict[str, Any]:
        """Poll until the user answers (RFC 8628 3.4, 3.5); the token response."""
        deadline = time.monotonic() + expires_in
        while True:
            time.sleep(interval)
            status, body = post_form(
                self.meta["token_endpoint"], self.client_form(grant_type=DEVICE_GRANT, device_code=device_code)
            )
            if status == 200:
                return body
            error = body.get("error")
            if error == "authorization_pending":
                pass
            elif error == "slow_down":
                interval += SLOW_DOWN_SECONDS
            elif error == "access_denied":
                raise LoginError("the login was denied in the browser")
            elif error == "expired_token":
                raise LoginError("the code expired before it was approved; run 'login' again")
            else:
                raise LoginError(f"the login failed: {describe(body)}")
            if time.monotonic() > deadline:
                raise LoginError("the code expired before it was approved; run 'login' again")

    def refresh(self, tokens: dict[str, Any]) -> dict[str, Any]:
        status, body = post_form(
            self.meta["token_endpoint"],
            self.client_form(grant_type="refresh_token", refresh_token=tokens["refresh_token"]),
        )
        if status != 200:
            raise LoginError(f"the session ended ({describe(body)}); run 'login' again")
        return with_expiry(body, self.issuer, self.client_id)

    def userinfo(self, access_token: str) -> tuple[int, dict[str, Any]]:
        return get_json(self.meta["userinfo_endpoint"], access_token)

    def revoke(self, refresh_token: str) -> None:
        endpoint = self.meta.get("revocation_endpoint")
        if endpoint:
            post_form(endpoint, self.client_form(token=refresh_token, token_type_hint="refresh_token"))


def describe(body: dict[str, Any]) -> str:
    return str(body.get("error_description") or body.get("error") or "no details")


def login(platform: Platform, path: Path, scope: str) -> dict[str, Any]:
    started = platform.start(scope)
    print(f"To sign in, open {started['verification_uri']} in a browser", flush=True)
    print(f"and enter the code: {started['user_code']}", flush=True)
    if started.get("verification_uri_complete"):
        print(f"(or open {started['verification_uri_complete']})", flush=True)
    print("Waiting for the approval...", flush=True)
    tokens = platform.poll(started["device_code"], int(started.get("interval", 5)), int(started["expires_in"]))
    saved = with_expiry(tokens, platform.issuer, platform.client_id)
    save_tokens(path, saved)
    print(f"Logged in. Tokens saved to {path}", flush=True)
    return saved


def fresh_tokens(platform: Platform, path: Path, *, force: bool = False) -> dict[str, Any]:
    tokens = load_tokens(path)
    if force or int(tokens.get("expires_at", 0)) - EARLY_REFRESH_SECONDS <= time.time():
        tokens = platform.refresh(tokens)
        save_tokens(path, tokens)
    return tokens


def show_userinfo(platform: Platform, path: Path) -> dict[str, Any]:
    tokens = fresh_tokens(platform, path)
    status, info = platform.userinfo(tokens["access_token"])
    if status == 401:  # revoked or expired early: one refresh, then once more
        tokens = fresh_tokens(platform, path, force=True)
        status, info = platform.userinfo(tokens["access_token"])
    if status != 200:
        raise LoginError(f"userinfo failed (HTTP {status}): {describe(info)}")
    print(json.dumps(info, ensure_ascii=False, indent=2), flush=True)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cli_login.py",
        description="Log in to the OAuth platform from a terminal (device authorization grant, RFC 8628).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="login",
        choices=("login", "userinfo", "refresh", "logout"),
        help="login (default): sign in and show userinfo; userinfo: show the user (refreshing when "
        "needed); refresh: rotate the tokens now; logout: revoke and forget the tokens",
    )
    parser.add_argument(
        "--issuer",
        default=os.environ.get("OAUTH_ISSUER", "http://localhost:8080"),
        help="the platform's base URL, its PUBLIC_BASE_URL (or OAUTH_ISSUER; default: %(default)s)",
    )
    parser.add_argument("--client-id", default=os.environ.get("OAUTH_CLIENT_ID"), help="or OAUTH_CLIENT_ID")
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("OAUTH_CLIENT_SECRET"),
        help="only for a confidential app (prefer the OAUTH_CLIENT_SECRET environment variable)",
    )
    parser.add_argument("--scope", default="openid profile balance")
    parser.add_argument(
        "--name", default="oauth-platform-cli", help="the folder under the config directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if not args.client_id:
        parser.error("--client-id (or OAUTH_CLIENT_ID) is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = token_file(args.name)
    try:
        platform = Platform(args.issuer, args.client_id, args.client_secret)
        if args.command == "login":
            login(platform, path, args.scope)
            show_userinfo(platform, path)
        elif args.command == "userinfo":
            show_userinfo(platform, path)
        elif args.command == "refresh":
            fresh_tokens(platform, path, force=True)
            print(f"Tokens refreshed ({path})", flush=True)
        else:
            if path.exists():
                platform.revoke(load_tokens(path)["refresh_token"])
                path.unlink()
            print("Logged out.", flush=True)
    except LoginError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
