"""Spatial queries on SQLite (KD-tree / plain columns) and PostgreSQL (PostGIS GiST index).

Builds, per backend, a database with N SIMULATED machines (default 100,000, uniform over the
Netherlands, operator names start with "SIMULATED"), then times:

- ``machines_near`` (the gang_active query, radius = ``alerts.gang_radius_km``) at Q random
  points: the first call of a process (SQLite loads every machine and builds its KD-tree),
  warm calls, and five calls each right after one machine changed (SQLite rebuilds its
  in-process index then; PostgreSQL's index is kept by the database);
- the map's bbox filter (``postgis.in_box``, as ``/api/v1/map/machines.geojson?bbox=`` uses
  it) for Q random city-sized boxes (0.1 deg x 0.06 deg, about 7 x 7 km), and the same query
  without a box for comparison; on PostgreSQL also whether the planner picks the GiST index.

The two backends' answers are compared point by point (they must be identical). PostgreSQL
is a throw-away database created on --postgres (default: the local test server) and dropped
after. Loopback only. Prints one line per figure and, last, a JSON object.

    python benchmarks/spatial_queries.py [--machines 100000] [--queries 200]
                                         [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from benchmarks.loadgen import simulated_atms_csv  # noqa: E402
from sqlalchemy import create_engine, select, text, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from atm_risk.alerts import rules  # noqa: E402
from atm_risk.app import Context  # noqa: E402
from atm_risk.atms.models import Atm  # noqa: E402
from atm_risk.config import Settings  # noqa: E402
from atm_risk.ingest.run import ingest_atms  # noqa: E402
from atm_risk.migrate import upgrade  # noqa: E402
from atm_risk.postgis import in_box, is_postgis  # noqa: E402
from atm_risk.regions import CACHE  # noqa: E402
from atm_risk.tenancy.models import Operator  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def build(url: str, machines: int, work: Path) -> tuple[Context, float]:
    path = simulated_atms_csv(machines, work / "simulated_atms.csv")
    ctx = Context(settings=Settings(database_url=url, model_path=None))
    upgrade(ctx.engine)
    t = time.perf_counter()
    ingest_atms(ctx.sessions, path=path, clock=ctx.clock)
    with ctx.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return ctx, time.perf_counter() - t


def measure(ctx: Context, queries: int) -> tuple[dict[str, Any], list[list[int]]]:
    settings = ctx.settings
    radius = settings.alerts.gang_radius_km * 1000
    rng = np.random.default_rng(1)
    points = list(
        zip(rng.uniform(3.8, 6.9, queries), rng.uniform(51.0, 53.2, queries), strict=True)
    )
    answers: list[list[int]] = []
    out: dict[str, Any] = {}
    with ctx.sessions() as session:
        postgis = is_postgis(session)
        CACHE.clear()
        t = time.perf_counter()
        rules.machines_near(session, settings, *points[0], radius)
        out["near_first_call_ms"] = round((time.perf_counter() - t) * 1000, 1)
        times = []
        for lon, lat in points:
            t = time.perf_counter()
            found = rules.machines_near(session, settings, lon, lat, radius)
            times.append(time.perf_counter() - t)
            answers.append([m["atm_pk"] for m in found])
        out["near_warm"] = ms(times)
        out["near_mean_machines"] = round(float(np.mean([len(a) for a in answers])), 1)
        changed = []
        for k, (lon, lat) in enumerate(points[:5]):
            session.execute(
                update(Atm)
                .where(Atm.id == k + 1)
                .values(updated_at=datetime.now(UTC) + timedelta(minutes=k + 1))
            )
            session.commit()
            t = time.perf_counter()
            rules.machines_near(session, settings, lon, lat, radius)
            changed.append(time.perf_counter() - t)
        out["near_after_a_change"] = ms(changed)

        base = select(Atm.id, Atm.atm_id, Operator.code).join(
            Operator, Atm.operator_id == Operator.id
        )
        boxes = [
            (float(lon), float(lat), float(lon) + 0.1, float(lat) + 0.06) for lon, lat in points
        ]
        times, counts = [], []
        for box in boxes:
            t = time.perf_counter()
            rows = session.execute(base.where(*in_box(box, Atm, postgis=postgis))).all()
            times.append(time.perf_counter() - t)
            counts.append(len(rows))
        out["bbox"] = ms(times)
        out["bbox_mean_machines"] = round(float(np.mean(counts)), 1)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            session.execute(base).all()
            times.append(time.perf_counter() - t)
        out["no_bbox_all_machines"] = ms(times)
        if postgis:
            sql = base.where(*in_box(boxes[0], Atm, postgis=True)).compile(
                session.get_bind(), compile_kwargs={"literal_binds": True}
            )
            plan = "\n".join(session.scalars(text(f"EXPLAIN {sql}")))
            out["bbox_plan_uses_gist_index"] = "ix_atms_geom" in plan
    return out, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--postgres", default=DEFAULT_PG)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atm-risk-spatial-"))
    result: dict[str, Any] = {"machines": args.machines, "queries": args.queries}
    backends = {"sqlite": f"sqlite:///{work / 'spatial.sqlite3'}"}
    admin = None
    if not args.no_postgres:
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        name = f"atm_risk_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        backends["postgresql"] = (
            make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
        )
    answers = {}
    try:
        for backend, url in backends.items():
            ctx, setup_s = build(url, args.machines, work)
            try:
                figures, answers[backend] = measure(ctx, args.queries)
            finally:
                ctx.close()
            figures["ingest_s"] = round(setup_s, 1)
            result[backend] = figures
            print(f"{backend}: {args.machines} SIMULATED machines; {json.dumps(figures)}")
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    if len(answers) == 2:
        same = sum(a == b for a, b in zip(answers["sqlite"], answers["postgresql"], strict=True))
        result["near_identical_answers"] = f"{same}/{len(answers['sqlite'])}"
        print(f"machines_near: identical answers at {result['near_identical_answers']} points")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
