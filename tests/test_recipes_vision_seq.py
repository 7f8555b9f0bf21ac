"""End-to-end tests of the vision and sequence recipes and of `splitgrad generate` / `show`.

Everything goes through the CLI's main() (what `splitgrad ...` runs). Quick runs only, except
digits-cnn's full run (≥ 97 %, ~15 s of CPU) and the `slow` full-size accuracy runs.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from splitgrad import cli
from splitgrad.checkpoint import load_model
from splitgrad.datasets import CharVocab, load_irish_songs
from splitgrad.generate import step_logits, write_songs

SMALL_TEXT = " ".join(
    "the cat sat on the mat . the dog ran to the park and the cat ran after it ." for _ in range(40)
)


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of `splitgrad argv...`."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def metrics_of(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def irish_run(runs):
    out = runs / "irish"
    assert cli.main(["train", "irish-lstm", "--quick", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def word_run(runs):
    text = runs / "small.txt"
    text.write_text(SMALL_TEXT)
    out = runs / "words"
    assert (
        cli.main(
            ["train", "next-word", "--quick", "--quiet", "--text", str(text), "--out", str(out)]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def digits_run(runs):
    out = runs / "digits-cnn"
    assert cli.main(["train", "digits-cnn", "--quiet", "--out", str(out)]) == 0
    return out


# ----- vision ----------------------------------------------------------------------------
def test_digits_cnn_full_reaches_97_percent(digits_run):
    assert metrics_of(digits_run)["accuracy"] >= 0.97


def test_show_cnn_writes_filters_feature_maps_and_confusion(digits_run, tmp_path, capsys):
    status, out, _ = run_cli(capsys, "show", digits_run, "--out", tmp_path)
    assert status == 0
    for name in ("filters.png", "feature_maps.png", "confusion.png"):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
        assert str(png) in out


@pytest.mark.parametrize("recipe", ["fashion-mlp", "fashion-cnn"])
def test_fashion_quick_runs_and_shows(recipe, tmp_path, capsys):
    run = tmp_path / "run"
    status, _, err = run_cli(capsys, "train", recipe, "--quick", "--quiet", "--out", run)
    assert status == 0, err
    assert 0.2 < metrics_of(run)["accuracy"] <= 1.0  # 1 epoch on 2,000 images: well above 0.1
    # The recipe's fit options took effect: its learning rate was cosine-decayed.
    schedule = load_model(run).optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay", schedule
    status, _, err = run_cli(capsys, "show", run)
    assert status == 0, err
    expected = "dense_weights.png" if recipe == "fashion-mlp" else "feature_maps.png"
    assert (run / expected).exists() and (run / "confusion.png").exists()


def test_missing_fashion_files_give_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("splitgrad.datasets.idx.FASHION_MNIST_DIR", tmp_path / "nowhere")
    status, _, err = run_cli(capsys, "train", "fashion-cnn", "--quick", "--out", tmp_path / "r")
    assert status == 2
    assert err.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in err


def test_text_flag_is_refused_by_image_recipes(tmp_path, capsys):
    status, _, err = run_cli(capsys, "train", "digits-cnn", "--text", tmp_path / "a.txt")
    assert status == 2 and "does not take --text" in err


# ----- sequences -------------------------------------------------------------------------
def test_irish_quick_history_and_vocab(irish_run):
    history = json.loads((irish_run / "history.json").read_text())
    assert len(history["loss"]) == 3 and len(history["val_loss"]) == 3
    assert history["loss"][-1] < history["loss"][0]  # 30 steps already learn the letter counts
    vocab = CharVocab.from_json(load_model(irish_run).saved_extra["vocab"])
    assert len(vocab) == 83


def test_generate_songs_writes_valid_text_of_the_right_length(irish_run, tmp_path, capsys):
    status, _, err = run_cli(
        capsys,
        "generate",
        "irish-lstm",
        "--run",
        irish_run,
        "--length",
        250,
        "--temperature",
        0.7,
        "--seed",
        3,
        "--out",
        tmp_path,
    )
    assert status == 0, err
    text = (tmp_path / "generated.txt").read_text(encoding="utf-8")
    assert text.startswith("X") and len(text) == 1 + 250
    vocab = CharVocab.from_json(load_model(irish_run).saved_extra["vocab"])
    vocab.encode(text)  # every character comes from the training vocabulary
    songs = sorted(tmp_path.glob("song_*.abc"))
    written = "".join(p.read_text(encoding="utf-8") for p in songs)
    assert songs and "".join(written.split()) == "".join(text.split())  # nothing lost
    # Same seed, same songs; another seed, other songs.
    run_cli(
        capsys,
        "generate",
        "irish-lstm",
        "--run",
        irish_run,
        "--length",
        250,
        "--temperature",
        0.7,
        "--seed",
        3,
        "--out",
        tmp_path / "again",
        "--no-audio",
    )
    assert (tmp_path / "again" / "generated.txt").read_text(encoding="utf-8") == text


@pytest.mark.skipif(
    not (shutil.which("abc2midi") and shutil.which("timidity")),
    reason="needs Debian's abcmidi and timidity",
)
def test_write_songs_makes_midi_and_wav_and_reports_bad_tunes(tmp_path):
    real = load_irish_songs()[0]
    result = write_songs([real, "no header, not a tune"], tmp_path)
    assert (tmp_path / "song_001.mid").stat().st_size > 100
    assert (tmp_path / "song_001.wav").read_bytes()[:4] == b"RIFF"
    assert not (tmp_path / "song_002.mid").exists()
    assert len(result["problems"]) == 1 and "song_002.abc: abc2midi" in result["problems"][0]


def test_carried_state_generation_equals_full_forward(irish_run):
    model = load_model(irish_run)
    model.eval()
    ids = np.random.default_rng(0).integers(0, 83, size=(2, 40))
    full = model.predict(ids)
    state, steps = None, []
    for t in range(ids.shape[1]):
        logits, state = step_logits(model, ids[:, t : t + 1], state)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-5)
    # A chunk of several steps with carried state matches too (truncated-BPTT style feeding).
    head, state = step_logits(model, ids[:, :25])
    tail, _ = step_logits(model, ids[:, 25:], state)
    np.testing.assert_allclose(np.concatenate([head, tail], axis=1), full, rtol=1e-4, atol=1e-5)


def test_generate_errors_are_one_clear_line(irish_run, word_run, capsys):
    status, _, err = run_cli(
        capsys, "generate", "irish-lstm", "--run", irish_run, "--start", "X€¥", "--length", 5
    )
    assert status == 2 and "'€'" in err and "'¥'" in err and err.count("\n") == 1
    status, _, err = run_cli(capsys, "generate", "irish-lstm", "--run", word_run)
    assert status == 2 and "'next-word'" in err and err.count("\n") == 1
    status, _, err = run_cli(
        capsys, "generate", "next-word", "--run", irish_run, "--prompt", "hello"
    )
    assert status == 2 and "'irish-lstm'" in err
    status, _, err = run_cli(capsys, "show", irish_run)
    assert status == 2 and "no Conv2D" in err


def test_next_word_prompt_lists_probabilities(word_run, capsys):
    status, out, err = run_cli(
        capsys,
        "generate",
        "next-word",
        "--run",
        word_run,
        "--prompt",
        "This morning I took my cat for a",
        "--top",
        4,
    )
    assert status == 0, err
    assert "read as <unk>: 'this', 'morning'" in out  # unknown words are named, not fatal
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert len(rows) == 4
    probs = [float(r[1]) for r in rows]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0


def test_next_word_quick_on_fortunes(tmp_path, capsys):
    status, _, err = run_cli(
        capsys, "train", "next-word", "--quick", "--quiet", "--out", tmp_path / "run"
    )
    assert status == 0, err
    assert np.isfinite(metrics_of(tmp_path / "run")["loss"])


# ----- full size (slow; run with `pytest -m slow`) -------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("recipe, target", [("fashion-mlp", 0.87), ("fashion-cnn", 0.90)])
def test_fashion_full_accuracy(recipe, target, tmp_path):
    assert cli.main(["train", recipe, "--quiet", "--out", str(tmp_path)]) == 0
    assert metrics_of(tmp_path)["accuracy"] >= target


@pytest.mark.slow
def test_irish_lstm_full_loss_below_one_nat(tmp_path):
    assert cli.main(["train", "irish-lstm", "--quiet", "--out", str(tmp_path)]) == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["loss"][-1] < 1.0
