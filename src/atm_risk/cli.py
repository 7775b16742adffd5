"""The ``atm-risk`` command."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from atm_risk import migrate
from atm_risk.app import Context
from atm_risk.areas.service import ingest_area, list_layers
from atm_risk.cli_alerts import alerts_app, incident_app, silences_app
from atm_risk.cli_api import keys_app, serve
from atm_risk.cli_common import (
    EXIT_NO_SPACE,
    EXIT_REJECTED,
    context_of,
    emit,
    err,
    fail,
    no_space_message,
    out,
    sessions_of,
)
from atm_risk.cli_jobs import jobs_app, scheduler
from atm_risk.cli_plans import plan_app
from atm_risk.config import load_settings
from atm_risk.files import atomic_path
from atm_risk.ingest.errors import IngestError
from atm_risk.ingest.report import IngestReport
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from atm_risk.output import print_table, write_csv, write_json
from atm_risk.risk.service import latest_run, ranking

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Schema migrations.")
ingest_app = typer.Typer(no_args_is_help=True, help="Load ATMs, incidents and area layers.")
areas_app = typer.Typer(no_args_is_help=True, help="Area layers.")
app.add_typer(db_app, name="db")
app.add_typer(ingest_app, name="ingest")
app.add_typer(areas_app, name="areas")
app.add_typer(plan_app, name="plan")
app.add_typer(incident_app, name="incident")
app.add_typer(alerts_app, name="alerts")
app.add_typer(silences_app, name="silences")
app.add_typer(keys_app, name="keys")
app.command("serve")(serve)
app.add_typer(jobs_app, name="jobs")
app.command("scheduler")(scheduler)


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="TOML settings file (else ATM_RISK_CONFIG).")
    ] = None,
) -> None:
    """atm-risk: which cash machines are most likely to be attacked next."""
    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    ctx.obj = Context(settings=settings)
    ctx.call_on_close(ctx.obj.close)


# --- db -------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: str = "head") -> None:
    """Create or upgrade the schema (Alembic) to REVISION (default: head)."""
    c = context_of(ctx)
    migrate.upgrade(c.engine, revision)
    out.print(f"database at revision {migrate.current_revision(c.engine)}")


@db_app.command("downgrade")
def db_downgrade(ctx: typer.Context, revision: str) -> None:
    """Downgrade the schema to REVISION ('base' drops every table)."""
    c = context_of(ctx)
    migrate.downgrade(c.engine, revision)
    out.print(f"database at revision {migrate.current_revision(c.engine)}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the schema revision of the database and of the code."""
    c = context_of(ctx)
    out.print(f"database: {migrate.current_revision(c.engine)}  code: {migrate.head_revision()}")


# --- ingest ---------------------------------------------------------------------------


def _print_report(report: IngestReport) -> None:
    lines = report.lines()
    out.print(lines[0], markup=False, highlight=False)
    for line in lines[1:]:
        (err if line.startswith(("line ", "feature ")) else out).print(
            line, markup=False, highlight=False
        )
    if report.rejections:
        raise typer.Exit(EXIT_REJECTED)


StrictOpt = Annotated[bool, typer.Option("--strict", help="Write nothing if any row is bad.")]


@ingest_app.command("atms")
def ingest_atms_cmd(
    ctx: typer.Context,
    path: Path,
    profile: Annotated[str, typer.Option(help="canonical, geldmaat or lisbon")] = "canonical",
    strict: StrictOpt = False,
) -> None:
    """Load cash machines from CSV, GeoJSON or GeoPackage (upsert by operator and atm_id)."""
    c = context_of(ctx)
    try:
        report = ingest_atms(
            sessions_of(c), path=path, profile=profile, strict=strict, clock=c.clock
        )
    except IngestError as exc:
        fail(str(exc))
    _print_report(report)


@ingest_app.command("incidents")
def ingest_incidents_cmd(
    ctx: typer.Context,
    path: Path,
    profile: Annotated[str, typer.Option(help="canonical, news or lisbon")] = "canonical",
    feed: Annotated[
        str | None, typer.Option(help="Source the ids belong to (default: profile or file name).")
    ] = None,
    strict: StrictOpt = False,
) -> None:
    """Load incidents (upsert by feed and incident_id)."""
    c = context_of(ctx)
    try:
        report = ingest_incidents(
            sessions_of(c), path=path, profile=profile, feed=feed, strict=strict, clock=c.clock
        )
    except IngestError as exc:
        fail(str(exc))
    _print_report(report)


@ingest_app.command("area")
def ingest_area_cmd(
    ctx: typer.Context,
    name: str,
    path: Path,
    strict: StrictOpt = False,
    join: Annotated[
        Path | None, typer.Option(help="CSV of attributes to add to the features.")
    ] = None,
    on: Annotated[
        str | None, typer.Option(help="Join key: LAYER_PROPERTY=CSV_COLUMN (e.g. AGS=ags).")
    ] = None,
) -> None:
    """Load an area layer NAME from PATH, replacing the previous version atomically."""
    c = context_of(ctx)
    try:
        report = ingest_area(
            sessions_of(c),
            name=name,
            path=path,
            clock=c.clock,
            strict=strict,
            join=join,
            join_on=on,
        )
    except IngestError as exc:
        fail(str(exc))
    _print_report(report)


@areas_app.command("list")
def areas_list(ctx: typer.Context) -> None:
    """List the stored area layers."""
    c = context_of(ctx)
    with sessions_of(c)() as session:
        for layer in list_layers(session):
            out.print(
                f"{layer.name:<24} {layer.geometry_type:<16} {layer.n_features:>7} features "
                f"({layer.n_repaired} repaired)  from {layer.source}",
                markup=False,
            )


# --- scoring --------------------------------------------------------------------------


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--as-of {value!r}: expected an ISO 8601 date or date-time")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command()
def score(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option(help="Score as of this time (ISO 8601, UTC if no offset).")
    ] = None,
) -> None:
    """Score every active machine and publish the run when complete; risk_change alerts
    (machines entering the top band or changing action) commit with it and are sent."""
    from atm_risk.alerts.service import score_and_alert

    c = context_of(ctx)
    run, sent = score_and_alert(
        sessions_of(c), c.settings, c.clock, as_of=_parse_time(as_of), send=True
    )
    out.print(
        f"run {run.id}: scored {run.n_scored} machines as of {run.as_of.isoformat()} "
        f"with {run.scorer}"
        + (f" ({run.params['why_not_the_model']})" if run.params.get("why_not_the_model") else "")
        + (f"; alerts: {sent}" if sent and sent.claimed else ""),
        markup=False,
    )


@app.command()
def train(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Option(help="Model file (its .card.json is written beside it).")
    ] = Path("models/atm_risk_28d.joblib"),
    horizon_days: Annotated[float, typer.Option(min=1)] = 28.0,
    country: Annotated[
        list[str] | None, typer.Option(help="Train on machines of this country (repeatable).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last day of training data (default: last incident).")
    ] = None,
    test_windows: Annotated[int, typer.Option(min=1, help="Windows in the rolling backtest.")] = 36,
) -> None:
    """Fit the machine model on rolling windows, backtest it, save it with its model card."""
    from atm_risk.risk.training import train_from_store

    c = context_of(ctx)
    with sessions_of(c)() as session:
        try:
            card = train_from_store(
                session,
                c.settings,
                now=c.clock.now(),
                horizon_days=horizon_days,
                countries=set(country) if country else None,
                until=_parse_time(until),
                n_test=test_windows,
                output=output,
            )
        except ValueError as exc:
            fail(str(exc), 1)
    bt = card["backtest"]
    out.print(
        f"{card['target']}, {card['horizon_days']:g} days; "
        f"trained on {card['training_period']['windows']} windows from "
        f"{card['training_period']['first_origin']} to {card['training_period']['last_window_end']}"
    )
    out.print(
        f"rolling backtest: {bt['test_windows']} windows, "
        f"{bt['expected_events_in_test']:.1f} expected attacks"
    )
    for name, m in bt["methods"].items():
        share = m["share_of_expected_attacks_in_top"]
        out.print(
            f"  {name:<13} top 1/5/10/20 %: "
            + " ".join(f"{share[k]:.3f}" for k in ("1", "5", "10", "20"))
            + f"  Brier {m['brier']:.3g}  BSS vs base rate {m['brier_skill_vs_base_rate']:+.3f}"
            f"  vs prior counts {m['brier_skill_vs_prior_counts']:+.3f}",
            markup=False,
        )
    verdict = card["promotion"]
    out.print(
        (
            "PROMOTED: `atm-risk score` will use it"
            if verdict["promoted"]
            else "NOT PROMOTED (does not beat prior counts): `atm-risk score` keeps the baseline"
        )
        + f" [{verdict['rule']}]",
        markup=False,
    )
    out.print(f"wrote {output} and {output.with_suffix('.card.json')}")


class FeatureFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


@app.command()
def features(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option(help="Features as of this time (ISO 8601; default now).")
    ] = None,
    fmt: Annotated[FeatureFormat, typer.Option("--format")] = FeatureFormat.csv,
    output: Annotated[
        Path | None, typer.Option(help="File to write (default: stdout for CSV).")
    ] = None,
) -> None:
    """Write the feature table (one row per active machine) as of a time."""
    from atm_risk.features.store import compute_features

    c = context_of(ctx)
    when = _parse_time(as_of) or c.clock.now()
    with sessions_of(c)() as session:
        table = compute_features(session, c.settings, as_of=when)
    if table.attrs.get("missing_layers"):
        err.print(
            "layers not loaded (their features are missing): "
            + ", ".join(table.attrs["missing_layers"]),
            markup=False,
        )
    if fmt is FeatureFormat.parquet and output is None:
        fail("--format parquet needs --output FILE")
    if output is None:
        table.to_csv(sys.stdout)
        return
    with atomic_path(output) as tmp:
        if fmt is FeatureFormat.parquet:
            table.to_parquet(tmp)
        else:
            table.to_csv(tmp)
    out.print(
        f"wrote {len(table)} machines x {table.shape[1]} columns "
        f"as of {when.isoformat()} to {output}"
    )


@app.command()
def backtest(
    events: Annotated[Path, typer.Option("--events", help="CSV of timed points.")],
    time_col: Annotated[str | None, typer.Option(help="Timestamp column.")] = None,
    lon_col: Annotated[str | None, typer.Option(help="Longitude column.")] = None,
    lat_col: Annotated[str | None, typer.Option(help="Latitude column.")] = None,
    origins: Annotated[int, typer.Option(min=1, help="Weekly origins (protocol: 26).")] = 26,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
    machines: Annotated[
        Path | None,
        typer.Option(help="Machine mode: CSV of machines (id, lon, lat, numeric factors)."),
    ] = None,
    atm_col: Annotated[str | None, typer.Option(help="Machine id column (machine mode).")] = None,
    horizon_days: Annotated[
        float, typer.Option(help="Machine mode: horizon and origin spacing in days.")
    ] = 28.0,
) -> None:
    """Run the fixed hotspot protocol (DOMAIN.md) for the model and every baseline.

    With --machines, rank machines instead of cells: events must name a machine.
    """
    import json

    if machines is not None:
        from atm_risk.risk.events import EventsInputError
        from atm_risk.risk.machine_backtest import load_machine_data, run_machine_backtest
        from atm_risk.risk.report import print_machine_backtest

        try:
            data = load_machine_data(machines, events, atm_col=atm_col, time_col=time_col)
        except EventsInputError as exc:
            fail(str(exc))
        doc = run_machine_backtest(data, n_origins=origins, horizon_days=horizon_days)
        print_machine_backtest(doc, out)
        if as_json:
            sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
        return

    from atm_risk.risk.backtest import run_backtest
    from atm_risk.risk.events import EventsInputError, load_events
    from atm_risk.risk.report import print_backtest

    try:
        loaded = load_events(events, time_col=time_col, lon_col=lon_col, lat_col=lat_col)
    except EventsInputError as exc:
        fail(str(exc))
    result = run_backtest(loaded, n_origins=origins, progress=lambda m: err.print(m, markup=False))
    doc = result.as_json()
    print_backtest(doc, out)
    if as_json:
        sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        fail(f"{what}: expected comma-separated numbers, got {text!r}")
    if len(values) < 2 or values != sorted(values):
        fail(f"{what}: give at least two increasing band edges")
    return values


@app.command()
def knox(
    events: Annotated[Path, typer.Option("--events", help="CSV of timed points.")],
    time_col: Annotated[str | None, typer.Option(help="Timestamp column.")] = None,
    lon_col: Annotated[str | None, typer.Option(help="Longitude column.")] = None,
    lat_col: Annotated[str | None, typer.Option(help="Latitude column.")] = None,
    distances: Annotated[
        str, typer.Option(help="Distance band edges, metres.")
    ] = "0,200,400,800,1600",
    lags: Annotated[str, typer.Option(help="Time lag band edges, days.")] = "0,7,14,28,56",
    permutations: Annotated[int, typer.Option(min=19)] = 199,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
) -> None:
    """Knox test for near-repeat patterns; suggests near-repeat bandwidths."""
    import json

    from atm_risk.risk.events import EventsInputError, load_events
    from atm_risk.risk.history import History
    from atm_risk.risk.knox import knox_test, suggest_bandwidths

    try:
        loaded = load_events(events, time_col=time_col, lon_col=lon_col, lat_col=lat_col)
    except EventsInputError as exc:
        fail(str(exc))
    h = History.from_events(loaded)
    cells = knox_test(
        h.t,
        h.x,
        h.y,
        distance_bands=_floats(distances, "--distances"),
        lag_bands=_floats(lags, "--lags"),
        n_permutations=permutations,
    )
    for c in cells:
        out.print(
            f"{c.distance_m[0]:>8g}-{c.distance_m[1]:<8g} m  "
            f"{c.lag_days[0]:>5g}-{c.lag_days[1]:<5g} d"
            f"  observed {c.observed:>7}  expected {c.expected:>10.1f}  ratio {c.ratio:5.2f}"
            f"  p {c.p_value:.3f}",
            markup=False,
        )
    suggestion = suggest_bandwidths(cells)
    out.print(
        "suggested near-repeat bandwidths: "
        + (f"{suggestion[0]:g} m, {suggestion[1]:g} days" if suggestion else "none significant")
    )
    if as_json:
        doc = {
            "dataset": loaded.name,
            "cells": [c.as_dict() for c in cells],
            "suggested": suggestion,
        }
        sys.stdout.write(json.dumps(doc) + "\n")


@app.command()
def simulate(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option(help="CSV to write (canonical incident columns).")],
    start: Annotated[str, typer.Option(help="First day (ISO date).")] = "2023-01-01",
    years: Annotated[float, typer.Option(min=0.01, max=50)] = 3.0,
    per_machine_rate: Annotated[
        float, typer.Option(help="Attacks per machine a year (DOMAIN.md: DE about 0.009).")
    ] = 0.009,
    seed: int = 0,
) -> None:
    """Write a SIMULATED attack history over the stored machines (demos, scale tests).

    Every row is labelled simulated; never use it as evidence of model skill.
    """
    from datetime import date

    from atm_risk.features.store import compute_features
    from atm_risk.risk.simulate import SimulationParams, simulate_attacks

    try:
        first = date.fromisoformat(start)
    except ValueError:
        fail(f"--start {start!r}: expected an ISO date")
    c = context_of(ctx)
    as_of = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    with sessions_of(c)() as session:
        machines = compute_features(session, c.settings, as_of=as_of)
    if machines.empty:
        fail("no active machines stored: ingest machines first", 1)
    params = SimulationParams(
        start=first,
        years=years,
        per_machine_rate=per_machine_rate,
        seed=seed,
        metric_crs=c.settings.metric_crs,
    )
    frame = simulate_attacks(machines, params)
    with atomic_path(output) as tmp:
        frame.to_csv(tmp, index=False)
    sprees = frame["spree"].replace("", None).dropna().nunique()
    out.print(
        f"wrote {len(frame)} SIMULATED attacks ({sprees} sprees) over {len(machines)} machines, "
        f"{years:g} years from {first} to {output}"
    )


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def rank(
    ctx: typer.Context,
    top: Annotated[int | None, typer.Option(min=1, help="Only the first N machines.")] = 20,
    all_: Annotated[bool, typer.Option("--all", help="Every machine.")] = False,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Show the latest published ranking with the reasons for each score."""
    c = context_of(ctx)
    with sessions_of(c)() as session:
        run = latest_run(session)
        if run is None:
            fail("no published scoring run yet: run `atm-risk score` first", 1)
        items = ranking(session, run, top=None if all_ else top)
    if fmt is Format.table:
        print_table(items, run, out)
        return
    writer = write_csv if fmt is Format.csv else write_json
    emit(lambda fh: writer(items, run, fh), output, what=f"{len(items)} machines")


@app.command()
def demo(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("out/demo"),
    database: Annotated[Path, typer.Option(help="SQLite file the demo creates afresh.")] = Path(
        "var/demo.sqlite3"
    ),
) -> None:
    """Run the main job end to end on the shipped data in a fresh SQLite database."""
    from atm_risk.demo import _fresh_sqlite, run_demo

    c = context_of(ctx)
    demo_ctx = Context(
        settings=c.settings.model_copy(update={"database_url": _fresh_sqlite(database)}),
        clock=c.clock,
    )
    try:
        run_demo(demo_ctx, out_dir=out_dir, console=out)
    finally:
        demo_ctx.close()


def main() -> None:
    try:
        app()
    except Exception as exc:
        message = no_space_message(exc)
        if message is None:
            raise
        err.print(f"error: {message}", markup=False, highlight=False)
        raise SystemExit(EXIT_NO_SPACE) from None
