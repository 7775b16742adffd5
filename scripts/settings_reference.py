"""Rewrite the settings table of docs/OPERATIONS.md from the code (``reference_markdown``).

    python scripts/settings_reference.py

tests/unit/test_operations_doc.py fails when the table and the code differ.
"""

from __future__ import annotations

from pathlib import Path

from atm_risk.config import reference_markdown

DOC = Path(__file__).resolve().parents[1] / "docs/OPERATIONS.md"
START, END = "<!-- settings-reference:start", "<!-- settings-reference:end -->"


def main() -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("-->\n", text.index(START)) + len("-->\n")
    end = text.index(END)
    DOC.write_text(text[:start] + reference_markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    main()
