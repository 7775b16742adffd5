"""Digest e-mail rendering: map PNG, text, HTML (escaped), CSV; pure, no database."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from atm_risk.alerts.channels import build_message
from atm_risk.alerts.digest import (
    BASE_RATE_NOTE,
    MAP_FILENAME,
    DigestContent,
    DigestItem,
    embed_map_inline,
    render_digest,
)
from atm_risk.alerts.mapimage import HEIGHT_RATIO, render_risk_map

PROVINCES = (
    Path(__file__).resolve().parents[2] / "data" / "nl_admin_cbs" / "provincies_2022.geojson"
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("pwned")</script>'
MONEY_FIGURE = re.compile(r"(EUR|€)\s?\d")
RUN = {
    "id": 42,
    "as_of": datetime(2026, 11, 28, 5, 0, tzinfo=UTC),
    "scorer": "baseline/1",
    "probability_method": "base_rate_scaled",
    "horizon_days": 30,
}
INCIDENTS = [
    {
        "when_text": "2026-11-27 03:10",
        "place": "Houten",
        "method": "solid_explosive",
        "label": "news/812",
        "simulated": False,
    },
    {
        "when_text": "2026-11-27 04:40",
        "place": "Zeist",
        "method": "gas",
        "label": "sim/3",
        "simulated": True,
    },
]
CHANGES = [
    {
        "operator": "Geldmaat",
        "atm_id": "NL-0004",
        "old": "monitor",
        "new": "temporary_shutdown",
        "reason": "attack 6.1 km away; would avert EUR 4,100",
    }
]


def _band(rank: int) -> str:
    return "high" if rank <= 3 else "elevated" if rank <= 10 else "low"


def _items(n: int = 30) -> list[DigestItem]:
    rng = np.random.default_rng(7)
    out = []
    for rank in range(1, n + 1):
        out.append(
            DigestItem(
                rank=rank,
                operator="Geldmaat",
                atm_id=f"NL-{rank:04d}",
                city="Utrecht",
                address=f"Stationsplein {rank}",
                lon=float(5.0 + rng.uniform(0, 0.4)),
                lat=float(52.0 + rng.uniform(0, 0.2)),
                probability=0.02 / rank,
                risk_band=_band(rank),
                expected_loss_eur=12_345.0 / rank,
                action="temporary_shutdown" if rank <= 2 else "harden" if rank <= 6 else "monitor",
                action_reason=f"anti-explosion kit would avert EUR {41_000 // rank:,} a year",
                reasons=f"near-repeat risk; cash EUR {80_000 + rank:,} loaded",
            )
        )
    return out


def _render(items: Sequence[DigestItem] | None = None, **overrides: Any) -> DigestContent:
    args: dict[str, Any] = {
        "recipient_name": "Geldmaat",
        "role": "bank",
        "period": "daily",
        "period_start": datetime(2026, 11, 26, 23, 0, tzinfo=UTC),
        "period_end": datetime(2026, 11, 27, 23, 0, tzinfo=UTC),
        "zone": "Europe/Amsterdam",
        "run": RUN,
        "items": _items() if items is None else items,
        "incidents": INCIDENTS,
        "changes": CHANGES,
        "boundaries": None,
        "top": 5,
    }
    args.update(overrides)
    return render_digest(**args)


def _attachment(content: DigestContent, prefix: str) -> tuple[str, bytes, str]:
    found = [a for a in content.attachments if a[0].startswith(prefix)]
    assert len(found) == 1, [a[0] for a in content.attachments]
    return found[0]


def _csv_rows(content: DigestContent) -> tuple[list[str], list[dict[str, str]]]:
    _, data, mime = _attachment(content, "ranking-")
    assert mime == "text/csv"
    reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _image(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return np.asarray(imread(io.BytesIO(png), format="png"))


def _red_pixels(image: np.ndarray) -> int:
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r > 0.7) & (g < 0.3) & (b < 0.3)).sum())


def _orange_pixels(image: np.ndarray) -> int:
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r > 0.9) & (g > 0.35) & (g < 0.65) & (b < 0.2)).sum())


def _machines(bands: Sequence[str]) -> pd.DataFrame:
    n = len(bands)
    return pd.DataFrame(
        {
            "lon": np.linspace(5.0, 5.4, n),
            "lat": np.linspace(52.0, 52.2, n),
            "risk_band": list(bands),
            "label": [str(i + 1) for i in range(n)],
        }
    )


@pytest.fixture(scope="module")
def provinces() -> gpd.GeoDataFrame:
    return gpd.read_file(PROVINCES)


@pytest.fixture(scope="module")
def digest() -> DigestContent:
    return _render()


@pytest.fixture(scope="module")
def digest_no_money() -> DigestContent:
    return _render(show_money=False)


# --- the map -------------------------------------------------------------------------------


def test_map_is_a_png_of_the_requested_width(provinces: gpd.GeoDataFrame) -> None:
    png = render_risk_map(_machines(["high", "low"]), provinces, title="t", width_px=641)
    assert _image(png).shape == (round(641 * HEIGHT_RATIO), 641, 4)  # RGBA
    # (the default 900 px is checked on the digest's map below)


def test_map_shows_red_only_when_a_high_machine_is_present(provinces: gpd.GeoDataFrame) -> None:
    bands = ["low"] * 6 + ["elevated"] * 3
    with_high = _image(
        render_risk_map(_machines([*bands, "high"]), provinces, title="U", width_px=500)
    )
    without = _image(
        render_risk_map(_machines([*bands, "elevated"]), provinces, title="U", width_px=500)
    )
    assert _red_pixels(with_high) > 0
    assert _red_pixels(without) == 0
    assert _orange_pixels(without) > 0


def test_map_with_no_machine_or_one_machine(provinces: gpd.GeoDataFrame) -> None:
    empty = _machines([]).iloc[:0]
    for boundaries in (provinces, None):
        image = _image(render_risk_map(empty, boundaries, title="nothing", width_px=400))
        assert image.shape[:2] == (round(400 * HEIGHT_RATIO), 400)
        assert _red_pixels(image) == 0
    one = _image(render_risk_map(_machines(["high"]), provinces, title="one", width_px=400))
    assert _red_pixels(one) > 0


def test_map_is_deterministic_and_thread_safe() -> None:
    machines = _machines(["high", "elevated", "low", "low"])
    expected = render_risk_map(machines, None, title="same", width_px=400)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(
                lambda _: render_risk_map(machines, None, title="same", width_px=400), range(3)
            )
        )
    assert all(r == expected for r in results)


def test_map_leaves_out_machines_without_coordinates() -> None:
    machines = _machines(["high", "low"])
    machines.loc[0, "lon"] = np.nan  # the only high machine has no place
    assert _red_pixels(_image(render_risk_map(machines, None, title="t", width_px=400))) == 0


# --- the digest ----------------------------------------------------------------------------


def test_subject_and_attachments(digest: DigestContent) -> None:
    assert digest.subject == "[atm-risk] Daily digest 2026-11-28: 3 high, 7 elevated (Geldmaat)"
    names = [(name, mime) for name, _, mime in digest.attachments]
    assert names == [(MAP_FILENAME, "image/png"), ("ranking-daily-2026-11-28.csv", "text/csv")]
    image = _image(_attachment(digest, MAP_FILENAME)[1])
    assert image.shape[1] == 900
    assert _red_pixels(image) > 0
    assert '<img src="cid:riskmap"' in digest.html


def test_text_and_html_list_the_top_machines_counts_and_run(digest: DigestContent) -> None:
    for body in (digest.text, digest.html):
        for rank in range(1, 6):
            assert f"NL-{rank:04d}" in body
        assert "NL-0006" not in body  # only the top 5 in the body (NL-0004 is also a change)
        assert "EUR 12,345" in body  # expected loss of the first machine
        assert "temporary shutdown" in body
        assert "anti-explosion kit would avert EUR 41,000 a year" in body
        assert "Run 42" in body
        assert "baseline/1" in body
        assert BASE_RATE_NOTE in " ".join(body.split())  # the text wraps it
        assert "monitor" in body
        assert "1 simulated" in body
    assert "Machines in scope: 30" in digest.text
    assert "3 high, 7 elevated, 20 low" in digest.text
    assert "2 temporary shutdown, 0 night closure, 4 harden, 24 monitor" in digest.text


def test_incidents_carry_the_simulated_label(digest: DigestContent) -> None:
    text_lines = {line for line in digest.text.splitlines() if "Houten" in line or "Zeist" in line}
    assert any("[SIMULATED]" in line and "Zeist" in line for line in text_lines)
    assert all("[SIMULATED]" not in line for line in text_lines if "Houten" in line)
    html_items = re.findall(r"<li>.*?</li>", digest.html, flags=re.DOTALL)
    zeist = [li for li in html_items if "Zeist" in li]
    houten = [li for li in html_items if "Houten" in li]
    assert len(zeist) == 1
    assert "[SIMULATED]" in zeist[0]
    assert len(houten) == 1
    assert "[SIMULATED]" not in houten[0]
    assert "solid explosive" in digest.text


def test_csv_has_every_item_and_money(digest: DigestContent) -> None:
    header, rows = _csv_rows(digest)
    assert header[:3] == ["rank", "operator", "atm_id"]
    assert "expected_loss_eur" in header
    assert [row["atm_id"] for row in rows] == [f"NL-{r:04d}" for r in range(1, 31)]
    assert float(rows[0]["expected_loss_eur"]) == pytest.approx(12_345.0)
    assert float(rows[0]["probability"]) == pytest.approx(0.02)
    assert rows[0]["as_of"] == "2026-11-28T05:00:00+00:00"


def test_no_money_for_police(digest_no_money: DigestContent) -> None:
    header, rows = _csv_rows(digest_no_money)
    assert len(rows) == 30
    assert not any("loss" in column for column in header)
    _, data, _ = _attachment(digest_no_money, "ranking-")
    for body in (digest_no_money.text, digest_no_money.html, data.decode("utf-8")):
        assert not MONEY_FIGURE.search(body), MONEY_FIGURE.search(body)
        assert "[amount withheld]" in body
    assert "Expected loss" not in digest_no_money.html
    assert "expected loss" not in digest_no_money.text
    assert "NL-0001" in digest_no_money.text  # the ranking itself is still there


def test_html_escapes_hostile_fields_and_text_does_not() -> None:
    items = _items(3)
    items[0] = replace(items[0], address=HOSTILE, atm_id="NL-<b>1</b>")
    incidents = [{**INCIDENTS[1], "place": '<img src=x onerror="alert(1)">'}]
    changes = [{**CHANGES[0], "reason": "closed & <i>locked</i>"}]
    content = _render(
        items,
        recipient_name="Bank <script>x</script>",
        incidents=incidents,
        changes=changes,
        ack_url="https://alerts.test/ack?token=a&b=c",
    )
    assert "<script>" not in content.html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in content.html
    assert "<img src=x" not in content.html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in content.html
    assert "NL-&lt;b&gt;1&lt;/b&gt;" in content.html
    assert "closed &amp; &lt;i&gt;locked&lt;/i&gt;" in content.html
    assert 'href="https://alerts.test/ack?token=a&amp;b=c"' in content.html
    assert HOSTILE in content.text  # plain text is not escaped
    assert "closed & <i>locked</i>" in content.text
    assert "https://alerts.test/ack?token=a&b=c" in content.text


def test_csv_defuses_spreadsheet_formulas() -> None:
    items = [replace(_items(1)[0], address='=HYPERLINK("http://evil.test","x")')]
    _, rows = _csv_rows(_render(items))
    assert rows[0]["address"].startswith("'=")


def test_times_are_shown_in_the_given_zone() -> None:
    run = {**RUN, "as_of": datetime(2026, 3, 29, 1, 30, tzinfo=UTC)}  # just after DST starts
    content = _render(
        run=run,
        period_start=datetime(2026, 3, 27, 23, 0, tzinfo=UTC),
        period_end=datetime(2026, 3, 28, 23, 0, tzinfo=UTC),
    )
    for body in (content.text, content.html):
        assert "2026-03-29 03:30 CEST" in body
        assert "2026-03-28 00:00 CET to 2026-03-29 00:00 CET" in body
    assert "01:30" not in content.text
    assert content.subject.startswith("[atm-risk] Daily digest 2026-03-29:")


def test_zero_items() -> None:
    content = _render([], incidents=[], changes=[], period="weekly")
    assert content.subject == "[atm-risk] Weekly digest 2026-11-28: 0 high, 0 elevated (Geldmaat)"
    assert "No machines in scope." in content.text
    assert "No machines in scope." in content.html
    assert "Machines in scope: 0" in content.text
    header, rows = _csv_rows(content)
    assert rows == []
    assert header[0] == "rank"
    assert _attachment(content, "ranking-")[0] == "ranking-weekly-2026-11-28.csv"
    assert _image(_attachment(content, MAP_FILENAME)[1]).shape[1] == 900


def test_base_rate_note_only_for_base_rate_probabilities() -> None:
    content = _render(_items(2), run={**RUN, "probability_method": "calibrated_logit"})
    assert "shared out by the transparent" not in " ".join(content.text.split())
    assert "shared out by the transparent" not in content.html
    assert "calibrated_logit" in content.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"period": "monthly"}, "period"),
        ({"zone": "Mars/Olympus"}, "time zone"),
        ({"period_start": datetime(2026, 11, 26, 23, 0)}, "timezone-aware"),
        ({"period_end": datetime(2026, 11, 26, 22, 0, tzinfo=UTC)}, "after"),
        ({"run": {**RUN, "as_of": datetime(2026, 11, 28)}}, "timezone-aware"),
        ({"ack_url": "javascript:alert(1)"}, "ack_url"),
        ({"top": -1}, "top"),
    ],
)
def test_bad_arguments_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _render(_items(1), **overrides)


def test_embed_map_inline_makes_the_cid_resolvable(digest: DigestContent) -> None:
    message = build_message(
        subject=digest.subject,
        sender="alerts@atm-risk.test",
        to="duty@bank.test",
        message_id="<digest.1@atm-risk.test>",
        text=digest.text,
        html=digest.html,
        attachments=digest.attachments,
        date=datetime(2026, 11, 28, 6, 0, tzinfo=UTC) + timedelta(minutes=1),
    )
    embed_map_inline(message)
    parsed = message_from_bytes(message.as_bytes(), policy=email_policy.default)
    assert isinstance(parsed, EmailMessage)
    related = [p for p in parsed.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    inner = list(related[0].iter_parts())
    assert inner[0].get_content_type() == "text/html"
    assert inner[1]["Content-ID"] == "<riskmap>"
    assert inner[1].get_content().startswith(PNG_SIGNATURE)
    attachments = [p.get_filename() for p in parsed.iter_attachments()]
    assert attachments == ["ranking-daily-2026-11-28.csv"]
    assert parsed.get_body(preferencelist=("plain",)) is not None
