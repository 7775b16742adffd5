"""atomic_path: readers see the old file or the new one, never half of one."""

from __future__ import annotations

from pathlib import Path

import pytest

from atm_risk.files import atomic_path


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "ranking.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("v1")
        assert not target.exists()
    assert target.read_text() == "v1"

    def crash_mid_write() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half of v2")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        crash_mid_write()
    assert target.read_text() == "v1"
    assert not (tmp_path / "out" / "ranking.csv.tmp").exists()
