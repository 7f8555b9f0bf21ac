"""The README's set-up commands are the ones CI runs."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
from test_split_ways import flat, make_data, make_model

import splitgrad as sg

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


def _run_readme_blocks(namespace):
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```python\n(.+?)\n```", text, flags=re.DOTALL):
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README


@pytest.fixture(scope="module")
def readme(tmp_path_factory):
    """The namespace of the README's Python blocks, run once, as written, in a scratch folder
    (kept in `namespace["_folder"]`); the example way they register is unregistered after."""
    from splitgrad.split import WAYS

    folder = tmp_path_factory.mktemp("readme")
    here = os.getcwd()
    os.chdir(folder)
    namespace = {"_folder": folder}
    before = dict(WAYS)
    try:
        _run_readme_blocks(namespace)
        yield namespace
    finally:
        os.chdir(here)
        WAYS.clear()
        WAYS.update(before)


def test_the_readme_tour_runs(readme):
    """Every Python block of the README runs as written."""
    folder = readme["_folder"]
    assert (folder / "runs" / "my-model").is_dir()
    assert sg.load_model(folder / "runs" / "my-model").count_params() > 0


def test_the_readme_example_way_trains_like_one_place_and_is_in_the_catalogue(readme, capsys):
    from splitgrad.split import make_way, print_ways

    way_class = readme["DriverSum"]
    x, y = make_data()

    def trained(way):
        model = make_model()
        history = model.fit(x, y, batch_size=16, epochs=2, seed=3, verbose=0, way=way)
        return model, history

    ref, _ = trained(None)
    model, history = trained(way_class(workers=3))
    np.testing.assert_allclose(flat(model), flat(ref), rtol=1e-10, atol=1e-10)
    t = history.traffic
    assert t["total_bytes"] == t["textbook_bytes"] == 2 * 75 * 8 * 3 * 6
    assert set(t["busy_s"]) == {"worker0", "worker1", "worker2"}
    assert isinstance(make_way("driver-sum", 4), way_class)
    print_ways()
    assert "driver-sum" in capsys.readouterr().out
