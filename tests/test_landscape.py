"""Loss landscapes (splitgrad/landscape/): filter-normalised directions against Li et al.'s rule
written for PyTorch, the grid against a one-example-at-a-time NumPy reference, the centre
against `model.evaluate`, Inline against Ray places, and `splitgrad landscape` end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import splitgrad as sg
from splitgrad import cli, landscape, nn
from splitgrad.landscape.trajectory import TRAJECTORY_FILE, TrajectoryRecorder, load_trajectory
from splitgrad.model import clone_model
from splitgrad.split import Inline, replicas

PNG = b"\x89PNG\r\n\x1a\n"


def _classifier(layers, x, y, dtype=None, epochs=1):
    sg.seed(0)
    model = nn.Sequential(layers, dtype=dtype)
    model.compile(
        optimizer=sg.optim.Adam(learning_rate=1e-2),
        loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, seed=0)
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 6, 6, 2)).astype(np.float32), rng.integers(0, 3, 40)


@pytest.fixture(scope="module")
def cnn(images):
    layers = [
        nn.Conv2D(4, 3, activation="relu"),
        nn.BatchNormalization(),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Dense(3),
    ]
    return _classifier(layers, *images)


# ----- directions ----------------------------------------------------------------------------
def _li_normalize_torch(d, w):
    """Li et al.'s normalize_directions_for_weights, in PyTorch's layout (filters on dim 0)."""
    if w.dim() <= 1:
        return torch.zeros_like(w)
    for di, wi in zip(d, w):
        di.mul_(wi.norm() / (di.norm() + 1e-10))
    return d


def test_directions_are_filter_normalised_as_li_et_al_in_pytorch(cnn):
    (first, second) = landscape.random_directions(cnn, count=2, seed=3)
    assert not np.allclose(first, second)  # two independent draws
    rng = np.random.default_rng(3)  # the same draws, to hand to the PyTorch rule
    for p, d in zip(cnn.parameters(), replicas.split_flat(cnn, first)):
        w = p.data.astype(np.float64)
        if w.ndim <= 1:  # biases, BatchNorm's gamma and beta: no movement at all
            assert np.array_equal(d, np.zeros_like(w))
            continue
        # Every slice along the output axis (the last) has its weight slice's norm.
        axes = tuple(range(w.ndim - 1))
        norm_d, norm_w = np.sqrt((d**2).sum(axis=axes)), np.sqrt((w**2).sum(axis=axes))
        assert np.allclose(norm_d, norm_w, rtol=1e-9)
        # And it is Li et al.'s rule on the same random numbers, moved to PyTorch's layout.
        raw = rng.standard_normal(w.shape)
        to_torch = (3, 2, 0, 1) if w.ndim == 4 else (1, 0)  # (kh,kw,in,out) / (in,out)
        ref = _li_normalize_torch(
            torch.from_numpy(raw.transpose(to_torch).copy()),
            torch.from_numpy(w.transpose(to_torch).copy()),
        )
        back = np.argsort(to_torch)
        assert np.allclose(d, ref.numpy().transpose(back), rtol=1e-12, atol=0)
    again = landscape.random_directions(cnn, count=2, seed=3)
    assert np.array_equal(again[0], first)  # seeded: the same directions every time


def test_filter_normalize_refuses_a_direction_of_another_shape():
    with pytest.raises(ValueError, match="shape"):
        landscape.filter_normalize(np.ones((2, 3)), np.ones((3, 2)))


# ----- the grid -------------------------------------------------------------------------------
def test_centre_of_the_1d_curve_is_the_evaluated_loss_in_inference_mode(cnn, images):
    x, y = images
    before = cnn.get_weights()
    curve = landscape.curve_1d(cnn, x, y, resolution=5, batch_size=7, verbose=0)
    loss, accuracy = cnn.evaluate(x, y, batch_size=7)
    assert curve["alpha"][2] == 0.0
    assert curve["values"][2, 0] == pytest.approx(loss, rel=1e-12)
    assert curve["values"][2, 1] == pytest.approx(accuracy, rel=1e-12)
    assert curve["names"] == ["loss", "accuracy"]
    assert curve["values"][0, 0] > loss and curve["values"][-1, 0] > loss  # a minimum, here
    for a, b in zip(before, cnn.get_weights()):  # the model is left as it was
        assert np.array_equal(a, b)


def _numpy_loss_one_by_one(weights, x, y):
    """Mean cross-entropy and accuracy of a Dense-ReLU-Dense net, one example at a time."""
    w1, b1, w2, b2 = weights
    losses, hits = [], []
    for xi, yi in zip(x, y):
        logits = np.maximum(xi @ w1 + b1, 0.0) @ w2 + b2
        shifted = logits - logits.max()
        losses.append(np.log(np.exp(shifted).sum()) - shifted[yi])
        hits.append(np.argmax(logits) == yi)
    return np.mean(losses), np.mean(hits)


def test_grid_equals_a_one_example_at_a_time_reference():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 5)), rng.integers(0, 3, 30)
    model = _classifier([nn.Dense(8, activation="relu"), nn.Dense(3)], x, y, dtype="float64")
    grid = landscape.surface_2d(model, x, y, resolution=3, seed=2, batch_size=8, verbose=0)
    directions = landscape.random_directions(model, count=2, seed=2)
    center = replicas.get_flat(model)
    for i, b in enumerate(grid["beta"]):
        for j, a in enumerate(grid["alpha"]):
            flat = center + a * directions[0] + b * directions[1]
            weights = replicas.split_flat(model, flat)
            want = _numpy_loss_one_by_one(weights, x, y)
            assert np.allclose(grid["values"][i, j], want, rtol=1e-10, atol=1e-12)


def test_grid_chunks_cover_every_point_once_whatever_the_chunk_size(cnn, images):
    x, y = images
    coords = np.linspace(-0.5, 0.5, 7)[:, None]
    direction = landscape.random_directions(cnn, 1, seed=0)
    center = replicas.get_flat(cnn).astype(np.float64)
    ref = landscape.evaluate_points(cnn, x, y, center, direction, coords)
    for row in (1, 2, 7):
        got = landscape.evaluate_grid(
            cnn, x, y, center, direction, coords, places=Inline(), row=row, verbose=0
        )
        assert np.array_equal(got, ref)


def test_interpolation_passes_through_both_models(cnn, images):
    x, y = images
    other = _classifier(
        [
            nn.Conv2D(4, 3, activation="relu"),
            nn.BatchNormalization(),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Dense(3),
        ],
        x,
        y,
        epochs=3,
    )
    line = landscape.interpolation(cnn, other, x, y, resolution=5, verbose=0)
    assert 0.0 in line["t"] and 1.0 in line["t"]
    at = {t: v for t, v in zip(line["t"], line["values"][:, 0])}
    assert at[0.0] == pytest.approx(cnn.evaluate(x, y, batch_size=256)[0], rel=1e-12)
    # At t = 1 the weights are the other model's, with this model's BatchNorm statistics.
    twin = clone_model(cnn, x[:1])
    replicas.set_flat(twin, replicas.get_flat(other))
    twin.compile(loss=cnn.loss, metrics=["accuracy"])
    assert at[1.0] == pytest.approx(twin.evaluate(x, y, batch_size=256)[0], rel=1e-5)
    small = _classifier([nn.Dense(3)], x.reshape(40, -1), y)
    with pytest.raises(ValueError, match="same architecture"):
        landscape.interpolation(cnn, small, x, y, resolution=3, verbose=0)


# ----- the training path ------------------------------------------------------------------------
def test_pca_finds_the_plane_of_a_path_and_puts_the_end_at_the_origin():
    rng = np.random.default_rng(0)
    u, v = np.linalg.qr(rng.standard_normal((50, 2)))[0].T
    steps = np.linspace(0.0, 1.0, 9)
    path = np.array([3 * (1 - s) * u + np.sin(3 * s) * v for s in steps]) + 7.0
    directions, ratio, coords = landscape.pca_directions(path)
    basis = np.stack([u, v])
    # The two directions span the path's plane (up to sign and rotation within it).
    assert np.allclose(directions @ directions.T, np.eye(2), atol=1e-12)
    assert np.allclose(np.linalg.svd(directions @ basis.T)[1], 1.0, atol=1e-10)
    assert ratio.sum() == pytest.approx(1.0)
    assert np.allclose(coords[-1], 0.0)
    with pytest.raises(ValueError, match="at least 3 points"):
        landscape.pca_directions(path[:2])


def test_trajectory_recorder_keeps_start_epochs_and_end(images):
    x, y = images
    sg.seed(0)
    model = nn.Sequential([nn.Flatten(), nn.Dense(3)])
    model.compile(optimizer="sgd", loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True))
    per_epoch, per_batch = TrajectoryRecorder(), TrajectoryRecorder(every=1)
    model.fit(x, y, batch_size=10, epochs=3, verbose=0, callbacks=[per_epoch, per_batch])
    assert per_epoch.weights.shape == (4, replicas.count(model))  # start + 3 epochs
    assert per_batch.weights.shape == (13, replicas.count(model))  # start + 12 batches
    assert np.array_equal(per_epoch.weights[-1], replicas.get_flat(model))
    with pytest.raises(ValueError, match="every"):
        TrajectoryRecorder(every=0)


# ----- the command ------------------------------------------------------------------------------
@pytest.fixture
def landscape_cli():
    """The command line, with its `landscape` commands (registered in cli._extensions)."""
    assert landscape.add_cli in cli._extensions()


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    from splitgrad import recipes

    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        recipes.train("digits-cnn", quick=True, seed=seed, out=root / f"s{seed}", verbose=0)
    return root


def test_landscape_command_end_to_end(quick_runs, tmp_path, landscape_cli, capsys):
    out = tmp_path / "pictures"
    args = ["landscape", quick_runs / "s0", "--2d", "--resolution", "3", "--samples", "200"]
    args += ["--between", quick_runs / "s1", "--trajectory", "--quiet", "--out", out]
    assert cli.main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out
    assert "loss at the trained model" in printed
    for name in (
        "landscape_1d",
        "landscape_2d_contour",
        "landscape_2d_surface",
        "interpolation",
        "trajectory_pca",
    ):
        assert (out / f"{name}.png").read_bytes().startswith(PNG), name
    for name in ("landscape_1d", "landscape_2d", "interpolation", "trajectory_pca"):
        with np.load(out / f"{name}.npz", allow_pickle=False) as raw:  # arrays only
            assert np.isfinite(raw["values"]).all()
    with np.load(out / "landscape_2d.npz", allow_pickle=False) as raw:
        assert raw["values"].shape == (3, 3, 2)
    # The run holds no path, so it was trained again from its saved settings and seed: the
    # replay ends exactly at the saved model, and is kept for the next call.
    path = load_trajectory(out / TRAJECTORY_FILE)
    assert len(path) >= 3  # one quick epoch, recorded about ten times
    assert np.array_equal(path[-1], replicas.get_flat(sg.load_model(quick_runs / "s0")))
    assert not (quick_runs / "s0" / "landscape_1d.png").exists()  # the run folder is untouched


def test_landscape_command_mistakes_are_one_line(tmp_path, landscape_cli, capsys):
    plain = tmp_path / "plain"
    sg.seed(0)
    model = nn.Sequential([nn.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.build_from_sample(np.zeros((1, 3), np.float32))
    model.save(plain)
    assert cli.main(["landscape", str(plain)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not saved by `splitgrad train`" in err[0]
    assert cli.main(["landscape", str(tmp_path / "missing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert cli.main(["landscape", str(plain), "--resolution", "1"]) == 2
    assert "--resolution must be at least 2" in capsys.readouterr().err


# ----- Ray --------------------------------------------------------------------------------------


@pytest.mark.ray
def test_inline_and_ray_places_give_the_same_grid(cnn, images, ray_places):
    x, y = images
    grid = {"resolution": 4, "seed": 1, "batch_size": 16, "verbose": 0}
    here = landscape.surface_2d(cnn, x, y, places=Inline(), **grid)
    there = landscape.surface_2d(cnn, x, y, places=ray_places, **grid)
    assert there["values"].shape == (4, 4, 2)
    # Not always bitwise: the places run their BLAS on 1 thread (Haswell kernel: 1e-6 apart).
    assert np.allclose(there["values"], here["values"], rtol=1e-5, atol=1e-6)
