"""Secrets have no working defaults: empty values and placeholders are refused.

``.env.example`` leaves every secret empty; a value such as ``change-me`` copied from a
template is refused as well, so a deployment cannot run on a secret that everybody knows.
Messages name the setting, never the value.
"""

from __future__ import annotations

import re

__all__ = ["GENERATE_HINT", "check_secret"]

GENERATE_HINT = "generate one with `openssl rand -hex 32`"
_PLACEHOLDER = re.compile(
    r"change[-_ .]?me|replace[-_ .]?me|placeholder|^<.*>$|^x+$|^\*+$", re.IGNORECASE
)


def check_secret(value: str, what: str, *, min_length: int = 1) -> str:
    """``value`` if it may serve as the secret ``what``; ValueError (naming ``what``) if it
    is empty, a placeholder, or shorter than ``min_length`` characters."""
    if not value.strip():
        raise ValueError(f"{what} is empty; {GENERATE_HINT}")
    if _PLACEHOLDER.search(value.strip()):
        raise ValueError(f"{what} is a placeholder, not a secret; {GENERATE_HINT}")
    if len(value) < min_length:
        raise ValueError(f"{what} is shorter than {min_length} characters; {GENERATE_HINT}")
    return value
