"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_opens_with_two_setup_commands():
    main_job, tests = _readme_commands()
    assert "splitgrad train" in main_job
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command and .ci/run have drifted apart"


def test_the_readme_tour_runs(tmp_path, monkeypatch):
    """Every Python block of the README runs as written (in a scratch folder)."""
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text()
    namespace = {}
    for block in re.findall(r"```python\n(.+?)\n```", text, flags=re.DOTALL):
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "runs" / "my-model" / "config.json").exists()
