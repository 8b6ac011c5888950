"""Every scope a client may ask for (libs/oauth/vocabulary.SCOPES) is said in plain words on the
consent page and the authorized-apps page, in both languages: no raw ``share.*`` key on a page."""

from __future__ import annotations

import pytest

from libs.oauth.vocabulary import SCOPES
from services.authz.consent import shared_items
from services.authz.strings import STRINGS


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("scope", SCOPES)
def test_every_scope_has_words(scope: str, lang: str) -> None:
    for item in shared_items([scope]):
        assert f"share.{item}" in STRINGS[lang], (scope, item, lang)
