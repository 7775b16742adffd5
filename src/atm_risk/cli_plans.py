"""``atm-risk plan``: the hardening budget plan, tonight's patrol plan, and how both move
when the cost assumptions move."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated

import typer

from atm_risk.cli_common import context_of, emit, fail, out, sessions_of
from atm_risk.decisions import report
from atm_risk.decisions.plans import PlanError, hardening_plan, patrol_plan
from atm_risk.decisions.sensitivity import print_sensitivity, sensitivity_table
from atm_risk.risk.service import latest_run

plan_app = typer.Typer(no_args_is_help=True, help="Hardening and patrol plans.")


class PlanFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class PatrolFormat(StrEnum):
    table = "table"
    csv = "csv"
    geojson = "geojson"
    json = "json"


Output = Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")]


@plan_app.command("hardening")
def hardening(
    ctx: typer.Context,
    budget: Annotated[float, typer.Option(min=0, help="One-off budget in EUR.")],
    operator: Annotated[str | None, typer.Option(help="Only this operator's machines.")] = None,
    fmt: Annotated[PlanFormat, typer.Option("--format")] = PlanFormat.table,
    output: Output = None,
) -> None:
    """Machines and measures that avert the most expected loss within the budget."""
    c = context_of(ctx)
    with sessions_of(c)() as session:
        run = latest_run(session)
        if run is None:
            fail("no published scoring run yet: run `atm-risk score` first", 1)
        try:
            plan = hardening_plan(session, c.settings, run, budget_eur=budget, operator=operator)
        except PlanError as exc:
            fail(str(exc))
    if fmt is PlanFormat.table:
        report.print_hardening(plan, out)
        return

    def write(fh: IO[str]) -> None:
        if fmt is PlanFormat.csv:
            report.write_hardening_csv(plan, fh)
        else:
            report.dump_json(report.hardening_json(plan), fh)

    emit(write, output)


@plan_app.command("patrol")
def patrol(
    ctx: typer.Context,
    units: Annotated[int, typer.Option(min=1, max=500, help="Units (K) to post.")],
    minutes: Annotated[float, typer.Option(min=1, max=240, help="Reach in minutes (T).")],
    region: Annotated[
        str | None, typer.Option(help="Province, German state, municipality or district name.")
    ] = None,
    night: Annotated[
        str | None, typer.Option(help="The night (YYYY-MM-DD, starting 22:00 local).")
    ] = None,
    fmt: Annotated[PatrolFormat, typer.Option("--format")] = PatrolFormat.table,
    output: Output = None,
) -> None:
    """K waiting positions covering the most of tonight's expected loss within T minutes."""
    c = context_of(ctx)
    try:
        night_date = date.fromisoformat(night) if night else None
    except ValueError:
        fail(f"--night {night!r}: expected a date YYYY-MM-DD")
    with sessions_of(c)() as session:
        try:
            plan = patrol_plan(
                session, c.settings, units=units, minutes=minutes, region=region, night=night_date
            )
        except PlanError as exc:
            fail(str(exc))
    if fmt is PatrolFormat.table:
        report.print_patrol(plan, out)
        return

    def write(fh: IO[str]) -> None:
        if fmt is PatrolFormat.csv:
            report.write_patrol_csv(plan, fh)
        elif fmt is PatrolFormat.geojson:
            report.dump_json(report.patrol_geojson(plan), fh)
        else:
            report.dump_json(report.patrol_json(plan), fh)

    emit(write, output)


@plan_app.command("sensitivity")
def sensitivity(
    ctx: typer.Context,
    budget: Annotated[float, typer.Option(min=0, help="Budget of the hardening plan, EUR.")] = (
        500_000.0
    ),
    operator: Annotated[str | None, typer.Option(help="Only this operator's machines.")] = None,
    fmt: Annotated[PlanFormat, typer.Option("--format")] = PlanFormat.table,
    output: Output = None,
) -> None:
    """How the ranking, the actions and the hardening plan move when each cost assumption
    moves by -50 % and +50 %."""
    c = context_of(ctx)
    with sessions_of(c)() as session:
        run = latest_run(session)
        if run is None:
            fail("no published scoring run yet: run `atm-risk score` first", 1)
        try:
            table = sensitivity_table(
                session, c.settings, run, budget_eur=budget, operator=operator
            )
        except PlanError as exc:
            fail(str(exc))
    if fmt is PlanFormat.table:
        print_sensitivity(table, out)
        return

    def write(fh: IO[str]) -> None:
        if fmt is PlanFormat.csv:
            table.to_csv(fh, index=False, lineterminator="\n")
        else:
            report.dump_json({"sensitivity": table.to_dict("records")}, fh)

    emit(write, output)
