"""The README stays true: its settings table is `--about`'s, its code table covers every code.

Regenerate the settings table with: .venv/bin/python tests/test_readme.py --write
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from target_noojee.codes import CODES

README = Path(__file__).resolve().parents[1] / "README.md"
START = re.compile(r"<!-- settings:start[^>]*-->\n")
END = "<!-- settings:end -->"


def about_settings_table() -> str:
    """The settings table printed by `target-noojee --about --format markdown`."""
    about = subprocess.run(
        [sys.executable, "-m", "target_noojee", "--about", "--format", "markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    section = about.split("## Settings", 1)[1]
    return "\n".join(line for line in section.splitlines() if line.startswith("|")) + "\n"


def readme_settings_table(text: str) -> str:
    match = START.search(text)
    assert match, "settings markers missing from README.md"
    return text[match.end() : text.index(END)]


def test_settings_table_matches_about() -> None:
    assert readme_settings_table(README.read_text(encoding="utf-8")) == about_settings_table(), (
        "README settings drifted: run .venv/bin/python tests/test_readme.py --write"
    )


def test_every_response_code_has_a_documented_outcome() -> None:
    text = README.read_text(encoding="utf-8")
    for code, row in CODES.items():
        assert re.search(rf"^\| {code} \| {row.name} \| \S", text, re.MULTILINE), code


if __name__ == "__main__" and "--write" in sys.argv:
    text = README.read_text(encoding="utf-8")
    match = START.search(text)
    assert match
    new = text[: match.end()] + about_settings_table() + text[text.index(END) :]
    README.write_text(new, encoding="utf-8")
