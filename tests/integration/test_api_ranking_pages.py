"""Ranking pages: from the database, a bank's and an operator's unfiltered pages are rank
ranges (keyset), a police or filtered page an OFFSET; kept in the app, a page is a slice of
the scope's ranking; every way gives exactly the slice of the run's ranking that the caller
may see, on SQLite and PostgreSQL. Stored runs get their operator ranks when the
database is upgraded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.api.app import create_app
from atm_risk.api.cache import RunCache
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.db import make_engine, session_factory
from atm_risk.ingest.run import ingest_atms
from atm_risk.migrate import downgrade, upgrade
from atm_risk.regions import region_of
from atm_risk.risk.models import RiskScore
from atm_risk.risk.service import latest_run, ranking, run_scoring
from tests import two_banks
from tests.api_server import serve

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def machines(n: int = 41) -> str:
    """``n`` machines of three operators of unequal size around Utrecht and Amersfoort."""
    rng = np.random.default_rng(3)
    rows = ["atm_id,operator,lat,lon,site_type,country"]
    for k in range(n):
        operator = ("BankA", "BankB", "BankC")[0 if k % 5 < 3 else 1 + k % 2]
        lat, lon = rng.uniform(51.95, 52.25), rng.uniform(5.0, 5.5)
        rows.append(f"M-{k:03d},{operator},{lat:.5f},{lon:.5f},shop,NL")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("kept", [False, True], ids=["database", "kept"])
def test_pages_are_the_callers_slice_of_the_ranking(
    sessions: sessionmaker[Session], database_url: str, write, kept: bool
) -> None:
    clock = FrozenClock(NOW)
    settings = Settings(database_url=database_url, model_path=None)
    two_banks.load(sessions, clock, write, motorway=False, atms=machines())
    run_scoring(sessions, settings=settings, clock=clock)
    clock.advance(timedelta(hours=1))
    run_scoring(sessions, settings=settings, clock=clock)  # pages come from the latest run
    keys = two_banks.keys(sessions, NOW, "bank_a", "bank_b", "police", "operator")
    with sessions() as s:
        run = latest_run(s)
        assert run is not None
        ranked = ranking(s, run)
        in_utrecht = [r for r in ranked if region_of(s, settings, r.lon, r.lat) == "Utrecht"]
    expected = {
        "bank_a": [r for r in ranked if r.operator_code == "banka"],
        "bank_b": [r for r in ranked if r.operator_code == "bankb"],
        "police": in_utrecht,
        "operator": ranked,
    }
    assert 0 < len(expected["bank_b"]) < len(expected["bank_a"]) < len(ranked)
    assert 0 < len(in_utrecht) < len(ranked)
    app = create_app(settings, clock=clock)
    cache: RunCache = app.state.run_cache
    if not kept:
        app.state.run_cache = cache = RunCache(max_items=0)  # every page from the database
    with serve(app) as client:
        if kept:  # the first page of each scope fills its ranking; the next are slices of it
            for name in expected:
                client.get("/api/v1/ranking", headers={"Authorization": f"Bearer {keys[name]}"})
            cache.join(timeout=30)
        assert cache.scopes_kept == (len(expected) if kept else 0)
        for name, rows in expected.items():
            headers = {"Authorization": f"Bearer {keys[name]}"}
            for limit in (1, 4, 7):
                for offset in range(len(rows) + 2):
                    page = client.get(
                        "/api/v1/ranking",
                        params={"limit": limit, "offset": offset},
                        headers=headers,
                    ).json()
                    assert page["run_id"] == run.id
                    assert page["total"] == len(rows)
                    got = [(i["rank"], i["atm_id"]) for i in page["items"]]
                    want = [(r.rank, r.atm_id) for r in rows[offset : offset + limit]]
                    assert got == want, (name, limit, offset)
            # a filter pages by OFFSET over the filtered ranking
            band = rows[len(rows) // 2].risk_band
            filtered = [r for r in rows if r.risk_band == band]
            page = client.get(
                "/api/v1/ranking", params={"band": band, "limit": 3, "offset": 1}, headers=headers
            ).json()
            assert [i["atm_id"] for i in page["items"]] == [r.atm_id for r in filtered[1:4]]


def test_upgrade_fills_the_operator_ranks_of_stored_runs(empty_database_url: str, write) -> None:
    clock = FrozenClock(NOW)
    engine = make_engine(empty_database_url)
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        settings = Settings(database_url=empty_database_url, model_path=None)
        ingest_atms(sessions, path=write("m.csv", machines()), clock=clock)
        for _ in range(2):
            run_scoring(sessions, settings=settings, clock=clock)
            clock.advance(timedelta(hours=1))

        def operator_ranks() -> list[tuple[int, int, int]]:
            with sessions() as s:
                query = select(RiskScore.run_id, RiskScore.atm_pk, RiskScore.operator_rank)
                return sorted((r[0], r[1], r[2]) for r in s.execute(query))

        written = operator_ranks()
        assert len(written) == 2 * 41
        assert max(r[2] for r in written) == 25
        downgrade(engine, "0006")
        upgrade(engine)
        assert operator_ranks() == written
    finally:
        engine.dispose()
