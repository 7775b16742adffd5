"""Signed acknowledgement links: a good link verifies; forged, expired and non-ASCII
signatures are refused with AckError (a non-ASCII signature answered 500 before: found by
the reliability suite, #10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from pydantic import SecretStr

from atm_risk.alerts.ack import AckError, ack_link, verify_link

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SECRET = SecretStr("k" * 32)


def _parts(link: str) -> tuple[str, int, str]:
    q = parse_qs(urlparse(link).query)
    return q["by"][0], int(q["exp"][0]), q["sig"][0]


def test_a_link_verifies_until_it_expires() -> None:
    who, exp, sig = _parts(ack_link("https://x.example", SECRET, 7, "police-utrecht", NOW))
    verify_link(SECRET, 7, who, exp, sig, NOW)
    with pytest.raises(AckError, match="expired"):
        verify_link(SECRET, 7, who, exp, sig, NOW + timedelta(days=8))
    with pytest.raises(AckError, match="not valid"):
        verify_link(SECRET, 8, who, exp, sig, NOW)  # another alert


@pytest.mark.parametrize("sig", ["00", "é" * 64, "\U0001d518", "\udcff", ""])
def test_forged_signatures_are_refused_not_crashed(sig: str) -> None:
    with pytest.raises(AckError, match="not valid"):
        verify_link(SECRET, 7, "who", int(NOW.timestamp()) + 60, sig, NOW)
