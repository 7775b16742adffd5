"""docs/OPERATIONS.md lists every setting with its default, exactly as the code has them."""

from __future__ import annotations

from pathlib import Path

from atm_risk.config import Settings, reference, reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def test_the_reference_table_in_the_operations_guide_is_the_code_s() -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("-->\n", text.index("<!-- settings-reference:start")) + len("-->\n")
    end = text.index("<!-- settings-reference:end -->")
    assert text[start:end] == reference_markdown(), (
        "regenerate: python scripts/settings_reference.py"
    )


def test_every_setting_and_nested_setting_is_in_the_reference() -> None:
    keys = {row[0] for row in reference()}
    assert set(Settings.model_fields) - {"alerts", "decisions"} <= keys
    assert {"alerts.smtp.host", "alerts.ack_secret", "decisions.measures"} <= keys
    assert all(row[3] for row in reference()), "every setting needs a description"
