"""Request bodies over the limit answer 413 whether their size is declared or streamed,
and the API goes on answering (found by the reliability suite, #10: a 50 MB body was read
whole into memory before a 422)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from atm_risk.api.app import MAX_BODY_BYTES, create_app
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from tests import two_banks
from tests.api_server import serve

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def _stream(total: int) -> Iterator[bytes]:
    yield b'{"operator": "banka", "atm_id": "A-UTR-1", "method": "ram_raid", "notes": "'
    for _ in range(total // 65536 + 1):
        yield b"x" * 65536
    yield b'"}'


def test_oversized_bodies_answer_413_and_small_ones_still_work(
    sessions: sessionmaker[Session], database_url: str, write
) -> None:
    clock = FrozenClock(NOW)
    two_banks.load(sessions, clock, write, motorway=False)
    keys = two_banks.keys(sessions, NOW, "bank_a")
    settings = Settings(database_url=database_url, model_path=None)
    h = {"Authorization": f"Bearer {keys['bank_a']}", "Content-Type": "application/json"}
    with serve(create_app(settings, clock=clock)) as client:
        big = b"".join(_stream(2 * MAX_BODY_BYTES))
        declared = client.post("/api/v1/incidents", content=big, headers=h)
        assert declared.status_code == 413
        assert "larger than" in declared.json()["detail"]
        streamed = client.post(  # chunked: refused once the limit is passed
            "/api/v1/incidents", content=_stream(2 * MAX_BODY_BYTES), headers=h
        )
        assert streamed.status_code == 413
        small = client.post("/api/v1/incidents", json={"lat": 95, "lon": 5}, headers=h)
        assert small.status_code == 422  # read and validated as before
        ok = client.post(
            "/api/v1/incidents",
            json={"operator": "banka", "atm_id": "A-UTR-1", "method": "ram_raid"},
            headers=h,
        )
        assert ok.status_code == 201, ok.text
