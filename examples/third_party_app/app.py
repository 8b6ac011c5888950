"""The guide's example third-party app ("我的第三方应用"), done the secure, server-side way.

The browser only ever holds an opaque session cookie (``example_sid``). The state, the PKCE
verifier and the tokens stay in a server-side session; the code is exchanged and the platform's
userinfo/top-up endpoints are called from here, with ``client_secret`` never leaving the server
(guide "重要安全声明", steps 1-4). Tokens are refreshed 5 minutes before they expire and once more
after a 401 (guide FAQ Q2).

``/sdk/`` and ``/oauth/callback.html`` serve the guide's own browser SDK page and callback page
as written, for comparison and browser tests; the SDK page puts ``client_secret`` into the page,
exactly as the guide does, which is why the server-side flow above is the one to copy.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import jinja2
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger("example.third_party_app")

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "example_sid"
SCOPE = "profile balance"
REFRESH_MARGIN_SECONDS = 5 * 60  # guide FAQ Q2: "过期前 5 分钟自动刷新"
SESSION_IDLE_SECONDS = 7 * 24 * 3600
MAX_SESSIONS = 10_000
NOT_AUTHENTICATED = {"error": "Not authenticated"}
ERROR_CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# What the page says for each ``/?error=...`` code; anything else is shown as the code itself.
ERROR_MESSAGES = {
    "access_denied": "您拒绝了授权,未能登录。",
    "missing_parameters": "授权回调缺少 code 或 state 参数,请重新登录。",
    "invalid_state": "登录请求已失效或被篡改(state 不匹配),请重新登录。",
    "invalid_issuer": "授权响应不是来自预期的授权服务器(iss 不匹配),已拒绝。",
    "invalid_grant": "授权码无效或已过期,请重新登录。",
    "invalid_client": "应用的 client_id 或 client_secret 配置有误。",
    "invalid_request": "授权请求无效。",
    "invalid_scope": "请求的权限范围无效。",
    "unauthorized_client": "此应用无权使用该授权方式。",
    "unsupported_response_type": "授权服务器不支持该响应类型。",
    "login_required": "需要先登录授权平台。",
    "consent_required": "需要您先同意授权。",
    "server_error": "登录失败:授权服务器处理请求时出错,请稍后再试。",
    "temporarily_unavailable": "授权服务器暂时不可用,请稍后再试。",
    "platform_unavailable": "无法连接授权服务器,请稍后再试。",
    "session_expired": "登录已过期,请重新登录。",
    "not_logged_in": "请先登录。",
    "topup_failed": "获取充值链接失败,请稍后再试。",
    "userinfo_failed": "获取用户信息失败,请稍后再试。",
    "invalid_csrf": "请求已失效(CSRF 校验失败),请刷新页面后重试。",
    "spend_limit_exceeded": "本周期的消费额度已用完(额度由您在授权时设定,可在平台的“授权管理”中修改)。",
    "insufficient_balance": "账户余额不足,请先充值。",
    "spend_failed": "扣费失败,请稍后再试。",
}
# docs/spending.md: the app's suggested limit on the consent page (the user chooses the real one).
SPEND_SCOPE = "spend"
SPEND_SUGGESTION = {"spend_limit": "1000", "spend_period": "daily"}
AMOUNT_RE = re.compile(r"^[0-9]{1,16}\.[0-9]{2}$")
NOTICES = {"login": {"success": "登录成功!"}, "logout": {"1": "已退出登录。"}}
# The same in English (the page's language: ?lang=, then the example_lang cookie, then Accept-Language).
ERROR_MESSAGES_EN = {
    "access_denied": "You declined the authorization, so you are not logged in.",
    "missing_parameters": "The authorization callback lacks code or state; please log in again.",
    "invalid_state": "The login request expired or was tampered with (state mismatch); please log in again.",
    "invalid_issuer": "The authorization response did not come from the expected server (iss mismatch); refused.",
    "invalid_grant": "The authorization code is invalid or expired; please log in again.",
    "invalid_client": "The app's client_id or client_secret is misconfigured.",
    "invalid_request": "The authorization request is invalid.",
    "invalid_scope": "The requested scope is invalid.",
    "unauthorized_client": "This app may not use this grant type.",
    "unsupported_response_type": "The authorization server does not support this response type.",
    "login_required": "Log in to the platform first.",
    "consent_required": "Your consent is needed first.",
    "server_error": "Login failed: the authorization server hit an error; try again later.",
    "temporarily_unavailable": "The authorization server is temporarily unavailable; try again later.",
    "platform_unavailable": "Cannot reach the authorization server; try again later.",
    "session_expired": "Your login has expired; please log in again.",
    "not_logged_in": "Please log in first.",
    "topup_failed": "Could not get the top-up link; try again later.",
    "userinfo_failed": "Could not get your account information; try again later.",
    "invalid_csrf": "The request expired (CSRF check failed); reload the page and try again.",
    "spend_limit_exceeded": "This period's spending limit is used up (you set it when authorizing; change it under "
    '"Authorized apps" on the platform).',
    "insufficient_balance": "Your balance is too low; top up first.",
    "spend_failed": "The charge failed; try again later.",
}
NOTICES_EN = {"login": {"success": "Logged in!"}, "logout": {"1": "Logged out."}}
MESSAGES = {"zh": (ERROR_MESSAGES, NOTICES), "en": (ERROR_MESSAGES_EN, NOTICES_EN)}
WORDS = {
    "zh": {
        "title": "我的第三方应用",
        "welcome": "欢迎回来!",
        "username": "用户名",
        "email": "邮箱",
        "balance": "账户余额",
        "refresh": "刷新余额",
        "topup": "账户充值",
        "logout": "退出登录",
        "please_login": "请登录以查看账户信息",
        "one_click_hint": "使用一键登录快速访问您的账户",
        "login": "一键登录",
        "refreshed": "余额已更新",
        "login_error": "登录出错:{error}",
        "footnote": "本页按接入指南的服务器端流程实现:授权码在服务器端换取令牌,client_secret 与令牌从不发送到浏览器。",
        "sdk_note": "对照:",
        "sdk_link": "指南中的浏览器 JavaScript SDK 页面",
        "sdk_warning": "(该页面会把 client_secret 暴露在浏览器中,请勿在生产环境中使用)。",
        "other_lang": "English",
        "spend": "付费提问(0.10)",
        "spent": "已扣费 {spent},本周期剩余额度 {left}",
    },
    "en": {
        "title": "My third-party app",
        "welcome": "Welcome back!",
        "username": "Username",
        "email": "Email",
        "balance": "Balance",
        "refresh": "Refresh balance",
        "topup": "Top up",
        "logout": "Log out",
        "please_login": "Log in to see your account",
        "one_click_hint": "One-click login gets you to your account quickly",
        "login": "One-click login",
        "refreshed": "Balance updated",
        "login_error": "Login error: {error}",
        "footnote": "This page follows the guide's server-side flow: the code is exchanged for tokens on the server; the client_secret and the tokens never reach the browser.",
        "sdk_note": "Compare: ",
        "sdk_link": "the guide's browser JavaScript SDK page",
        "sdk_warning": " (it exposes the client_secret in the browser: never use it in production).",
        "other_lang": "中文",
        "spend": "Paid question (0.10)",
        "spent": "Charged {spent}; {left} left in this period",
    },
}
LANG_COOKIE = "example_lang"
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" '
    'fill="#007bff"/><path d="M9 17l5 5 9-11" fill="none" stroke="#fff" stroke-width="3.5" '
    'stroke-linecap="round" stroke-linejoin="round"/></svg>'
)


def page_lang(request: web.Request) -> str:
    """zh (the guide's language) unless ?lang=en, the example_lang cookie or Accept-Language says en."""
    for candidate in (request.query.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in WORDS:
            return candidate
    return "en" if request.headers.get("Accept-Language", "").lower().startswith("en") else "zh"


@dataclass(frozen=True)
class Config:
    """Everything the app needs, read from the environment once by ``__main__``."""

    oauth_server: str = "http://localhost:8080"
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    redirect_uri: str = "http://localhost:3000/oauth/callback"
    port: int = 3000
    host: str = "127.0.0.1"
    serve_sdk_page: bool = True  # /sdk/ puts client_secret into a page, as the guide's SDK does
    resource_server_url: str = ""  # the example paid API (examples/resource_server); empty: no spend button
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "oauth_server", self.oauth_server.rstrip("/"))
        for name in ("oauth_server", "redirect_uri"):
            parts = urlsplit(getattr(self, name))
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{name} must be an absolute http(s) URL, got {getattr(self, name)!r}")

    @property
    def secure_cookie(self) -> bool:
        """Mark the cookie Secure when the app itself is served over HTTPS."""
        return self.redirect_uri.startswith("https://")


# --- server-side sessions -----------------------------------------------------------------------
@dataclass
class Session:
    sid: str
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    oauth_state: str | None = field(default=None, repr=False)
    code_verifier: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    token_expires_at: float | None = None  # epoch seconds
    last_seen: float = field(default_factory=time.monotonic)
    # One refresh at a time per session: the platform rotates refresh tokens on every use.
    refresh_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def store_tokens(self, tokens: TokenSet) -> None:
        self.access_token = tokens.access_token
        if tokens.refresh_token:  # rotated; keep the old one if the platform did not send a new one
            self.refresh_token = tokens.refresh_token
        self.token_expires_at = time.time() + tokens.expires_in if tokens.expires_in is not None else None

    def clear_tokens(self) -> None:
        self.access_token = self.refresh_token = None
        self.token_expires_at = None

    def expires_within(self, seconds: float) -> bool:
        return self.token_expires_at is not None and time.time() > self.token_expires_at - seconds


class SessionStore:
    """An in-memory dict of sessions keyed by a random id (one process; a real app would use Redis)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, idle_seconds: float = SESSION_IDLE_SECONDS) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._max = max_sessions
        self._idle = idle_seconds

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > self._idle:
            del self._sessions[sid]
            return None
        session.last_seen = now
        self._sessions.move_to_end(sid)
        return session

    def create(self) -> Session:
        session = Session(sid=secrets.token_urlsafe(32))
        self._sessions[session.sid] = session
        while len(self._sessions) > self._max:  # least recently used first
            self._sessions.popitem(last=False)
        return session

    def rotate(self, session: Session) -> Session:
        """A new id for the same session (on login, against session fixation)."""
        self._sessions.pop(session.sid, None)
        session.sid = secrets.token_urlsafe(32)
        session.csrf_token = secrets.token_urlsafe(32)
        self._sessions[session.sid] = session
        return session

    def delete(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)


# --- talking to the platform --------------------------------------------------------------------
@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int | None


class PlatformUnavailable(Exception):
    """The platform could not be reached, failed (5xx) or answered something unreadable."""


class TokenRejected(Exception):
    """The token endpoint refused the grant (RFC 6749 5.2); ``error`` is its error code."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class NotAuthenticated(Exception):
    """The session has no usable tokens (any it had were cleared)."""


@dataclass(frozen=True)
class ApiResult:
    status: int
    data: Any  # parsed JSON, or None when the body was not JSON


def _error_code(data: Any, default: str) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) and ERROR_CODE_RE.match(error) else default


async def _read_json(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


class Platform:
    """The platform's token, userinfo, top-up and revocation endpoints, called from this server."""

    def __init__(self, config: Config, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http

    def url(self, path: str) -> str:
        return self.config.oauth_server + path

    async def _token(self, form: dict[str, str]) -> TokenSet:
        try:
            async with self.http.post(
                self.url("/api/oauth2/token"), data=form, headers={"Accept": "application/json"}
            ) as resp:
                status, data = resp.status, await _read_json(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("token endpoint unreachable: %s", type(exc).__name__)
            raise PlatformUnavailable from exc
        if status >= 500:
            log.warning("token endpoint failed with HTTP %s", status)
            raise PlatformUnavailable
        if status >= 300:
            error = _error_code(data, "server_error")
            log.info("token endpoint refused the %s grant: HTTP %s %s", form["grant_type"], status, error)
            raise TokenRejected(error)
        return _token_set(data)

    async def exchange_code(self, code: str, code_verifier: str | None) -> TokenSet:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,  # only ever sent from the server
        }
        if code_verifier:
            form["code_verifier"] = code_verifier
        return await self._token(form)

    async def refresh(self, refresh_token: str) -> TokenSet:
        return await self._token(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret,
            }
        )

    async def revoke(self, token: str, hint: str) -> None:
        """RFC 7009, best effort: logging out must work even when the platform does not answer."""
        form = {
            "token": token,
            "token_type_hint": hint,
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
        }
        try:
            async with self.http.post(
                self.url("/api/oauth2/revoke"), data=form, timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                if resp.status >= 300:
                    log.info("token revocation answered HTTP %s", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("token revocation failed: %s", type(exc).__name__)

    async def get(self, path: str, access_token: str) -> ApiResult:
        try:
            async with self.http.get(
                self.url(path), headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
            ) as resp:
                return ApiResult(resp.status, await _read_json(resp))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("GET %s unreachable: %s", path, type(exc).__name__)
            raise PlatformUnavailable from exc


def _token_set(data: Any) -> TokenSet:
    if not isinstance(data, dict):
        raise PlatformUnavailable("token response is not a JSON object")
    access_token, refresh_token = data.get("access_token"), data.get("refresh_token")
    token_type, expires_in = data.get("token_type", "Bearer"), data.get("expires_in")
    if not isinstance(access_token, str) or not access_token:
        raise PlatformUnavailable("token response has no access_token")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise PlatformUnavailable("token response is not a Bearer token")
    if not isinstance(refresh_token, str) or not refresh_token:
        refresh_token = None
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in < 0:
        expires_in = None
    return TokenSet(access_token, refresh_token, int(expires_in) if expires_in is not None else None)


async def refresh_tokens(platform: Platform, session: Session, stale_access_token: str | None) -> None:
    """Swap the session's refresh token for a new pair; raise NotAuthenticated (tokens cleared)
    when the platform refuses it. Concurrent requests of one session share one refresh."""
    async with session.refresh_lock:
        if session.access_token and session.access_token != stale_access_token:
            return  # another request of this session refreshed while we waited
        if not session.refresh_token:
            session.clear_tokens()
            raise NotAuthenticated
        try:
            tokens = await platform.refresh(session.refresh_token)
        except TokenRejected as exc:
            session.clear_tokens()
            raise NotAuthenticated from exc
        session.store_tokens(tokens)


async def call_api(platform: Platform, session: Session, path: str) -> ApiResult:
    """GET a platform API with the session's access token, the way the guide's SDK ``apiRequest``
    does it: refresh first when the token expires within 5 minutes, and once more after a 401."""
    token = session.access_token
    if not token:
        raise NotAuthenticated
    if session.refresh_token and session.expires_within(REFRESH_MARGIN_SECONDS):
        await refresh_tokens(platform, session, token)
        token = session.access_token
        if not token:
            raise NotAuthenticated
    result = await platform.get(path, token)
    if result.status != 401:
        return result
    await refresh_tokens(platform, session, token)
    if not session.access_token:
        raise NotAuthenticated
    result = await platform.get(path, session.access_token)
    if result.status == 401:
        session.clear_tokens()
        raise NotAuthenticated
    return result


def pkce_pair() -> tuple[str, str]:
    """RFC 7636 4.1-4.2: a 86-character verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# --- app ----------------------------------------------------------------------------------------
CONFIG = web.AppKey("config", Config)
SESSIONS = web.AppKey("sessions", SessionStore)
PLATFORM = web.AppKey("platform", Platform)
PAGES = web.AppKey("pages", jinja2.Environment)
STATIC = web.AppKey("static_pages", dict)


def build_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[_errors_and_headers], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[SESSIONS] = SessionStore()
    app[PAGES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app[STATIC] = {
        "sdk": sdk_page_html(config),
        "callback": (HERE / "static" / "callback.html").read_text(encoding="utf-8"),
    }
    app.cleanup_ctx.append(_platform_client)
    app.router.add_get("/", index)
    app.router.add_get("/auth/oauth/start", oauth_start)
    app.router.add_get("/oauth/callback", oauth_callback)
    app.router.add_get("/api/user/info", api_user_info)
    app.router.add_get("/topup", topup)
    app.router.add_post("/spend", spend)
    app.router.add_post("/logout", logout)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.svg", favicon)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/sdk", sdk_slash)
    app.router.add_get("/sdk/", sdk_page)
    app.router.add_get("/oauth/callback.html", callback_page)
    return app


async def _platform_client(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    timeout = aiohttp.ClientTimeout(total=config.timeout_seconds, connect=min(3.0, config.timeout_seconds))
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as http:
        app[PLATFORM] = Platform(config, http)
        yield


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_and_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _security_headers(exc)
        raise
    except Exception:  # a readable page, never a stack trace in the browser
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = web.Response(
            status=500,
            text="<!DOCTYPE html><html lang='zh-CN'><meta charset='utf-8'><title>出错了</title>"
            "<h1>出错了</h1><p>服务器内部错误,请稍后再试。<a href='/'>返回首页</a></p></html>",
            content_type="text/html",
        )
    _security_headers(response)
    return response


def _security_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # The SDK page and the callback page carry ?code= in their URL: never send it on as a Referer.
    response.headers.setdefault("Referrer-Policy", "no-referrer")


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _home(**params: str) -> web.Response:
    return _redirect("/?" + urlencode(params) if params else "/")


def _session(request: web.Request) -> Session | None:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE))


def _set_session_cookie(response: web.StreamResponse, config: Config, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE, session.sid, path="/", httponly=True, samesite="Lax", secure=config.secure_cookie
    )


def _html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _message_for(error: str, lang: str = "zh") -> str:
    known = MESSAGES[lang][0].get(error)
    return known if known is not None else WORDS[lang]["login_error"].format(error=error[:200])


# GET / ------------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.Response:
    """The guide's SDK page, rendered on the server: works without JavaScript."""
    app, query = request.app, request.query
    session = _session(request)
    if "code" in query and (session is None or session.oauth_state is None) and app[CONFIG].serve_sdk_page:
        # The guide's callback.html sends the browser SDK's code to "/?code=...": let its JS handle it.
        return _html(app[STATIC]["sdk"], headers={"Cache-Control": "no-store"})

    lang = page_lang(request)
    messages, notice_words = MESSAGES[lang]
    errors = [_message_for(e, lang) for e in query.getall("error", [])[:3]]
    notices = [notice_words[k][v] for k, v in query.items() if v in notice_words.get(k, {})]
    spent, left = query.get("spent", ""), query.get("left", "")
    if AMOUNT_RE.match(spent) and AMOUNT_RE.match(left):
        notices.append(WORDS[lang]["spent"].format(spent=spent, left=left))
    user: dict[str, Any] | None = None
    logged_in = bool(session and session.access_token)
    if session is not None and logged_in:
        try:
            result = await call_api(app[PLATFORM], session, "/api/oauth2/userinfo")
        except NotAuthenticated:
            logged_in = False
            errors.append(messages["session_expired"])
        except PlatformUnavailable:
            errors.append(messages["platform_unavailable"])
        else:
            if 200 <= result.status < 300 and isinstance(result.data, dict):
                user = result.data
                if query.get("refresh") == "1":
                    notices.append(WORDS[lang]["refreshed"])
            else:
                errors.append(messages["userinfo_failed"])

    def shown(key: str) -> str:
        value = user.get(key) if user else None
        return "—" if value is None else str(value)

    page = (
        app[PAGES]
        .get_template("index.html")
        .render(
            errors=errors,
            notices=notices,
            logged_in=logged_in,
            username=shown("username"),
            email=shown("email"),
            balance=shown("balance_formatted"),
            csrf_token=session.csrf_token if session else "",
            sdk_page=app[CONFIG].serve_sdk_page,
            can_spend=bool(app[CONFIG].resource_server_url),
            w=WORDS[lang],
            lang=lang,
            other_lang="en" if lang == "zh" else "zh",
        )
    )
    response = _html(
        page,
        headers={
            "Cache-Control": "no-store",
            # form-action covers the redirects after a post too: the spend button may send the
            # browser on to the platform's consent page (docs/spending.md).
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
            f"form-action 'self' {_origin(app[CONFIG].oauth_server)}; frame-ancestors 'none'; base-uri 'none'",
        },
    )
    if query.get("lang") in WORDS:
        response.set_cookie(LANG_COOKIE, query["lang"], max_age=365 * 24 * 3600, path="/", samesite="Lax")
    return response


async def favicon(request: web.Request) -> web.Response:
    return web.Response(text=FAVICON, content_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


# GET /auth/oauth/start (guide step 2) ------------------------------------------------------------
async def oauth_start(request: web.Request) -> web.Response:
    config, sessions = request.app[CONFIG], request.app[SESSIONS]
    callback = urlsplit(config.redirect_uri)
    if request.host.lower() != callback.netloc.lower() and "same_host" not in request.query:
        # The session cookie must be set on the host the platform will send the browser back to
        # (http://127.0.0.1:3000 and http://localhost:3000 do not share cookies).
        again = "same_host=1&spend=1" if request.query.get("spend") == "1" else "same_host=1"
        return _redirect(f"{callback.scheme}://{callback.netloc}/auth/oauth/start?{again}")
    session = _session(request) or sessions.create()
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    session.oauth_state, session.code_verifier = state, verifier
    params = {
        "client_id": config.client_id,
        "redirect_uri": config.redirect_uri,
        "response_type": "code",
        "scope": f"{SCOPE} {SPEND_SCOPE}" if request.query.get("spend") == "1" else SCOPE,
        "state": state,
        "auto_authorize": "true",  # guide FAQ Q1: one-click login
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if request.query.get("spend") == "1":  # the spend button: ask for spend, suggesting a limit
        params |= SPEND_SUGGESTION
    response = _redirect(f"{config.oauth_server}/api/oauth2/authorize?{urlencode(params, quote_via=quote)}")
    _set_session_cookie(response, config, session)
    return response


# GET /oauth/callback (guide step 3) --------------------------------------------------------------
async def oauth_callback(request: web.Request) -> web.Response:
    config, sessions, query = request.app[CONFIG], request.app[SESSIONS], request.query
    error = query.get("error")
    if error:
        return _home(error=error[:200])
    code, state = query.get("code"), query.get("state")
    if not code or not state:
        return _home(error="missing_parameters")
    session = _session(request)
    expected = session.oauth_state if session else None
    if session is None or expected is None or not _same(state, expected):
        return _home(error="invalid_state")
    verifier = session.code_verifier
    session.oauth_state = session.code_verifier = None  # a state is good for one response only
    # RFC 9207: when the platform says who issued the response, it must be the platform we asked.
    iss = query.get("iss")
    if iss is not None and not _same(iss.rstrip("/"), config.oauth_server):
        return _home(error="invalid_issuer")
    try:
        tokens = await request.app[PLATFORM].exchange_code(code, verifier)
    except TokenRejected as exc:
        return _home(error=exc.error)
    except PlatformUnavailable:
        return _home(error="server_error")
    session = sessions.rotate(session)  # a fresh session id once logged in
    session.store_tokens(tokens)
    response = _home(login="success")
    _set_session_cookie(response, config, session)
    return response


# GET /api/user/info (guide step 4) ---------------------------------------------------------------
async def api_user_info(request: web.Request) -> web.Response:
    session = _session(request)
    if session is None or not session.access_token:
        return _json(NOT_AUTHENTICATED, status=401)
    try:
        result = await call_api(request.app[PLATFORM], session, "/api/oauth2/userinfo")
    except NotAuthenticated:
        return _json(NOT_AUTHENTICATED, status=401)
    except PlatformUnavailable:
        return _json({"error": "Platform unavailable"}, status=502)
    if 200 <= result.status < 300 and result.data is not None:
        return _json(result.data)
    if 400 <= result.status < 500:
        return _json({"error": _error_code(result.data, "User info request failed")}, status=result.status)
    return _json({"error": "User info request failed"}, status=502)


# GET /topup --------------------------------------------------------------------------------------
async def topup(request: web.Request) -> web.Response:
    session = _session(request)
    if session is None or not session.access_token:
        return _home(error="not_logged_in")
    try:
        result = await call_api(request.app[PLATFORM], session, "/api/oauth2/topup")
    except NotAuthenticated:
        return _home(error="session_expired")
    except PlatformUnavailable:
        return _home(error="platform_unavailable")
    url = result.data.get("topup_url") if 200 <= result.status < 300 and isinstance(result.data, dict) else None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        return _home(error="topup_failed")
    return _redirect(url)


# POST /spend (docs/spending.md) -------------------------------------------------------------------
async def _call_resource_server(request: web.Request, session: Session) -> tuple[int, Any]:
    """POST the example paid API with the session's access token (refreshed once after a 401)."""
    platform, config = request.app[PLATFORM], request.app[CONFIG]
    for attempt in range(2):
        token = session.access_token
        if not token:
            raise NotAuthenticated
        try:
            async with platform.http.post(
                config.resource_server_url.rstrip("/") + "/api/answer",
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "ex-" + secrets.token_urlsafe(16)},
            ) as resp:
                status, data = resp.status, await _read_json(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PlatformUnavailable from exc
        if status != 401 or attempt:
            return status, data
        await refresh_tokens(platform, session, token)
    raise NotAuthenticated  # pragma: no cover - the loop always returns


async def spend(request: web.Request) -> web.Response:
    """The spend button: one paid call; without the spend scope yet, ask the user for it first."""
    session = _session(request)
    form = await request.post()
    if session is None or not session.access_token:
        return _home(error="not_logged_in")
    token = form.get("csrf_token")
    if not isinstance(token, str) or not _same(token, session.csrf_token):
        return _home(error="invalid_csrf")
    if not request.app[CONFIG].resource_server_url:
        return _home(error="spend_failed")
    try:
        status, data = await _call_resource_server(request, session)
    except NotAuthenticated:
        return _home(error="session_expired")
    except PlatformUnavailable:
        return _home(error="platform_unavailable")
    if status == 403 and _error_code(data, "") == "insufficient_scope":
        return _redirect("/auth/oauth/start?spend=1")  # the consent page, where the user sets a limit
    if status == 200 and isinstance(data, dict):
        left = data.get("allowance", {}).get("remaining_formatted", "")
        return _home(spent=str(data.get("charged", "")), left=str(left))
    if status == 402:
        return _home(error=_error_code(data, "spend_failed"))
    return _home(error="spend_failed")


# POST /logout ------------------------------------------------------------------------------------
async def logout(request: web.Request) -> web.Response:
    session = _session(request)
    form = await request.post()
    if session is not None:
        token = form.get("csrf_token")
        if not isinstance(token, str) or not _same(token, session.csrf_token):
            return _home(error="invalid_csrf")
        request.app[SESSIONS].delete(session)
        if session.refresh_token:
            await request.app[PLATFORM].revoke(session.refresh_token, "refresh_token")
        session.clear_tokens()
    response = _home(logout="1")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# The guide's browser pages -----------------------------------------------------------------------
SDK_PLACEHOLDERS = {
    "authServer": "'https://your-domain.com'",
    "clientId": "'YOUR_CLIENT_ID'",
    "clientSecret": "'YOUR_CLIENT_SECRET'",
}


def js_string(value: str) -> str:
    """A single-quoted JavaScript literal that is also safe inside an HTML <script> element."""
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.:/@+=~%?#,;!$*()[]{}")
    return "'" + "".join(c if c in safe else f"\\u{ord(c):04x}" for c in value) + "'"


def sdk_page_html(config: Config) -> str:
    """The guide's SDK page as written, with only the three OAUTH_CONFIG literals filled in."""
    html = (HERE / "static" / "sdk.html").read_text(encoding="utf-8")
    values = {"authServer": config.oauth_server, "clientId": config.client_id, "clientSecret": config.client_secret}
    for key, placeholder in SDK_PLACEHOLDERS.items():
        line = f"{key}: {placeholder},"
        if html.count(line) != 1:
            raise RuntimeError(f"the SDK page must contain {line!r} exactly once")
        html = html.replace(line, f"{key}: {js_string(values[key])},")
    return html


async def sdk_slash(request: web.Request) -> web.Response:
    return _redirect("/sdk/")


async def sdk_page(request: web.Request) -> web.Response:
    if not request.app[CONFIG].serve_sdk_page:
        raise web.HTTPNotFound
    return _html(request.app[STATIC]["sdk"], headers={"Cache-Control": "no-store"})


async def callback_page(request: web.Request) -> web.Response:
    return _html(request.app[STATIC]["callback"], headers={"Cache-Control": "no-store"})


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings: /oauth/callback?code=... must not end up in a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms', request.remote, request.method, request.path, response.status, time * 1000
        )
