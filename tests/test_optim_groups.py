"""Optimizer parameter groups (PyTorch style) and the two norm-clipping rules, against
torch.optim over 20 steps in float64: groups with their own lr and weight decay, `param_groups`
edited between steps, state_dict / checkpoint round trips, Model.compile with groups, and Keras's
per-variable `clipnorm` next to `global_clipnorm`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import mlp_loss, torch_mlp_loss

from splitgrad import nn, optim
from splitgrad.tensor import Tensor

torch.set_default_dtype(torch.float64)

# (our class, our group-level settings, torch class, torch settings) per case; group 0 holds
# the first layer, group 1 the second.
CASES = {
    "sgd_momentum_wd": (
        optim.SGD,
        {"lr": 0.05, "momentum": 0.9},
        [{"lr": 0.2, "weight_decay": 0.1}, {"weight_decay": 0.0}],
        torch.optim.SGD,
    ),
    "sgd_nesterov": (
        optim.SGD,
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
        [{"lr": 0.1}, {"momentum": 0.5, "weight_decay": 0.05}],
        torch.optim.SGD,
    ),
    "adam": (
        optim.Adam,
        {"lr": 0.01},
        [{"lr": 0.03, "weight_decay": 0.02}, {"betas": (0.8, 0.99)}],
        torch.optim.Adam,
    ),
    "adamw": (
        optim.AdamW,
        {"lr": 0.01, "weight_decay": 0.1},
        [{"lr": 0.02}, {"weight_decay": 0.0, "eps": 1e-6}],
        torch.optim.AdamW,
    ),
    "rmsprop": (
        optim.RMSprop,
        {"lr": 0.005, "alpha": 0.9},
        [{"lr": 0.01, "momentum": 0.5}, {"weight_decay": 0.03}],
        torch.optim.RMSprop,
    ),
}


def _init(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"w1": (3, 5), "b1": (5,), "w2": (5, 2), "b2": (2,)}
    return (
        {k: rng.normal(size=s) for k, s in shapes.items()},
        rng.normal(size=(8, 3)),
        rng.normal(size=(8, 2)),
    )


def _groups(p, settings):
    return [
        {"params": [p["w1"], p["b1"]], **settings[0]},
        {"params": [p["w2"], p["b2"]], **settings[1]},
    ]


def _torch_settings(settings: dict) -> dict:
    return {("alpha" if k == "rho" else k): v for k, v in settings.items()}


def _run_ours(opt, p, x, y, steps, edit=None, per_param=False):
    for k in range(steps):
        if edit is not None:
            edit(k, opt)
        opt.zero_grad()
        loss = mlp_loss(p, x, y)
        loss.backward() if per_param else loss.backward(into=opt.grad_buffers())
        opt.step()
    return {k: v.data.copy() for k, v in p.items()}


def _run_torch(opt, p, x, y, steps, edit=None, clip=None):
    for k in range(steps):
        if edit is not None:
            edit(k, opt)
        opt.zero_grad()
        torch_mlp_loss(p, x, y).backward()
        if clip is not None:
            clip(list(p.values()))
        opt.step()
    return {k: v.detach().numpy() for k, v in p.items()}


def _halve_lr_at_10(k, opt):
    if k == 10:
        for g in opt.param_groups:
            g["lr"] *= 0.5


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("per_param", [False, True], ids=["flat", "per_param"])
def test_two_groups_match_torch_over_20_steps(case, per_param):
    ours_cls, base, settings, torch_cls = CASES[case]
    params, x, y = _init()
    p = {k: Tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = ours_cls(_groups(p, settings), **base)
    ours = _run_ours(opt, p, x, y, 20, edit=_halve_lr_at_10, per_param=per_param)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    topt = torch_cls(_groups(tp, [_torch_settings(s) for s in settings]), **_torch_settings(base))
    theirs = _run_torch(topt, tp, x, y, 20, edit=_halve_lr_at_10)
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_param_groups_are_live_views():
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    opt = optim.SGD([{"params": [a], "lr": 0.1, "name": "head"}, {"params": b}], lr=0.01)
    g0, g1 = opt.param_groups
    assert g0["params"][0] is a and g1["params"][0] is b and g0["name"] == "head"
    assert g0["lr"] == 0.1 and g1["lr"] == 0.01 and g1["momentum"] == 0.0
    opt.learning_rate = 0.02  # the optimizer's value: group 1 follows it, group 0 has its own
    assert (g0["lr"], g1["lr"]) == (0.1, 0.02)
    g1["lr"] = 0.3
    del g0["lr"]
    assert (g0["lr"], g1["lr"], opt.learning_rate) == (0.02, 0.3, 0.02)
    assert {"params", "lr", "momentum", "nesterov"} <= set(g0)
    # One default group: writing it writes the optimizer's own setting (PyTorch's habit of
    # `for g in opt.param_groups: g["lr"] = ...` for a hand-written schedule).
    single = optim.Adam([a, b], learning_rate=1e-3)
    (g,) = single.param_groups
    g["lr"] = 5e-4
    g["betas"] = (0.8, 0.95)
    assert single.learning_rate == 5e-4 and (single.beta_1, single.beta_2) == (0.8, 0.95)
    assert "param_groups" not in single.get_config()  # the config of plain optimizers is as before


def test_group_errors_are_clear():
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(KeyError, match="unknown key 'weight_deacy'.*weight_decay"):
        optim.SGD([{"params": [a], "weight_deacy": 0.1}])
    with pytest.raises(ValueError, match="in parameter groups 0 and 1"):
        optim.SGD([{"params": [a, b]}, {"params": [a]}])
    with pytest.raises(ValueError, match="parameter group 1 must be a dict with 'params'"):
        optim.SGD([{"params": [a]}, {"lr": 0.1}])
    with pytest.raises(ValueError, match=r"param_groups\[0\]: learning_rate must be ≥ 0"):
        optim.SGD([{"params": [a], "lr": -1.0}])
    opt = optim.Adam([{"params": [a], "lr": 0.1}, {"params": [b]}])
    with pytest.raises(ValueError, match=r"param_groups\[1\]: beta_1 must be in \[0, 1\)"):
        opt.param_groups[1]["betas"] = (1.5, 0.9)
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)  # unchanged after the refusal
    with pytest.raises(ValueError, match="other optimizer state"):
        opt.param_groups[0]["amsgrad"] = True  # would need a max_exp_avg_sq array
    with pytest.raises(KeyError, match="fixed"):
        opt.param_groups[0]["params"] = [b]


def test_state_dict_round_trips_groups():
    params, x, y = _init(1)
    p = {k: Tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    settings = [{"lr": 0.03, "weight_decay": 0.01}, {"lr": 0.005}]
    opt = optim.Adam(_groups(p, settings), lr=0.01)
    full = _run_ours(opt, p, x, y, 20)

    q = {k: Tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    first = optim.Adam(_groups(q, settings), lr=0.01)
    _run_ours(first, q, x, y, 10)
    sd = first.state_dict()
    assert [g["learning_rate"] for g in sd["config"]["param_groups"]] == [0.03, 0.005]
    # A fresh optimizer from the saved settings (groups by parameter name), then the state.
    again = optim.get({"class_name": sd["class_name"], "config": sd["config"]})
    again.build(list(q.values()))
    again.load_state_dict(sd)
    assert [g["lr"] for g in again.param_groups] == [0.03, 0.005]
    resumed = _run_ours(again, q, x, y, 10)
    for k in params:
        np.testing.assert_array_equal(resumed[k], full[k])
    plain = optim.Adam(list(q.values()))
    with pytest.raises(ValueError, match="parameter groups"):
        plain.load_state_dict(sd)
    with pytest.raises(ValueError, match="rebuilds only for the same parameters"):
        optim.Adam.from_config(sd["config"]).build(list(q.values())[:2])
    # A way that shards the model rebuilds the optimizer on pieces of the same count: refused.
    shards = [Tensor(np.ones(v.shape[:-1] + (1,)), requires_grad=True) for v in q.values()]
    with pytest.raises(ValueError, match="has shape .* where the parameter groups were made"):
        optim.Adam.from_config(sd["config"]).build(shards)


def _model(seed=0):
    model = nn.Sequential([nn.Dense(6, activation="tanh"), nn.Dense(2)], dtype="float64")
    model.build_from_sample(np.zeros((1, 3)))
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    return model


def test_compile_trains_the_groups_and_checkpoints_them(tmp_path):
    from splitgrad.checkpoint import load_model

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(32, 3)), rng.normal(size=(32, 2))
    model = _model()
    first, second = model.layers[0].parameters(), model.layers[1].parameters()
    before = [w.copy() for w in model.get_weights()]
    opt = optim.SGD([{"params": first, "lr": 0.0}, {"params": second, "lr": 0.1}], momentum=0.9)
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    after = model.get_weights()
    np.testing.assert_array_equal(after[0], before[0])  # lr 0: the first layer stays
    assert not np.allclose(after[2], before[2])

    # The same steps by hand in torch: only the second layer moves.
    tw = [torch.tensor(w, requires_grad=True) for w in before]
    topt = torch.optim.SGD(
        [{"params": tw[:2], "lr": 0.0}, {"params": tw[2:], "lr": 0.1}], momentum=0.9
    )
    for i in range(0, 32, 8):
        topt.zero_grad()
        xb, yb = torch.tensor(x[i : i + 8]), torch.tensor(y[i : i + 8])
        out = torch.tanh(xb @ tw[0] + tw[1]) @ tw[2] + tw[3]
        ((out - yb) ** 2).mean().backward()
        topt.step()
    for ours, theirs in zip(after, tw):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)

    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert [g["lr"] for g in loaded.optimizer.param_groups] == [0.0, 0.1]
    assert [len(g["params"]) for g in loaded.optimizer.param_groups] == [2, 2]
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rule", ["clipnorm", "global_clipnorm"])
@pytest.mark.parametrize("per_param", [False, True], ids=["flat", "per_param"])
def test_clipnorm_is_per_variable_and_global_clipnorm_is_global(rule, per_param):
    params, x, y = _init(3)
    p = {k: Tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = optim.SGD(p, learning_rate=0.3, momentum=0.5, **{rule: 0.05})
    ours = _run_ours(opt, p, x, y, 20, per_param=per_param)

    def each(ps):  # Keras's clipnorm = clip_grad_norm_ on every parameter alone
        for q in ps:
            torch.nn.utils.clip_grad_norm_([q], 0.05)

    def together(ps):
        torch.nn.utils.clip_grad_norm_(ps, 0.05)

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    clip = each if rule == "clipnorm" else together
    theirs = _run_torch(torch.optim.SGD(tp.values(), lr=0.3, momentum=0.5), tp, x, y, 20, clip=clip)
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_clipping_rules_exclude_each_other_and_old_configs_keep_their_meaning():
    with pytest.raises(ValueError, match="one clipping rule"):
        optim.Adam(clipnorm=1.0, global_clipnorm=1.0)
    config = optim.Adam(global_clipnorm=2.0).get_config()
    assert config["global_clipnorm"] == 2.0 and config["clipnorm"] is None
    # A config saved before clipnorm meant each variable has no "global_clipnorm" key: its
    # clipnorm was the global norm, and loads as such.
    old = {k: v for k, v in optim.Adam(clipnorm=2.0).get_config().items() if k != "global_clipnorm"}
    legacy = optim.Adam.from_config(old)
    assert (legacy.clipnorm, legacy.global_clipnorm) == (None, 2.0)
    assert optim.Adam.from_config(optim.Adam(clipnorm=2.0).get_config()).clipnorm == 2.0
    w = Tensor(np.ones(2), requires_grad=True)
    opt = optim.Adam([w])
    sd = opt.state_dict()
    sd["config"] = old
    opt.load_state_dict(sd)
    assert (opt.clipnorm, opt.global_clipnorm) == (None, 2.0)


def test_data_parallel_replicas_keep_the_groups():
    from splitgrad.split import DataParallel

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(32, 3)), rng.normal(size=(32, 2))
    weights = []
    for way in (None, DataParallel(2)):
        model = _model()
        first, rest = model.layers[0].parameters(), model.layers[1].parameters()
        opt = optim.Adam([{"params": first, "lr": 0.05}, {"params": rest}], learning_rate=0.01)
        model.compile(optimizer=opt, loss="mse")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, way=way)
        assert [g["lr"] for g in model.optimizer.param_groups] == [0.05, 0.01]
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
