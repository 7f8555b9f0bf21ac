"""The `splitgrad` command: the installed entry point in a subprocess, and `cli.main` in-process.

Each recipe runs end to end in --quick mode; user mistakes give one line on stderr, status 2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from splitgrad import cli, recipes
from splitgrad.checkpoint import load_model

PNG = b"\x89PNG\r\n\x1a\n"
# The foundation's recipes; later recipes are tested next to their own features.
FOUNDATION = ["perceptron", "regression", "digits-mlp"]


def _entry_point() -> str:
    found = shutil.which("splitgrad") or str(Path(sys.executable).parent / "splitgrad")
    assert Path(found).exists(), "the splitgrad command is not installed (pip install -e .)"
    return found


def run_cli(*args, cwd=None):
    return subprocess.run(
        [_entry_point(), *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False
    )


def assert_one_line_error(stderr, *words):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("splitgrad") and "error" in lines[0]
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0]


# ----- the installed command ----------------------------------------------------------------
def test_entry_point_list():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == list(recipes.RECIPES)


def test_entry_point_train_then_evaluate(tmp_path):
    out = tmp_path / "digits"
    result = run_cli("train", "digits-mlp", "--quick", "--quiet", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test: loss" in result.stdout and "accuracy" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.4f}" in result.stdout
    result = run_cli("evaluate", out)
    assert result.returncode == 0, result.stderr
    assert "recipe digits-mlp" in result.stdout
    assert f"accuracy {metrics['accuracy']:.4f}" in result.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "perceptrn"], ["unknown recipe", "perceptron"]),
        (["train", "perceptron", "--bogus"], ["--bogus"]),
        (["train", "perceptron", "--epochs", "0"], ["--epochs", "positive"]),
        (["evaluate", "no/such/folder"], ["no such model folder"]),
        (["fly"], ["invalid choice"]),
    ],
)
def test_entry_point_mistakes_are_one_line(tmp_path, args, words):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result.stderr, *words)


# ----- in-process ---------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", FOUNDATION)
def test_train_quick_saves_model_curves_and_metrics(tmp_path, capsys, recipe):
    out = tmp_path / recipe
    assert cli.main(["train", recipe, "--quick", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert "loss" in metrics
    assert ("r2" if recipe == "regression" else "accuracy") in metrics
    for key, value in metrics.items():
        assert f"{key} {value:.4f}" in printed
    assert (out / "curves.png").read_bytes().startswith(PNG)
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == recipes.get(recipe).QUICK["epochs"]
    model = load_model(out)
    assert model.saved_extra["recipe"] == recipe and model.saved_extra["quick"]

    assert cli.main(["evaluate", str(out)]) == 0
    again = capsys.readouterr().out
    assert f"recipe {recipe}" in again
    assert f"loss {metrics['loss']:.4f}" in again


def test_train_flags_override_the_recipe_settings(tmp_path, capsys):
    out = tmp_path / "p"
    assert (
        cli.main(
            [
                "train",
                "perceptron",
                "--quick",
                "--quiet",
                "--epochs",
                "3",
                "--batch-size",
                "64",
                "--learning-rate",
                "0.05",
                "--seed",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    extra = load_model(out).saved_extra
    assert extra["settings"] == {"epochs": 3, "batch_size": 64, "learning_rate": 0.05}
    assert extra["seed"] == 4
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 3


def test_ways_lists_the_catalogue(capsys):
    assert cli.main(["ways"]) == 0
    out = capsys.readouterr().out
    assert "data-parallel" in out and "federated" in out


def test_compare_digits_quick_runs(tmp_path, capsys):
    assert cli.main(["compare", "digits-mlp", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "data-parallel" in out
    assert (tmp_path / "compare.md").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "nope"], ["unknown recipe 'nope'"]),
        (["train", "perceptron", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["train", "perceptron", "--learning-rate", "-1"], ["--learning-rate"]),
        (["train"], ["recipe"]),
        ([], ["command"]),
        (["evaluate", "MISSING"], ["no such model folder"]),
        (["evaluate", "NOT_A_MODEL"], ["config.json", "missing"]),
        (["evaluate", "PLAIN"], ["not saved by `splitgrad train`"]),
        (["train", "perceptron", "--quick", "--quiet", "--out", "A_FILE"], ["is a file"]),
        (["train", "perceptron", "--learning-rate", "inf"], ["--learning-rate", "finite"]),
        (["train", "perceptron", "--learning-rate", "nan"], ["--learning-rate", "finite"]),
        (["train", "perceptron", "--epochs", "-1"], ["--epochs", "positive integer"]),
        (["train", "perceptron", "--batch-size", "2.5"], ["--batch-size"]),
        (
            ["train", "perceptron", "--quick", "--quiet", "--out", "USER_FOLDER"],
            ["notes.txt", "--overwrite"],
        ),
        (["train", "perceptron", "--quick", "--quiet", "--out", "."], ["current working folder"]),
        (
            [
                "train",
                "perceptron",
                "--quick",
                "--quiet",
                "--way",
                "data-parallel",
                "--ray-address",
                "127.0.0.1:1",
            ],
            ["cannot reach the Ray cluster"],
        ),
        (["compare", "nope", "--quick"], ["unknown recipe"]),
    ],
)
def test_mistakes_in_process_are_one_line_with_status_2(tmp_path, capsys, monkeypatch, args, words):
    import numpy as np

    from splitgrad import nn

    monkeypatch.chdir(tmp_path)
    (tmp_path / "NOT_A_MODEL").mkdir()
    (tmp_path / "A_FILE").write_text("precious")
    (tmp_path / "USER_FOLDER").mkdir()
    (tmp_path / "USER_FOLDER" / "notes.txt").write_text("precious")
    plain = nn.Sequential([nn.Dense(1)])
    plain(np.zeros((1, 3), dtype=np.float32))
    plain.save(tmp_path / "PLAIN")
    args = [str(tmp_path / a) if a.isupper() else a for a in args]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, *words)
    assert (tmp_path / "A_FILE").read_text() == "precious"
    assert (tmp_path / "USER_FOLDER" / "notes.txt").read_text() == "precious"


def test_out_fails_before_training_and_overwrite_replaces(tmp_path, capsys, monkeypatch):
    """A refused --out costs no training; --overwrite replaces the folder with the model."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    trained = []
    real = recipes.train
    monkeypatch.setattr(recipes, "train", lambda *a, **k: trained.append(1) or real(*a, **k))
    assert cli.main(["train", "perceptron", "--quick", "--quiet", "--out", str(folder)]) == 2
    assert not trained and (folder / "notes.txt").read_text() == "precious"
    assert (
        cli.main(["train", "perceptron", "--quick", "--quiet", "--out", str(folder), "--overwrite"])
        == 0
    )
    assert not (folder / "notes.txt").exists() and load_model(folder) is not None
    # Training again into the run folder it made needs no --overwrite.
    assert cli.main(["train", "perceptron", "--quick", "--quiet", "--out", str(folder)]) == 0
    assert {"history.json", "metrics.json", "curves.png"} <= {p.name for p in folder.iterdir()}


def test_help_exits_cleanly(capsys):
    assert cli.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_a_split_run_prints_what_crossed_once(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "digits-mlp", "--quick", "--way", "data-parallel", "--places", "2", "--out"]
    for quiet in ([], ["--quiet"]):
        assert cli.main([*args, out, *quiet]) == 0
        printed = capsys.readouterr().out
        assert printed.count("B crossed") == 1, printed


def test_a_split_run_keeps_its_traffic_in_metrics_json(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "digits-mlp", "--quick", "--quiet", "--way", "dp-sgd", "--out", str(out)]
    assert cli.main(args) == 0
    saved = json.loads((out / "metrics.json").read_text())
    split = saved["split"]
    assert split["way"] == "dp-sgd" and split["total_bytes"] == split["textbook_bytes"] > 0
    assert split["epsilon"] > 0 and split["delta"] == 1e-5 and split["steps"] > 0
    assert "accuracy" in saved and "ε" in capsys.readouterr().out
