"""The canonical records: ``AtmRecord`` and ``IncidentRecord`` validation and normalisation."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from atm_risk.atms.models import AtmStatus, HardeningMeasure, SiteType
from atm_risk.atms.schemas import WEEKDAYS, AtmRecord
from atm_risk.clock import FrozenClock
from atm_risk.incidents.models import AttackMethod, DatePrecision, GeocodePrecision
from atm_risk.incidents.schemas import IncidentRecord

DROP = object()  # marks a base field to leave out


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **changes}
    return {k: v for k, v in merged.items() if v is not DROP}


def _errors(exc: ValidationError) -> dict[str, str]:
    """``{field: message}``; a whole-record (model validator) error is under ``""``."""
    return {
        ".".join(str(p) for p in err["loc"]): err["msg"] for err in exc.errors(include_url=False)
    }


# --- AtmRecord ---------------------------------------------------------------------------

ATM = {"atm_id": "GM-001", "operator": "geldmaat", "lat": 52.09, "lon": 5.12}


def atm(**changes: Any) -> AtmRecord:
    return AtmRecord.model_validate(_merge(ATM, changes))


def atm_errors(**changes: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        atm(**changes)
    return _errors(info.value)


def test_minimal_atm_gets_defaults() -> None:
    record = atm()
    assert (record.atm_id, record.operator, record.lat, record.lon) == (
        "GM-001",
        "geldmaat",
        52.09,
        5.12,
    )
    assert record.site_type is SiteType.UNKNOWN
    assert record.status is AtmStatus.ACTIVE
    assert record.opening_hours is None
    assert record.night_closure is None
    assert record.hardening == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lat", 95),
        ("lat", -90.5),
        ("lon", -181),
        ("lon", 180.01),
        ("lat", math.nan),
        ("lat", "nan"),
        ("lon", math.inf),
    ],
)
def test_atm_coordinates_out_of_range_are_rejected(field: str, value: Any) -> None:
    assert list(atm_errors(**{field: value})) == [field]


@pytest.mark.parametrize(("lat", "lon"), [(90, 180), (-90, -180), ("52.5", "4.9")])
def test_atm_coordinates_at_the_bounds_or_as_text_are_accepted(lat: Any, lon: Any) -> None:
    record = atm(lat=lat, lon=lon)
    assert (record.lat, record.lon) == (float(lat), float(lon))


@pytest.mark.parametrize("field", ["atm_id", "operator"])
def test_atm_missing_id_or_operator_is_rejected(field: str) -> None:
    assert atm_errors(**{field: DROP}) == {field: "Field required"}


@pytest.mark.parametrize("field", ["atm_id", "operator"])
def test_atm_blank_id_or_operator_is_rejected(field: str) -> None:
    assert list(atm_errors(**{field: "   "})) == [field]


def test_atm_unknown_column_is_rejected() -> None:
    assert list(atm_errors(colour="red")) == ["colour"]


def test_atm_country_is_upper_cased() -> None:
    assert atm(country=" nl ").country == "NL"


@pytest.mark.parametrize("country", ["NLD", "N", "N1"])
def test_atm_country_not_alpha2_is_rejected(country: str) -> None:
    assert list(atm_errors(country=country)) == ["country"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Free-Standing", SiteType.FREE_STANDING),
        ("free standing", SiteType.FREE_STANDING),
        (" BRANCH ", SiteType.BRANCH),
        ("foyer", SiteType.FOYER),
    ],
)
def test_atm_site_type_is_normalised(given: str, expected: SiteType) -> None:
    assert atm(site_type=given).site_type is expected


def test_atm_unknown_site_type_is_rejected() -> None:
    assert list(atm_errors(site_type="kiosk")) == ["site_type"]


def test_opening_hours_single_interval_applies_to_every_day() -> None:
    record = atm(opening_hours="07:00-23:00")
    assert record.opening_hours == dict.fromkeys(WEEKDAYS, "07:00-23:00")
    assert len(WEEKDAYS) == 7


def test_opening_hours_day_pairs() -> None:
    record = atm(opening_hours="mon=07:00-23:00; Sunday=Closed")
    assert record.opening_hours == {"mon": "07:00-23:00", "sun": "closed"}


def test_opening_hours_json_object() -> None:
    record = atm(opening_hours='{"mon": "07:00-23:00", "tue": "00:00-00:00", "wed": "24h"}')
    assert record.opening_hours == {"mon": "07:00-23:00", "tue": "closed", "wed": "00:00-24:00"}


def test_opening_hours_as_dict() -> None:
    record = atm(opening_hours={"Sat": "09:00 - 17:00"})
    assert record.opening_hours == {"sat": "09:00-17:00"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("00:00-00:00", "closed"),
        ("gesloten", "closed"),
        ("24h", "00:00-24:00"),
        ("24H", "00:00-24:00"),
        ("00:00-24:00", "00:00-24:00"),
    ],
)
def test_opening_hours_special_values(given: str, expected: str) -> None:
    assert atm(opening_hours=given).opening_hours == dict.fromkeys(WEEKDAYS, expected)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("25:00-26:00", "expected HH:MM-HH:MM"),
        ("07:60-23:00", "expected HH:MM-HH:MM"),
        ("7-23", "expected HH:MM-HH:MM"),
        ("07:00-24:30", "after 24:00"),
        ("07:00-07:00", "empty interval"),
        ("mon=07:00-23:00;xyz=closed", "unknown weekday"),
        ('{"mon": ', "not valid JSON"),
    ],
)
def test_opening_hours_invalid_values_are_rejected(given: str, message: str) -> None:
    errors = atm_errors(opening_hours=given)
    assert list(errors) == ["opening_hours"]
    assert message in errors["opening_hours"]


@pytest.mark.parametrize(
    ("hours", "night_closure"),
    [
        ("07:00-23:00", True),
        ("00:00-00:00", True),
        ("22:00-06:00", False),  # open past midnight, so open at 03:00
        ("24h", False),
        ("mon=07:00-23:00;sat=00:00-24:00", False),  # one night open is enough
        ("02:30-03:00", True),  # 03:00 is the end, not inside
        ("03:00-04:00", False),
    ],
)
def test_night_closure_is_derived_from_opening_hours(hours: str, night_closure: bool) -> None:
    assert atm(opening_hours=hours).night_closure is night_closure


@pytest.mark.parametrize(
    ("hours", "given", "expected"),
    [
        ("07:00-23:00", False, False),
        ("24h", "true", True),
        (None, "no", False),
    ],
)
def test_explicit_night_closure_is_kept(hours: str | None, given: Any, expected: bool) -> None:
    assert atm(opening_hours=hours, night_closure=given).night_closure is expected


@pytest.mark.parametrize(
    "given",
    ["dye_ink|glue", "glue, dye_ink", "GLUE;dye_ink|glue", ["glue", "dye_ink"]],
)
def test_hardening_is_split_deduplicated_and_sorted(given: Any) -> None:
    assert atm(hardening=given).hardening == [HardeningMeasure.DYE_INK, HardeningMeasure.GLUE]


def test_hardening_empty_is_an_empty_list() -> None:
    assert atm(hardening=None).hardening == []
    assert atm(hardening=" | ").hardening == []


def test_hardening_unknown_measure_is_rejected() -> None:
    assert list(atm_errors(hardening="dye_ink|laser_grid")) == ["hardening.1"]


def test_removed_on_needs_status_removed() -> None:
    errors = atm_errors(removed_on="2022-01-01")
    assert list(errors) == [""]
    assert "status is not 'removed'" in errors[""]
    record = atm(removed_on="2022-01-01", status="Removed")
    assert record.status is AtmStatus.REMOVED
    assert record.removed_on == date(2022, 1, 1)


def test_removed_on_before_installed_on_is_rejected() -> None:
    errors = atm_errors(installed_on="2021-06-01", removed_on="2021-05-31", status="removed")
    assert list(errors) == [""]
    assert "removed_on is before installed_on" in errors[""]
    same_day = atm(installed_on="2021-06-01", removed_on="2021-06-01", status="removed")
    assert same_day.removed_on == same_day.installed_on


# --- IncidentRecord ----------------------------------------------------------------------

INCIDENT = {"incident_id": "P-1", "method": "explosive_gas", "lat": 52.09, "lon": 5.12}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def incident(context: dict[str, Any] | None = None, /, **changes: Any) -> IncidentRecord:
    return IncidentRecord.model_validate(_merge(INCIDENT, changes), context=context)


def incident_errors(context: dict[str, Any] | None = None, /, **changes: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        incident(context, **changes)
    return _errors(info.value)


def incident_error(context: dict[str, Any] | None = None, /, **changes: Any) -> str:
    """The message of a whole-record error (the only error raised)."""
    errors = incident_errors(context, **changes)
    assert list(errors) == [""], errors
    return errors[""]


def test_day_precision_spans_the_local_day_in_utc() -> None:
    record = incident(date_earliest="2021-07-10", country="NL")
    assert record.date_precision is DatePrecision.DAY
    assert record.date_latest == date(2021, 7, 10)
    assert record.occurred_from == utc(2021, 7, 9, 22, 0)
    assert record.occurred_to == utc(2021, 7, 10, 22, 0)


def test_day_precision_in_winter_uses_the_winter_offset() -> None:
    record = incident(date_earliest="2021-01-10", country="NL")
    assert record.occurred_from == utc(2021, 1, 9, 23, 0)
    assert record.occurred_to == utc(2021, 1, 10, 23, 0)


def test_day_across_the_dst_change_is_23_hours_long() -> None:
    record = incident(date_earliest="2021-03-28", country="NL")
    assert record.occurred_from == utc(2021, 3, 27, 23, 0)
    assert record.occurred_to == utc(2021, 3, 28, 22, 0)


def test_explicit_timezone_overrides_the_country_zone() -> None:
    record = incident(date_earliest="2021-07-10", country="NL", timezone="Europe/London")
    assert record.occurred_from == utc(2021, 7, 9, 23, 0)


def test_time_local_on_one_day_is_exact() -> None:
    record = incident(date_earliest="2021-07-10", time_local="03:15", country="NL")
    assert record.date_precision is DatePrecision.EXACT
    assert record.occurred_from == record.occurred_to == utc(2021, 7, 10, 1, 15)


def test_time_local_on_a_range_keeps_the_whole_range() -> None:
    record = incident(
        date_earliest="2021-07-10", date_latest="2021-07-11", time_local="03:00", country="NL"
    )
    assert record.date_precision is DatePrecision.RANGE
    assert record.occurred_from == utc(2021, 7, 9, 22, 0)
    assert record.occurred_to == utc(2021, 7, 11, 22, 0)


@pytest.mark.parametrize("time_local", ["24:00", "3:15", "03:60"])
def test_time_local_malformed_is_rejected(time_local: str) -> None:
    errors = incident_errors(date_earliest="2021-07-10", time_local=time_local, country="NL")
    assert list(errors) == ["time_local"]


@pytest.mark.parametrize(
    ("earliest", "latest", "precision"),
    [
        ("2021-02-01", "2021-02-28", DatePrecision.MONTH),
        ("2020-02-01", "2020-02-29", DatePrecision.MONTH),  # leap year
        ("2021-02-01", "2021-02-27", DatePrecision.RANGE),
        ("2021-04-01", "2021-04-30", DatePrecision.MONTH),
        ("2021-03-01", "2021-03-30", DatePrecision.RANGE),  # March has 31 days
        ("2021-03-01", "2021-04-30", DatePrecision.RANGE),
        ("2021-02-02", "2021-02-28", DatePrecision.RANGE),
        ("2021-01-01", "2021-02-28", DatePrecision.RANGE),
        ("2021-07-10", "2021-07-12", DatePrecision.RANGE),
    ],
)
def test_date_precision_is_inferred(earliest: str, latest: str, precision: DatePrecision) -> None:
    record = incident(date_earliest=earliest, date_latest=latest, country="NL")
    assert record.date_precision is precision


def test_month_interval_runs_from_first_to_after_last_local_midnight() -> None:
    record = incident(date_earliest="2021-02-01", date_latest="2021-02-28", country="NL")
    assert record.occurred_from == utc(2021, 1, 31, 23, 0)
    assert record.occurred_to == utc(2021, 2, 28, 23, 0)


def test_date_latest_before_date_earliest_is_rejected() -> None:
    message = incident_error(date_earliest="2021-07-10", date_latest="2021-07-09", country="NL")
    assert "date_latest 2021-07-09 is before date_earliest 2021-07-10" in message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"date_precision": "day", "date_latest": "2021-07-11"}, "'day' but"),
        ({"date_precision": "exact"}, "'exact' needs one day and a time_local"),
    ],
)
def test_explicit_date_precision_must_fit_the_dates(changes: dict[str, Any], message: str) -> None:
    assert message in incident_error(date_earliest="2021-07-10", country="NL", **changes)


def test_no_time_at_all_is_rejected() -> None:
    assert "no time" in incident_error(country="NL")


@pytest.mark.parametrize(
    "occurred_at",
    ["2021-07-10T03:15:00+02:00", "2021-07-10T01:15Z", "2021-07-10 03:15+02:00"],
)
def test_occurred_at_with_offset_is_kept(occurred_at: str) -> None:
    record = incident(occurred_at=occurred_at, country="DE")
    assert record.date_precision is DatePrecision.EXACT
    assert record.occurred_from == record.occurred_to == utc(2021, 7, 10, 1, 15)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2021-03-28T01:30", utc(2021, 3, 28, 0, 30)),  # before the change: CET, +01:00
        ("2021-03-28T03:30", utc(2021, 3, 28, 1, 30)),  # after the change: CEST, +02:00
    ],
)
def test_naive_occurred_at_is_local_to_the_country(local: str, expected: datetime) -> None:
    record = incident(occurred_at=local, country="DE")
    assert record.occurred_from == record.occurred_to == expected
    assert record.occurred_from is not None
    assert record.occurred_from.utcoffset() == timedelta(0)


def test_naive_occurred_at_with_explicit_timezone() -> None:
    record = incident(occurred_at="2021-07-10T03:15", timezone="America/New_York")
    assert record.occurred_from == utc(2021, 7, 10, 7, 15)


@pytest.mark.parametrize("changes", [{}, {"country": "US"}])
def test_naive_occurred_at_without_a_zone_is_rejected(changes: dict[str, Any]) -> None:
    message = incident_error(occurred_at="2021-07-10T03:15", **changes)
    assert "local time without a zone" in message


def test_occurred_at_date_only_is_day_precision() -> None:
    record = incident(occurred_at="2021-05-01", country="NL")
    assert record.date_precision is DatePrecision.DAY
    assert record.date_earliest == record.date_latest == date(2021, 5, 1)
    assert record.occurred_from == utc(2021, 4, 30, 22, 0)
    assert record.occurred_to == utc(2021, 5, 1, 22, 0)


def test_occurred_at_not_iso_is_rejected() -> None:
    assert "not ISO 8601" in incident_error(occurred_at="10/07/2021 03:15", country="NL")


@pytest.mark.parametrize("other", ["date_earliest", "date_latest"])
def test_occurred_at_with_date_fields_is_rejected(other: str) -> None:
    message = incident_error(occurred_at="2021-07-10T01:15Z", **{other: "2021-07-10"})
    assert "not both" in message


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "CEST+2", "../etc/passwd"])
def test_unknown_timezone_is_rejected(zone: str) -> None:
    errors = incident_errors(occurred_at="2021-07-10T03:15", timezone=zone)
    assert list(errors) == ["timezone"]
    assert "unknown IANA time zone" in errors["timezone"]


def test_future_time_is_rejected_relative_to_now(clock: FrozenClock) -> None:
    now = clock.now()
    context = {"now": now}
    message = incident_error(context, occurred_at="2026-11-28T12:01Z")
    assert "occurred in the future" in message
    assert incident(context, occurred_at="2026-11-28T12:00Z").occurred_from == now
    # Without a "now" in the context nothing is in the future.
    assert incident(occurred_at="2026-11-28T12:01Z").occurred_from == utc(2026, 11, 28, 12, 1)


def test_today_as_a_day_is_not_in_the_future(clock: FrozenClock) -> None:
    context = {"now": clock.now()}
    record = incident(context, date_earliest="2026-11-28", country="NL")
    assert record.occurred_to is not None
    assert record.occurred_to > clock.now()
    assert "occurred in the future" in incident_error(
        context, date_earliest="2026-11-29", country="NL"
    )


@pytest.mark.parametrize("drop", ["lat", "lon"])
def test_half_a_coordinate_pair_is_rejected(drop: str) -> None:
    message = incident_error(occurred_at="2021-07-10T01:15Z", **{drop: DROP})
    assert "give both lat and lon, or neither" in message


def test_no_place_at_all_is_rejected() -> None:
    message = incident_error(occurred_at="2021-07-10T01:15Z", lat=DROP, lon=DROP)
    assert "lat/lon: required" in message


def test_atm_id_stands_in_for_coordinates() -> None:
    record = incident(occurred_at="2021-07-10T01:15Z", lat=DROP, lon=DROP, atm_id="GM-001")
    assert (record.lat, record.lon) == (None, None)
    assert record.geocode_precision is None


def test_geocode_precision_none_allows_no_coordinates() -> None:
    record = incident(occurred_at="2021-07-10T01:15Z", lat=DROP, lon=DROP, geocode_precision="None")
    assert record.geocode_precision is GeocodePrecision.NONE


def test_geocode_precision_none_with_coordinates_is_rejected() -> None:
    message = incident_error(occurred_at="2021-07-10T01:15Z", geocode_precision="none")
    assert "geocode_precision 'none' but coordinates are given" in message


def test_geocode_precision_defaults_to_exact_with_coordinates() -> None:
    assert incident(occurred_at="2021-07-10T01:15Z").geocode_precision is GeocodePrecision.EXACT


def test_geocode_precision_given_is_kept() -> None:
    record = incident(occurred_at="2021-07-10T01:15Z", geocode_precision="Municipality")
    assert record.geocode_precision is GeocodePrecision.MUNICIPALITY


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Explosive Gas", AttackMethod.EXPLOSIVE_GAS),
        ("explosive-solid", AttackMethod.EXPLOSIVE_SOLID),
        (" RAM_RAID ", AttackMethod.RAM_RAID),
    ],
)
def test_method_is_normalised(given: str, expected: AttackMethod) -> None:
    assert incident(occurred_at="2021-07-10T01:15Z", method=given).method is expected


@pytest.mark.parametrize("changes", [{"method": "arson"}, {"method": DROP}])
def test_unknown_or_missing_method_is_rejected(changes: dict[str, Any]) -> None:
    assert list(incident_errors(occurred_at="2021-07-10T01:15Z", **changes)) == ["method"]


@pytest.mark.parametrize(("given", "expected"), [("nl", "NL"), (" de ", "DE")])
def test_incident_country_is_upper_cased(given: str, expected: str) -> None:
    assert incident(occurred_at="2021-07-10T01:15Z", country=given).country == expected


def test_incident_country_not_alpha2_is_rejected() -> None:
    errors = incident_errors(occurred_at="2021-07-10T01:15Z", country="NLD")
    assert list(errors) == ["country"]
