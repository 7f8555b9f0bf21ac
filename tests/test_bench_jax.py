"""The JAX peer of benchmarks/compare.py (benchmarks/jax_workloads.py) computes the same networks
as the PyTorch builder: for W1 (MLP) and W7 (lab CNN, NHWC in JAX, NCHW in PyTorch) the forward
pass and the loss equal PyTorch's for identical weights (float32, ~1e-5), the gradients too
(float64), and a few jit-compiled Adam steps lower the loss on a fixed batch. compare.py says
clearly when JAX is asked for but not installed. Skipped where JAX (the optional `bench` extra)
is absent."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")
torch = pytest.importorskip("torch")

# benchmarks/ is a folder of scripts, not a package: import its modules from there.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import compare
import jax_workloads as jw
from workloads import make_data


def _set(layer, weight, bias):
    layer.weight.data = torch.from_numpy(np.array(weight))  # copies, in the arrays' dtype
    layer.bias.data = torch.from_numpy(np.array(bias))


def _torch_model(workload, params):
    """The PyTorch builder's network for W1 / W7, holding the JAX parameters."""
    from torch import nn

    if workload == "W1":
        model = nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
        )
        for layer, name in ((model[0], "dense1"), (model[2], "dense2"), (model[4], "dense3")):
            _set(layer, params[name]["w"].T, params[name]["b"])
        return model
    model = nn.Sequential(
        nn.Conv2d(1, 24, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(24, 36, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(900, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    for layer, name in ((model[0], "conv1"), (model[3], "conv2")):
        _set(layer, params[name]["w"].transpose(3, 2, 0, 1), params[name]["b"])  # HWIO -> OIHW
    # JAX flattens NHWC (h, w, c); PyTorch flattens NCHW (c, h, w): reorder the rows.
    w = params["dense1"]["w"].reshape(5, 5, 36, 128).transpose(2, 0, 1, 3).reshape(900, 128)
    _set(model[7], w.T, params["dense1"]["b"])
    _set(model[9], params["dense2"]["w"].T, params["dense2"]["b"])
    return model


def _torch_input(workload, x):
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if workload == "W7" else x)


@pytest.mark.parametrize("workload", ["W1", "W7"])
def test_forward_and_loss_equal_torch_in_float32(workload):
    params = jw.init_params(workload)
    x, y = make_data(workload)
    logits = jax.jit(lambda p, x: jw.forward(workload, p, x))(params, x)
    value = jax.jit(lambda p, x, y: jw.loss(workload, p, x, y))(params, x, y.astype(np.int32))

    out = _torch_model(workload, params)(_torch_input(workload, x))
    theirs = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
    np.testing.assert_allclose(np.asarray(logits), out.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(value), theirs.item(), rtol=1e-5)


@pytest.mark.parametrize("workload", ["W1", "W7"])
def test_gradients_equal_torch_in_float64(workload):
    # In float64: in float32 one ReLU input of W7's first batch lies within rounding of 0, so
    # the two frameworks may keep or drop it and the conv gradients differ by ~1 %.
    params = jax.tree.map(lambda a: a.astype(np.float64), jw.init_params(workload))
    x, y = make_data(workload)
    with jax.enable_x64(True):
        grads = jax.jit(jax.grad(lambda p, x, y: jw.loss(workload, p, x, y)))(
            params, x.astype(np.float64), y
        )
        grads = jax.tree.map(np.asarray, grads)

    model = _torch_model(workload, params)
    out = model(_torch_input(workload, x).double())
    torch.nn.functional.cross_entropy(out, torch.from_numpy(y)).backward()
    mine = _torch_model(workload, grads).parameters()  # the JAX gradients in torch's layout
    for ours, ref in zip(mine, model.parameters(), strict=True):
        np.testing.assert_allclose(ours.detach().numpy(), ref.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("workload", ["W1", "W7"])
def test_jit_adam_steps_lower_the_loss_on_a_fixed_batch(workload):
    update, state = jw.train_update(workload)
    x, y = jw.device_batches(workload)[0]
    loss = jax.jit(lambda p, x, y: jw.loss(workload, p, x, y))
    before = float(loss(state[0], x, y))
    for _ in range(3):
        state[:] = update(*state, x, y)
    after = float(loss(state[0], x, y))
    assert after < before


def test_the_builder_runs_its_stream():
    step = jw.jax_step("W5")  # the smallest workload: the builder, the stream and the wait
    for _ in range(17):
        step()
    assert "jax" in jw.describe() and "cpu" in jw.describe()


def test_compare_says_when_jax_is_missing(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    with pytest.raises(SystemExit):
        compare.main(["W1", "--frameworks", "splitgrad", "jax"])
    err = capsys.readouterr().err
    assert "jax not installed" in err and ".[bench]" in err


def test_compare_rejects_an_unknown_framework(capsys):
    with pytest.raises(SystemExit):
        compare.main(["W1", "--frameworks", "tensorflow"])
    assert "expected one of splitgrad, torch, jax" in capsys.readouterr().err
