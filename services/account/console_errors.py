"""The developer API's validation messages (English, in the guide's envelope) in the console's
language: the console shows the same rules' errors, in Chinese on a Chinese page. A pure table of
message patterns; a message the table does not know is shown as it is, after a Chinese lead-in."""

from __future__ import annotations

import re

FIELD_NAMES_ZH = {
    "name": "名称",
    "description": "描述",
    "redirect_uri": "回调地址",
    "redirect_uris": "回调地址",
    "token_endpoint_auth_method": "客户端类型",
    "logo_url": "Logo 地址",
    "developer_name": "开发者名称",
    "homepage_url": "应用主页",
    "privacy_url": "隐私政策地址",
    "terms_url": "服务条款地址",
}

# (pattern over the whole English message, Chinese template: {f} is the field's Chinese name,
# {g1}, {g2} ... the pattern's other groups). Field-specific rows come before the generic ones.
PATTERNS_ZH: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), zh)
    for p, zh in (
        (r"^(redirect_uri) is required, e\.g\. (\S+)$", "请填写{f},例如 {g2}"),
        (r"^(redirect_uri) must be 1-(\d+) characters$", "{f}的长度必须在 1 到 {g2} 个字符之间"),
        (r"^(redirect_uri) must not contain a fragment \(#\.\.\.\)$", "{f}不能包含片段(#...)"),
        (r"^(redirect_uri) is not a valid URI$", "{f}不是有效的地址"),
        (
            r"^(redirect_uri) must use https; http is allowed only for localhost and 127\.0\.0\.1$",
            "{f}必须使用 https;只有 localhost 和 127.0.0.1 可以使用 http",
        ),
        (
            r"^(redirect_uri) must use https \(or http for localhost/127\.0\.0\.1\)$",
            "{f}必须使用 https(localhost 和 127.0.0.1 可用 http)",
        ),
        (r"^(redirect_uri) must be an absolute URI such as (\S+)$", "{f}必须是完整的地址,例如 {g2}"),
        (r"^(redirect_uri) must name a host$", "{f}必须包含主机名"),
        (r"^(redirect_uri) must not contain wildcards; register each URI exactly$", "{f}不能包含通配符,请逐个精确登记"),
        (r"^(redirect_uris) must be a list of strings$", "{f}必须是文本列表"),
        (r"^at most (\d+) redirect URIs per app$", "每个应用最多登记 {g1} 个回调地址"),
        (r"^(\w+) must be an https:// URL, e\.g\. (\S+)$", "{f}必须是以 https:// 开头的地址,例如 {g2}"),
        (r"^(\w+) is not a valid URL$", "{f}不是有效的地址"),
        (r"^(\w+) must not contain spaces, quotes or control characters$", "{f}不能包含空格、引号或控制字符"),
        (r"^(\w+) must not contain spaces or control characters$", "{f}不能包含空格或控制字符"),
        (r"^(\w+) must not contain user information \(user@host\)$", "{f}不能包含用户信息(user@host)"),
        (r"^(\w+) must not contain control characters$", "{f}不能包含控制字符"),
        (r"^(\w+) must be one of: (.+)$", "{f}必须是以下之一:{g2}"),
        (r"^(\w+) is required$", "请填写{f}"),
        (r"^(\w+) must be a string$", "{f}必须是文本"),
        (r"^(\w+) must be at most (\d+) characters$", "{f}最多 {g2} 个字符"),
        (r"^(\w+) must not be empty$", "{f}不能为空"),
        (r"^(\w+) must be at least (\d+) characters$", "{f}至少需要 {g2} 个字符"),
        (r"^(\w+) contains control characters or invalid Unicode$", "{f}含有控制字符或无效字符"),
        (r"^(\w+) has an invalid format$", "{f}的格式无效"),
        (
            r"^you already have (\d+) apps, the limit; delete one you no longer use$",
            "你已有 {g1} 个应用,达到上限;请先删除不再使用的应用",
        ),
        (r"^app not found$", "未找到该应用"),
        (
            r"^this app is a public client \(token_endpoint_auth_method none\) and has no secret$",
            "该应用是公开客户端(token_endpoint_auth_method 为 none),没有密钥",
        ),
        (
            r"^you already have (\d+) active developer tokens; revoke one first$",
            "你已有 {g1} 个有效的开发者令牌,请先撤销一个",
        ),
        (r"^developer token not found$", "未找到该开发者令牌"),
    )
)
UNKNOWN_ZH = "提交的内容无效:{message}"


def console_error(message: str, lang: str) -> str:
    """``message`` (an ApiError's) in ``lang``: English as it is, Chinese from the table."""
    if lang != "zh":
        return message
    for pattern, template in PATTERNS_ZH:
        m = pattern.match(message)
        if m is None:
            continue
        groups = {f"g{i}": g for i, g in enumerate(m.groups(), start=1)}
        field_name = FIELD_NAMES_ZH.get(m.group(1), m.group(1)) if m.groups() else ""
        return template.format(f=field_name, **groups)
    return UNKNOWN_ZH.format(message=message)
