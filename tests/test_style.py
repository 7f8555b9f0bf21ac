"""The code passes ruff's lint rules, lines included (at most 100 columns, see pyproject.toml),
and is formatted as `ruff format` would write it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ["splitgrad", "tests", "benchmarks"]


def _ruff(*args):
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *TREES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_ruff_lint_is_clean_and_checks_line_length():
    out = _ruff("check", "--output-format", "concise")
    assert out.returncode == 0, out.stdout + out.stderr
    # The line-length rule is really on: a 101-column line is reported.
    probe = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--stdin-filename", "probe.py", "-"],
        input="x = " + "1" * 97 + "\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "E501" in probe.stdout


def test_code_is_formatted():
    out = _ruff("format", "--check")
    assert out.returncode == 0, out.stdout + out.stderr
