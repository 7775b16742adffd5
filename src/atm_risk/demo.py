"""`atm-risk demo`: the main job end to end on the shipped real data and a fresh SQLite file."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import IO

from rich.console import Console

from atm_risk.alerts.service import build_digests, drain, report_incident
from atm_risk.app import Context
from atm_risk.areas.service import ingest_area
from atm_risk.catalog import SHIPPED
from atm_risk.db import transaction
from atm_risk.decisions import report
from atm_risk.decisions.plans import hardening_plan, patrol_plan
from atm_risk.decisions.sensitivity import sensitivity_table
from atm_risk.features.store import compute_features
from atm_risk.files import atomic_path
from atm_risk.ingest.report import IngestReport
from atm_risk.ingest.run import ingest_atms, ingest_incidents
from atm_risk.migrate import upgrade
from atm_risk.output import print_table, write_csv
from atm_risk.risk.models import RiskRun
from atm_risk.risk.service import RankedAtm, latest_run, ranking, run_scoring
from atm_risk.tenancy.keys import create_key

DEMO_BUDGET_EUR = 500_000.0
DEMO_UNITS = 5
DEMO_MINUTES = 10


def _fresh_sqlite(path: Path) -> str:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def run_demo(ctx: Context, *, out_dir: Path, console: Console, top: int = 10) -> Path:
    """Ingest everything the demo ships, score, print the top ``top``, write ranking.csv.

    ``ctx.settings.database_url`` must point at a database the demo may wipe; the CLI gives
    it ``var/demo.sqlite3`` unless told otherwise.
    """
    t0 = time.perf_counter()
    upgrade(ctx.engine)
    data_dir = ctx.settings.data_dir
    for item in (s for s in SHIPPED if s.in_demo):
        path = item.resolve(data_dir)
        report: IngestReport
        if item.kind == "atms":
            assert item.profile is not None
            report = ingest_atms(ctx.sessions, path=path, profile=item.profile, clock=ctx.clock)
        elif item.kind == "incidents":
            assert item.profile is not None
            report = ingest_incidents(
                ctx.sessions, path=path, profile=item.profile, clock=ctx.clock
            )
        else:
            assert item.layer is not None
            report = ingest_area(
                ctx.sessions,
                name=item.layer,
                path=path,
                clock=ctx.clock,
                join=item.resolve_join(data_dir),
                join_on=item.join_on,
            )
        label = item.layer or f"{item.kind} ({item.profile})"
        console.print(f"ingest {label:<28} {report.summary_line()}  [dim]{item.path}[/dim]")
        for rejection in report.rejections[:5]:
            console.print(f"    {rejection}")

    run = run_scoring(ctx.sessions, settings=ctx.settings, clock=ctx.clock)
    why = run.params.get("why_not_the_model")
    console.print(
        f"scored {run.n_scored} active machines (run {run.id}, {run.scorer}"
        + (f"; {why}" if why else "")
        + ")",
        markup=False,
    )
    with ctx.sessions() as session:
        published = latest_run(session)
        assert published is not None
        assert published.id == run.id
        items = ranking(session, published)
    print_table(items[:top], published, console)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ctx.sessions() as session:
        features = compute_features(session, ctx.settings, as_of=published.as_of)
    features_path = out_dir / "features.csv"
    with atomic_path(features_path) as tmp:
        features.to_csv(tmp)
    console.print(
        f"wrote {features_path} ({len(features)} machines x {features.shape[1]} features "
        f"as of {published.as_of:%Y-%m-%d %H:%M} UTC)"
    )
    target = out_dir / "ranking.csv"
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        write_csv(items, published, fh)
    console.print(f"wrote {target} ({len(items)} machines)")
    write_plans(ctx, published, out_dir, console)
    demo_alert(ctx, items, out_dir, console)
    demo_keys(ctx, console)
    console.print(
        f"demo done in {time.perf_counter() - t0:.1f} s. The probabilities come from "
        f"{published.params.get('probability_method')}: see README, 'Which scorer runs'."
    )
    return target


def demo_keys(ctx: Context, console: Console) -> None:
    """Demo API keys (new random ones each run, stored hashed in the demo database only) and
    how to open the map with them."""
    with transaction(ctx.sessions) as session:
        bank, _ = create_key(
            session, role="bank", tenant="geldmaat", label="demo", now=ctx.clock.now()
        )
        police, _ = create_key(
            session, role="police", regions=["Utrecht"], label="demo", now=ctx.clock.now()
        )
        ops, _ = create_key(session, role="operator", label="demo", now=ctx.clock.now())
    url = ctx.settings.database_url
    console.print(
        "To browse it: ATM_RISK_DATABASE_URL=" + url + " .venv/bin/atm-risk serve\n"
        f"  then open http://127.0.0.1:8000/map#key={bank}  (Geldmaat security)\n"
        f"        or http://127.0.0.1:8000/map#key={police}  (police, Utrecht)\n"
        f"        or http://127.0.0.1:8000/map#key={ops}  (operators)\n"
        "  (demo keys for this demo database only; the API docs are at /docs)",
        markup=False,
        soft_wrap=True,
    )


def demo_alert(ctx: Context, items: list[RankedAtm], out_dir: Path, console: Console) -> None:
    """The immediate alert path on a SIMULATED attack at the top-ranked Dutch machine, and
    the daily digest: the e-mails they would send go to out_dir/outbox/*.eml (the routing of
    config/routing.example.toml; no mail leaves the machine)."""
    target = next((i for i in items if i.operator == "Geldmaat"), None)
    if target is None:
        return
    outbox_dir = out_dir / "outbox"
    if outbox_dir.exists():
        for old in outbox_dir.glob("*.eml"):
            old.unlink()
    routing = ctx.settings.data_dir.resolve().parent / "config" / "routing.example.toml"
    settings = ctx.settings.model_copy(
        update={
            "alerts": ctx.settings.alerts.model_copy(
                update={"routing_file": routing, "eml_dir": outbox_dir, "smtp": None}
            )
        }
    )
    result = report_incident(
        ctx.sessions,
        settings,
        ctx.clock,
        {
            "incident_id": "DEMO-SIMULATED-1",
            "occurred_at": (ctx.clock.now() - timedelta(minutes=20)).isoformat(),
            "lat": target.lat + 0.002,
            "lon": target.lon + 0.002,
            "geocode_precision": "exact",
            "method": "explosive_solid",
            "locality": target.city,
            "notes": "SIMULATED by `atm-risk demo` to show the alert path; not a real attack",
            "simulated": True,
        },
    )
    digests = build_digests(ctx.sessions, settings, ctx.clock, period="daily")
    drain(ctx.sessions, settings, ctx.clock, ids=digests)
    console.print(
        f"SIMULATED attack near {target.atm_id} ({target.city}): gang_active alert "
        f"{result.alert_id}, {len(result.deliveries)} e-mails; daily digest: {len(digests)} "
        f"e-mails (map + CSV); all written to {outbox_dir}",
        markup=False,
    )


def write_plans(ctx: Context, run: RiskRun, out_dir: Path, console: Console) -> None:
    """The hardening plan, tonight's patrol plan and the sensitivity table, into out_dir."""
    with ctx.sessions() as session:
        hardening = hardening_plan(session, ctx.settings, run, budget_eur=DEMO_BUDGET_EUR)
        patrol = patrol_plan(
            session, ctx.settings, units=DEMO_UNITS, minutes=DEMO_MINUTES, night=None
        )
        sensitivity = sensitivity_table(session, ctx.settings, run, budget_eur=DEMO_BUDGET_EUR)
    outputs: list[tuple[str, Callable[[IO[str]], None]]] = [
        ("hardening_plan.csv", lambda fh: report.write_hardening_csv(hardening, fh)),
        ("hardening_plan.json", lambda fh: report.dump_json(report.hardening_json(hardening), fh)),
        ("patrol_plan.json", lambda fh: report.dump_json(report.patrol_json(patrol), fh)),
        ("patrol_plan.geojson", lambda fh: report.dump_json(report.patrol_geojson(patrol), fh)),
        (
            "sensitivity.csv",
            lambda fh: sensitivity.to_csv(fh, index=False, lineterminator="\n"),
        ),
    ]
    for name, write in outputs:
        with atomic_path(out_dir / name) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
            write(fh)
    h, p = hardening.summary(), patrol.summary()
    console.print(
        f"hardening plan (EUR {DEMO_BUDGET_EUR:,.0f}): {h['machines_hardened']} machines, "
        f"averts EUR {h['loss_averted_year_eur']:,.0f} a year "
        f"({h['share_of_expected_loss_averted']:.1%} of the expected loss)",
        markup=False,
    )
    console.print(
        f"patrol plan ({DEMO_UNITS} units, {DEMO_MINUTES} min): covers "
        f"{p['share_of_risk_covered']:.1%} of tonight's expected loss "
        f"({', '.join(u.label for u in patrol.units)})",
        markup=False,
    )
    console.print(f"wrote {', '.join(n for n, _ in outputs)} to {out_dir}", markup=False)
