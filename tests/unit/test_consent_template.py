"""The consent template's structure (docs/architecture.md "Pages"): a section another feature adds
(consent_spend.html) lands inside the form, before the decision; a flow that reuses the template
(the device flow) may pass only what it has and its own form action."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from libs.oauth import pages
from services.authz import strings  # noqa: F401 - registers the authz words

ROOT = Path(__file__).resolve().parents[2]
APP = {
    "name": "Photo Print",
    "description": "",
    "logo_url": "",
    "developer_name": "",
    "homepage_url": "",
    "privacy_url": "",
    "terms_url": "",
}


def env(extra: dict[str, str]) -> jinja2.Environment:
    e = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.DictLoader(extra),
                jinja2.FileSystemLoader(str(ROOT / "services/authz/templates")),
                jinja2.FileSystemLoader(str(ROOT / "libs/oauth/templates")),
            ]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    e.globals["time_tag"] = pages.time_tag
    e.filters["host_of"] = pages.host_of
    return e


BASE_CONTEXT = {
    "t": pages.translator("en"),
    "lang": "en",
    "other_lang": "zh",
    "lang_url": "?lang=zh",
    "csrf_field": "csrf_token",
    "csrf_token": "tok",
    "logged_in": True,
    "brand": {"name": "Open Platform", "logo_url": "/assets/logo.svg", "color": "#0969da", "support_url": ""},
    "path": "/api/oauth2/authorize",
    "page_request_id": "rid",
    "app": APP,
    "shares": ["username", "email"],
    "username": "alice",
}


@pytest.mark.parametrize("partial", [True, False])
def test_an_added_section_lands_inside_the_form(partial: bool) -> None:
    extra = {"consent_spend.html": '<fieldset id="spend">limit</fieldset>'} if partial else {}
    html = (
        env(extra)
        .get_template("consent.html")
        .render(**BASE_CONTEXT, verified=False, switch_url="/login", redirect_host="a.example", request_id="cr")
    )
    form = html[html.index("<form") : html.index("</form>")]
    assert ('id="spend"' in form) is partial
    if partial:
        assert form.index('id="spend"') < form.index('value="allow"')


def test_a_reusing_flow_passes_only_what_it_has() -> None:
    child = (
        '{% extends "consent.html" %}'
        '{% block consent_hidden %}<input type="hidden" name="user_code" value="ABCD-EFGH">{% endblock %}'
    )
    html = (
        env({"device_consent.html": child})
        .get_template("device_consent.html")
        .render(**BASE_CONTEXT, form_action="/device/consent")
    )
    assert 'action="/device/consent"' in html and 'name="user_code"' in html
    assert 'name="request"' not in html and "Switch account" not in html and 'id="redirect-host"' not in html
    assert 'id="unverified-notice"' in html  # not said to be verified: the notice shows
