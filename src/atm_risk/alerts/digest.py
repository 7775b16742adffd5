"""The daily and weekly digest e-mail: subject, plain text, HTML, map picture and CSV.

Pure rendering: everything comes in as arguments (no database, no clock, no network); the
outbox decides whom to send it to and stores and sends what :func:`render_digest` returns.
``items`` must already be scoped to what the recipient may see (a bank only its own machines).

Templates: ``templates/digest.txt.j2`` (never escaped) and ``templates/digest.html.j2``
(always autoescaped: an address like ``<script>`` arrives as ``&lt;script&gt;``). The view
model handed to them is made of ready-formatted strings, so the templates hold layout only.

Money: with ``show_money=False`` (police must not see banks' cash figures) there is no
expected-loss column, total or CSV column, and every amount inside the free-text reasons
(``EUR 12,000``, ``€1.2k``, ``300 euro``) is replaced by ``[amount withheld]``, because the
decision engine writes amounts into its reasons ("would avert EUR 41,000 of expected loss").

Attachments (``DigestContent.attachments``, each ``(filename, bytes, mime)``):

* ``risk-map.png`` (``image/png``): the HTML shows it with ``<img src="cid:riskmap">``. The
  part needs ``Content-ID: <riskmap>`` for that; :func:`embed_map_inline` does it on a message
  built by :func:`atm_risk.alerts.channels.build_message` (it moves the picture into a
  ``multipart/related`` with the HTML). Without it the map is still there as an ordinary
  attachment and the ``<img>`` shows its alt text, which says so.
* ``ranking-<period>-<YYYY-MM-DD>.csv`` (``text/csv; UTF-8, no BOM, CRLF``): every item, not
  only the top N. Text cells starting with ``= + - @`` get a leading ``'`` so a spreadsheet
  does not run them as formulas.

Dates: the subject and file name carry the local date (in ``zone``) of ``period_end``, the
day the digest is issued; the body gives the exact period, and every time is shown in
``zone`` with its abbreviation (``2026-03-29 03:30 CEST``).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from atm_risk.alerts.mapimage import render_risk_map

__all__ = [
    "BASE_RATE_NOTE",
    "MAP_CONTENT_ID",
    "MAP_FILENAME",
    "DigestContent",
    "DigestItem",
    "embed_map_inline",
    "render_digest",
]

MAP_FILENAME = "risk-map.png"
MAP_CONTENT_ID = "riskmap"  # the part's header is "Content-ID: <riskmap>"
MAP_WIDTH_PX = 900
TEXT_WIDTH = 78  # plain-text lines are wrapped here
BASE_RATE_NOTE = (
    "probabilities are published national attack rates shared out by the transparent "
    "baseline score, not a fitted model"
)
WITHHELD = "[amount withheld]"
PERIODS = ("daily", "weekly")
BANDS = ("high", "elevated", "low")
ACTIONS = ("temporary_shutdown", "night_closure", "harden", "monitor")
BAND_COLOURS = {"high": "#d62728", "elevated": "#ff7f0e", "low": "#8c8c8c"}
MAP_LABELS = 10  # the map numbers the first 10 machines of the ranking
_ALLOWED_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_AMOUNT = (
    r"\d(?:[\d.,']*\d)?(?:[ \u00a0\u202f]\d{3}\b)*"  # 80,000 80.000 80 000
    r"(?:\s?(?:k|m|mln|million|thousand|bn|billion)\b)?"
)
_MONEY = re.compile(rf"(?:\bEUR|€)\s?-?{_AMOUNT}|{_AMOUNT}\s?(?:EUR\b|€|euros?\b)", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

Cleaner = Callable[[object], str]


@dataclass(frozen=True)
class DigestItem:
    """One ranked machine as the recipient may see it."""

    rank: int
    operator: str
    atm_id: str
    city: str | None
    address: str | None
    lon: float
    lat: float
    probability: float | None  # P(attack within the run's horizon)
    risk_band: str  # high | elevated | low
    expected_loss_eur: float | None  # over the horizon
    action: str  # temporary_shutdown | night_closure | harden | monitor
    action_reason: str
    reasons: str  # why the machine is at risk


@dataclass(frozen=True)
class DigestContent:
    subject: str
    text: str
    html: str
    attachments: list[tuple[str, bytes, str]]  # (filename, bytes, mime)


def render_digest(
    *,
    recipient_name: str,
    role: str,
    period: str,
    period_start: datetime,
    period_end: datetime,
    zone: str,
    run: Mapping[str, Any],
    items: Sequence[DigestItem],
    incidents: Sequence[Mapping[str, Any]],
    changes: Sequence[Mapping[str, Any]],
    boundaries: Any | None,
    top: int = 20,
    show_money: bool = True,
    ack_url: str | None = None,
) -> DigestContent:
    """Render one recipient's digest.

    ``period`` is ``"daily"`` or ``"weekly"``; ``period_start`` < ``period_end``, both aware.
    ``zone`` is an IANA zone for display. ``run`` has ``id``, ``as_of`` (aware),
    ``scorer``, ``probability_method`` and ``horizon_days``. ``items`` is the recipient's
    ranking (ordered by ``rank``; the first ``top`` are listed, all go into the CSV and on the
    map). ``incidents`` are attacks in the period (``when_text, place, method, label,
    simulated``); ``changes`` are changed recommendations (``operator, atm_id, old, new,
    reason``). ``boundaries`` (GeoDataFrame or ``None``) is drawn under the machines.
    ``ack_url`` (http/https only) is shown as an acknowledgement link.
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    tz = _zone(zone)
    _aware("period_start", period_start)
    _aware("period_end", period_end)
    if period_end <= period_start:
        raise ValueError("period_end must be after period_start")
    as_of = run["as_of"]
    if not isinstance(as_of, datetime):
        raise ValueError("run['as_of'] must be a datetime")
    _aware("run['as_of']", as_of)
    if ack_url is not None and not _ALLOWED_URL.fullmatch(ack_url):
        raise ValueError("ack_url must be an http(s) URL without spaces or quotes")

    ranked = sorted(items, key=lambda i: i.rank)
    issue_date = period_end.astimezone(tz).date().isoformat()
    horizon = _number(run.get("horizon_days"))
    method = run.get("probability_method")
    clean = _cleaner(show_money)
    name = _one_line(recipient_name)

    bands = Counter(i.risk_band for i in ranked)
    actions = Counter(i.action or "" for i in ranked)
    losses = [i.expected_loss_eur for i in ranked if i.expected_loss_eur is not None]
    n_simulated = sum(1 for inc in incidents if inc.get("simulated"))
    csv_name = f"ranking-{period}-{issue_date}.csv"

    subject = _one_line(
        f"[atm-risk] {period.capitalize()} digest {issue_date}: "
        f"{bands.get('high', 0)} high, {bands.get('elevated', 0)} elevated ({name})"
    )
    view: dict[str, Any] = {
        "subject": subject,
        "heading": f"{period.capitalize()} digest {issue_date}",
        "recipient_name": name,
        "role": _one_line(role),
        "period_text": f"{_local(period_start, tz)} to {_local(period_end, tz)}",
        "zone": zone,
        "show_money": show_money,
        "horizon_text": f"{horizon} days" if horizon else "the run's horizon",
        "n_items": len(ranked),
        "n_items_text": f"{len(ranked):,}",
        "band_counts": [
            {"band": b, "count": f"{n:,}", "colour": BAND_COLOURS.get(b, "#c7c7c7")}
            for b, n in _ordered(bands, BANDS)
        ],
        "action_counts": [
            {"action": _action_text(a), "count": f"{n:,}"} for a, n in _ordered(actions, ACTIONS)
        ],
        "loss_total": _euro(sum(losses)) if show_money and losses else None,
        "top_n": min(top, len(ranked)),
        "top": [_item_view(i, show_money, clean) for i in ranked[:top]],
        "incidents": [_incident_view(inc) for inc in incidents],
        "n_simulated": n_simulated,
        "changes": [_change_view(c, clean) for c in changes],
        "run": {
            "id": _one_line(str(run.get("id", ""))),
            "as_of": _local(as_of, tz),
            "scorer": _one_line(str(run.get("scorer") or "unknown")),
            "method": _one_line(str(method)) if method else "none (no probabilities)",
        },
        "base_rate_note": BASE_RATE_NOTE if method == "base_rate_scaled" else None,
        "map_filename": MAP_FILENAME,
        "map_cid": MAP_CONTENT_ID,
        "map_width": MAP_WIDTH_PX,
        "map_labels": min(MAP_LABELS, len(ranked)),
        "csv_name": csv_name,
        "ack_url": ack_url,
    }
    env = _environment()
    text = env.get_template("digest.txt.j2").render(view)
    html = env.get_template("digest.html.j2").render(view)

    png = render_risk_map(
        _map_frame(ranked),
        boundaries,
        title=f"{name}: ATM risk as of {_local(as_of, tz)}",
        width_px=MAP_WIDTH_PX,
    )
    ranking_csv = _ranking_csv(ranked, run, show_money, clean)
    return DigestContent(
        subject=subject,
        text=text,
        html=html,
        attachments=[
            (MAP_FILENAME, png, "image/png"),
            (csv_name, ranking_csv, "text/csv"),
        ],
    )


def embed_map_inline(message: EmailMessage) -> None:
    """Turn the ``risk-map.png`` attachment into the HTML's inline ``cid:riskmap`` picture.

    For a message made by ``build_message(html=..., attachments=content.attachments)``: the
    picture moves from the attachment list into a ``multipart/related`` next to the HTML,
    with ``Content-ID: <riskmap>`` and ``Content-Disposition: inline``. Other attachments
    (the CSV) stay where they are. Raises ``ValueError`` without an HTML body or a map.
    """
    html = message.get_body(preferencelist=("html",))
    if html is None or not isinstance(html, EmailMessage):
        raise ValueError("the message has no HTML body")
    found = [p for p in message.iter_attachments() if p.get_filename() == MAP_FILENAME]
    if not found:
        raise ValueError(f"the message has no {MAP_FILENAME} attachment")
    part = found[0]
    png = part.get_content()
    parts = message.get_payload()
    if not isinstance(parts, list):
        raise ValueError("the message is not multipart")
    message.set_payload([p for p in parts if p is not part])
    html.add_related(
        png,
        maintype="image",
        subtype="png",
        cid=f"<{MAP_CONTENT_ID}>",
        filename=MAP_FILENAME,
        disposition="inline",
    )


# ---------------------------------------------------------------------------------------------


@functools.cache
def _environment() -> Environment:
    """One shared environment (thread-safe for rendering); HTML escaped, text not."""
    env = Environment(
        loader=PackageLoader("atm_risk.alerts", "templates"),
        autoescape=select_autoescape(
            enabled_extensions=("html", "htm", "xml", "html.j2"),
            disabled_extensions=("txt", "txt.j2"),
            default_for_string=True,
            default=True,
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["para"] = _paragraph
    return env


def _paragraph(text: str, first: str, indent: int, width: int = TEXT_WIDTH) -> str:
    """``first`` + text, wrapped at ``width`` with ``indent`` spaces on following lines."""
    return textwrap.fill(
        text,
        width=width,
        initial_indent=first,
        subsequent_indent=" " * indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _zone(zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {zone!r}") from exc


def _aware(what: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


def _local(value: datetime, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def _one_line(value: str) -> str:
    """Free text on one line: newlines and tabs in hostile or sloppy input become spaces."""
    return _SPACE.sub(" ", value).strip()


def _cleaner(show_money: bool) -> Cleaner:
    def clean(value: object) -> str:
        text = "" if value is None else _one_line(str(value))
        return text if show_money else _MONEY.sub(WITHHELD, text)

    return clean


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return ""
    return f"{value:g}"


def _ordered(counts: Counter[str], known: Sequence[str]) -> list[tuple[str, int]]:
    """Known keys in their order (zeros included), then the others sorted."""
    rest = sorted(k for k in counts if k not in known)
    return [(k, counts.get(k, 0)) for k in known] + [(k, counts[k]) for k in rest]


def _action_text(action: str) -> str:
    return action.replace("_", " ") if action else "none"


def _euro(value: float) -> str:
    return f"EUR {value:,.0f}"


def _percent(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    pct = p * 100
    if pct >= 10:
        return f"{pct:.0f}%"
    if pct == 0:
        return "0%"
    return f"{pct:.2g}%"


def _item_view(item: DigestItem, show_money: bool, clean: Cleaner) -> dict[str, Any]:
    place = ", ".join(clean(v) for v in (item.city, item.address) if v and str(v).strip())
    return {
        "rank": item.rank,
        "machine": f"{clean(item.operator)} {clean(item.atm_id)}",
        "place": place,
        "probability": _percent(item.probability),
        "band": clean(item.risk_band),
        "colour": BAND_COLOURS.get(item.risk_band, "#c7c7c7"),
        "loss": (
            _euro(item.expected_loss_eur)
            if show_money and item.expected_loss_eur is not None
            else ("n/a" if show_money else None)
        ),
        "action": _action_text(clean(item.action)),
        "action_reason": clean(item.action_reason),
        "reasons": clean(item.reasons),
    }


def _incident_view(incident: Mapping[str, Any]) -> dict[str, Any]:
    method = _one_line(str(incident.get("method") or "attack")).replace("_", " ")
    return {
        "simulated": bool(incident.get("simulated")),
        "when": _one_line(str(incident.get("when_text") or "time unknown")),
        "place": _one_line(str(incident.get("place") or "place unknown")),
        "method": method,
        "label": _one_line(str(incident.get("label") or "")),
    }


def _change_view(change: Mapping[str, Any], clean: Cleaner) -> dict[str, Any]:
    return {
        "machine": f"{clean(change.get('operator'))} {clean(change.get('atm_id'))}".strip(),
        "old": _action_text(clean(change.get("old"))),
        "new": _action_text(clean(change.get("new"))),
        "reason": clean(change.get("reason")),
    }


def _map_frame(ranked: Sequence[DigestItem]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lon": [i.lon for i in ranked],
            "lat": [i.lat for i in ranked],
            "risk_band": [i.risk_band for i in ranked],
            "label": [str(i.rank) if k < MAP_LABELS else "" for k, i in enumerate(ranked)],
        },
        columns=["lon", "lat", "risk_band", "label"],
    )


def _ranking_csv(
    ranked: Sequence[DigestItem], run: Mapping[str, Any], show_money: bool, clean: Cleaner
) -> bytes:
    columns = [
        "rank",
        "operator",
        "atm_id",
        "city",
        "address",
        "lat",
        "lon",
        "probability",
        "risk_band",
        *(["expected_loss_eur"] if show_money else []),
        "action",
        "action_reason",
        "reasons",
        "run_id",
        "as_of",
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)  # RFC 4180: CRLF line ends
    writer.writeheader()
    as_of = run["as_of"].isoformat()
    for i in ranked:
        row: dict[str, object] = {
            "rank": i.rank,
            "operator": _cell(clean(i.operator)),
            "atm_id": _cell(clean(i.atm_id)),
            "city": _cell(clean(i.city)),
            "address": _cell(clean(i.address)),
            "lat": i.lat,
            "lon": i.lon,
            "probability": "" if i.probability is None else round(i.probability, 8),
            "risk_band": _cell(clean(i.risk_band)),
            "action": _cell(clean(i.action)),
            "action_reason": _cell(clean(i.action_reason)),
            "reasons": _cell(clean(i.reasons)),
            "run_id": run.get("id", ""),
            "as_of": as_of,
        }
        if show_money:
            row["expected_loss_eur"] = (
                "" if i.expected_loss_eur is None else round(i.expected_loss_eur, 2)
            )
        writer.writerow(row)
    return out.getvalue().encode("utf-8")


def _cell(text: str) -> str:
    """Defuse spreadsheet formulas (CSV injection) in a text cell."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text
