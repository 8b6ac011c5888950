"""The password policy for new passwords (NIST SP 800-63B 5.1.1.2; docs/operations.md "Accounts"):

- 8 to 128 characters (any characters: spaces and passphrases welcome, no composition rules);
- not the username or the email's name part, and not containing either (case-insensitive);
- not one of the 30 000 most common passwords (the list bundled with ``zxcvbn``, from real leaks).

``password_problem`` returns the broken rule's code (``length``, ``personal``, ``common``) or None;
the account service turns it into a zh/en message (strings.py ``acct.user_error.password.*``).
"""

from __future__ import annotations

from zxcvbn.matching import RANKED_DICTIONARIES

MIN_LENGTH = 8
MAX_LENGTH = 128
MIN_PERSONAL = 3  # shorter names would forbid too much ("ab" is in many good passwords)

MESSAGES = {
    "length": f"password: {MIN_LENGTH}-{MAX_LENGTH} characters",
    "personal": "password must not contain your username or the part of your email before '@'",
    "common": "this password is one of the most common ones, which attackers try first; choose another",
}


def password_problem(password: str, username: str, email: str) -> str | None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        return "length"
    folded = password.casefold()
    personal = (username.casefold(), email.rpartition("@")[0].casefold())
    if any(len(p) >= MIN_PERSONAL and p in folded for p in personal):
        return "personal"
    if folded in RANKED_DICTIONARIES["passwords"]:
        return "common"
    return None
