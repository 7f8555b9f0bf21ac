"""`splitgrad compare-optimizers` and `splitgrad lr-sweep` (splitgrad/optimizer_study/): quick
runs end to end through the command, the sweep's suggestion and its clean stop at divergence,
and the divergence rule on made-up losses."""

from __future__ import annotations

import itertools
import json
import math
import types

import pytest

from splitgrad import cli, nn, optimizer_study
from splitgrad.optimizer_study._runs import StepLosses, fresh_model

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def study_cli():
    """The command line, with its `optimizer_study` commands (registered in cli._extensions)."""
    assert optimizer_study.add_cli in cli._extensions()


def test_compare_optimizers_quick_run_through_the_command(tmp_path, study_cli, capsys):
    out = tmp_path / "opt"
    args = ["compare-optimizers", "digits-mlp", "--quick", "--quiet", "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    for label in ("SGD", "SGD + momentum 0.9", "Adagrad", "Adadelta", "RMSprop", "Adam"):
        assert f"| {label} |" in printed
    assert "test accuracy" in printed
    assert (out / "optimizers.png").read_bytes().startswith(PNG)
    rows = json.loads((out / "optimizers.json").read_text())
    assert [r["learning_rate"] for r in rows] == [0.01, 0.01, 0.01, 1.0, 1e-3, 1e-3]
    # The same initial weights and batches: only the update rule differs, and it matters.
    assert all(len(r["history"]["loss"]) == 2 for r in rows)  # digits-mlp quick: 2 epochs
    assert len({round(r["final_loss"], 6) for r in rows}) == len(rows)
    assert all(0.0 <= r["test"]["accuracy"] <= 1.0 and r["seconds"] > 0 for r in rows)


def test_compare_optimizers_subset_and_mistakes(tmp_path, study_cli, capsys):
    args = ["compare-optimizers", "perceptron", "--quick", "--quiet", "--optimizers", "adam,sgd"]
    assert cli.main([*args, "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.count("| SGD |") == 1
    assert cli.main(["compare-optimizers", "perceptron", "--optimizers", "adamm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown ['adamm']" in err[0]
    assert cli.main(["lr-sweep", "perceptron", "--start", "1", "--end", "0.1"]) == 2
    assert "need 0 < --start < --end" in capsys.readouterr().err


def test_lr_sweep_suggests_a_rate_inside_the_range_below_divergence(tmp_path, study_cli, capsys):
    out = tmp_path / "sweep"
    args = ["lr-sweep", "digits-cnn", "--quick", "--steps", "40", "--quiet", "--out", str(out)]
    assert cli.main(args) == 0
    assert "suggested learning rate" in capsys.readouterr().out
    assert (out / "lr_sweep.png").read_bytes().startswith(PNG)
    result = json.loads((out / "lr_sweep.json").read_text())
    start, end = result["planned"]
    assert (start, end) == (1e-7, 10.0)
    assert result["diverged_at"] is not None  # Adam at rates near 10 cannot hold on
    assert start <= result["suggestion"] <= end
    assert result["suggestion"] < result["minimum_at"] < result["diverged_at"]
    assert len(result["rates"]) < 40  # stopped at divergence, not at the end of the range
    rates = result["rates"]
    assert all(b > a for a, b in itertools.pairwise(rates))  # grew every step
    runs = result["runs"]
    assert runs["good"]["rate"] == result["suggestion"]
    assert runs["too small"]["rate"] < runs["good"]["rate"] < runs["too large"]["rate"]
    # A good rate learns in the same number of steps in which a tiny one barely moves.
    assert runs["good"]["losses"][-1] < runs["too small"]["losses"][-1]


def test_lr_sweep_stops_cleanly_when_the_loss_turns_nan(tmp_path):
    # Plain SGD on the regression recipe up to lr 1e8: the weights overflow to inf, then NaN.
    result = optimizer_study.lr_range_test(
        "regression",
        quick=True,
        optimizer="sgd",
        start_lr=1e-3,
        end_lr=1e8,
        steps=30,
        divergence=None,  # only a non-finite loss stops it
        out=tmp_path,
        verbose=0,
    )
    losses = result["losses"]
    assert not math.isfinite(losses[-1]) and all(math.isfinite(v) for v in losses[:-1])
    assert len(losses) < 30 and result["diverged_at"] == result["rates"][-1]
    assert 1e-3 <= result["suggestion"] < result["diverged_at"]
    assert (tmp_path / "lr_sweep.png").read_bytes().startswith(PNG)


class _FakeModel:
    def __init__(self):
        self.optimizer = types.SimpleNamespace(learning_rate=0.1)
        self.stop_training = False


def _feed(record, losses):
    record.set_model(_FakeModel())
    record.on_train_begin()
    for loss in losses:
        record.on_train_batch_begin(0)
        record.on_train_batch_end(0, {"loss": loss})
        if record.model.stop_training:
            break
    return record


def test_divergence_rule_on_made_up_losses():
    # 4× the best smoothed loss (no smoothing, beta 0): stops at the 5th loss, not before.
    record = _feed(StepLosses(divergence=4.0, beta=0.0), [4.0, 0.5, 0.4, 1.5, 1.7, 0.1])
    assert record.losses == [4.0, 0.5, 0.4, 1.5, 1.7] and record.diverged_at == 0.1
    # Back above the start after falling 10 % below it: a classifier back at chance level.
    record = _feed(StepLosses(divergence=4.0, beta=0.0), [2.3, 2.25, 2.0, 2.2, 2.31, 2.0])
    assert len(record.losses) == 5
    # Noise around the start without progress first is not divergence.
    record = _feed(StepLosses(divergence=4.0, beta=0.0), [2.3, 2.32, 2.28, 2.35, 2.3])
    assert record.diverged_at is None and len(record.losses) == 5
    # NaN stops it even without a divergence factor; the smoothed curve marks it infinite.
    record = _feed(StepLosses(), [1.0, float("nan"), 1.0])
    assert len(record.losses) == 2 and record.smoothed[-1] == math.inf


def test_a_recipe_with_its_own_train_step_is_refused_with_a_reason():
    class TwoOptimizers(nn.Model):
        def call(self, x):
            return x

        def train_step(self, x, y):
            return {"loss": 0.0}

    recipe = types.SimpleNamespace(build_model=lambda lr, data: TwoOptimizers())
    with pytest.raises(ValueError, match="step of its own"):
        fresh_model("gan-like", recipe, {"learning_rate": 1e-3}, None, 0)
    plain = types.SimpleNamespace(build_model=lambda lr, data: nn.Sequential([nn.Dense(1)]))
    assert isinstance(fresh_model("plain", plain, {"learning_rate": 1e-3}, None, 0), nn.Model)
