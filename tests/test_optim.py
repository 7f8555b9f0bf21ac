"""Optimizers and schedules against torch.optim: 25-step trajectories, flat vs per-parameter
paths, state_dict resume, gradient clipping, schedules and error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import mlp_loss, to_torch, torch_mlp_loss

from splitgrad import ops, optim, schedules
from splitgrad.tensor import Tensor

torch.set_default_dtype(torch.float64)

CASES = [
    (
        "sgd_momentum",
        optim.SGD,
        {"learning_rate": 0.1, "momentum": 0.8, "dampening": 0.2},
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.8, "dampening": 0.2},
    ),
    (
        "sgd_nesterov_wd",
        optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    ),
    (
        "adam_wd",
        optim.Adam,
        {
            "learning_rate": 0.02,
            "beta_1": 0.8,
            "beta_2": 0.99,
            "epsilon": 1e-6,
            "weight_decay": 0.05,
        },
        torch.optim.Adam,
        {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05},
    ),
    (
        "adam_amsgrad",
        optim.Adam,
        {"learning_rate": 0.03, "beta_2": 0.9, "amsgrad": True},
        torch.optim.Adam,
        {"lr": 0.03, "betas": (0.9, 0.9), "amsgrad": True},
    ),
    (
        "adamw",
        optim.AdamW,
        {"learning_rate": 0.02, "beta_1": 0.85, "weight_decay": 0.1},
        torch.optim.AdamW,
        {"lr": 0.02, "betas": (0.85, 0.999), "weight_decay": 0.1},
    ),
    (
        "rmsprop_centered_momentum_wd",
        optim.RMSprop,
        {
            "learning_rate": 0.01,
            "rho": 0.9,
            "epsilon": 1e-5,
            "momentum": 0.5,
            "centered": True,
            "weight_decay": 0.02,
        },
        torch.optim.RMSprop,
        {
            "lr": 0.01,
            "alpha": 0.9,
            "eps": 1e-5,
            "momentum": 0.5,
            "centered": True,
            "weight_decay": 0.02,
        },
    ),
    (
        "rmsprop_plain",
        optim.RMSprop,
        {"learning_rate": 0.005, "alpha": 0.95},
        torch.optim.RMSprop,
        {"lr": 0.005, "alpha": 0.95},
    ),
    (
        "adagrad",
        optim.Adagrad,
        {
            "learning_rate": 0.1,
            "lr_decay": 0.05,
            "initial_accumulator_value": 0.1,
            "epsilon": 1e-8,
            "weight_decay": 0.01,
        },
        torch.optim.Adagrad,
        {
            "lr": 0.1,
            "lr_decay": 0.05,
            "initial_accumulator_value": 0.1,
            "eps": 1e-8,
            "weight_decay": 0.01,
        },
    ),
    (
        "adadelta",
        optim.Adadelta,
        {"learning_rate": 0.5, "rho": 0.8, "epsilon": 1e-5, "weight_decay": 0.03},
        torch.optim.Adadelta,
        {"lr": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.03},
    ),
]
IDS = [c[0] for c in CASES]


def _init(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"w1": (3, 5), "b1": (5,), "w2": (5, 2), "b2": (2,)}
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    return params, rng.normal(size=(8, 3)), rng.normal(size=(8, 2))


def _ours(params):
    return {k: Tensor(v.copy(), requires_grad=True) for k, v in params.items()}


def _run_ours(opt, p, x, y, steps, drop=None, per_param=False):
    for k in range(steps):
        mlp_loss(p, x, y).backward()
        if drop is not None and k % 3 == 1:
            p[drop].grad = None
        if per_param:  # a grad that is not the flat view forces the per-parameter path
            for t in p.values():
                if t.grad is not None:
                    t.grad = t.grad.copy()
        opt.step()
        opt.zero_grad()
    return {k: v.data.copy() for k, v in p.items()}


def _run_torch(opt, p, x, y, steps, drop=None, clip=None):
    for k in range(steps):
        opt.zero_grad()
        torch_mlp_loss(p, x, y).backward()
        if drop is not None and k % 3 == 1:
            p[drop].grad = None
        if clip is not None:
            clip(list(p.values()))
        opt.step()
    return {k: v.detach().numpy().copy() for k, v in p.items()}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trajectory_matches_torch(case):
    _, ours_cls, ours_kw, torch_cls, torch_kw = case
    params, x, y = _init()
    p = _ours(params)
    ours = _run_ours(ours_cls(p, **ours_kw), p, x, y, 25)
    tp = {k: to_torch(v) for k, v in params.items()}
    theirs = _run_torch(torch_cls(tp.values(), **torch_kw), tp, x, y, 25)
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-9, atol=1e-11, err_msg=k)
        assert not np.allclose(ours[k], params[k])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_skipped_grads_match_torch_and_paths_agree(case):
    # b2 loses its grad every third step: torch skips it and so must we (own step counts).
    _, ours_cls, ours_kw, torch_cls, torch_kw = case
    params, x, y = _init(1)
    p = _ours(params)
    ours = _run_ours(ours_cls(p, **ours_kw), p, x, y, 12, drop="b2")
    tp = {k: to_torch(v) for k, v in params.items()}
    theirs = _run_torch(torch_cls(tp.values(), **torch_kw), tp, x, y, 12, drop="b2")
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-9, atol=1e-11, err_msg=k)
    # Flat fast path and per-parameter path are bitwise identical.
    p1, p2 = _ours(params), _ours(params)
    flat = _run_ours(ours_cls(p1, **ours_kw), p1, x, y, 10)
    each = _run_ours(ours_cls(p2, **ours_kw), p2, x, y, 10, per_param=True)
    for k in params:
        np.testing.assert_array_equal(flat[k], each[k])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_resumes_bitwise(case):
    _, ours_cls, ours_kw, _, _ = case
    params, x, y = _init(2)
    p = _ours(params)
    full = _run_ours(ours_cls(p, **ours_kw), p, x, y, 14)

    p1 = _ours(params)
    opt1 = ours_cls(p1, **ours_kw)
    half = _run_ours(opt1, p1, x, y, 7)
    sd = opt1.state_dict()
    json.dumps({k: v for k, v in sd.items() if k != "state"})  # scalars are JSON
    assert all(isinstance(v, np.ndarray) for v in sd["state"].values())
    # Resume in a fresh optimizer whose state is loaded before it has parameters.
    p2 = {k: Tensor(v, requires_grad=True) for k, v in half.items()}
    opt2 = optim.get(sd["class_name"])
    opt2.load_state_dict(sd)
    opt2.build(p2)
    resumed = _run_ours(opt2, p2, x, y, 7)
    for k in params:
        np.testing.assert_array_equal(resumed[k], full[k])


@pytest.mark.parametrize("mode", ["global_clipnorm", "clipvalue"])
def test_clipping_matches_torch(mode):
    params, x, y = _init(3)
    kw = {mode: 0.05}
    p = _ours(params)
    ours = _run_ours(optim.SGD(p, learning_rate=0.3, momentum=0.5, **kw), p, x, y, 25)
    tp = {k: to_torch(v) for k, v in params.items()}
    if mode == "global_clipnorm":

        def clip(ps):
            return torch.nn.utils.clip_grad_norm_(ps, 0.05)
    else:

        def clip(ps):
            return torch.nn.utils.clip_grad_value_(ps, 0.05)

    theirs = _run_torch(torch.optim.SGD(tp.values(), lr=0.3, momentum=0.5), tp, x, y, 25, clip=clip)
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-9, atol=1e-12, err_msg=k)
    p1, p2 = _ours(params), _ours(params)
    flat = _run_ours(optim.Adam(p1, **kw), p1, x, y, 10)
    each = _run_ours(optim.Adam(p2, **kw), p2, x, y, 10, per_param=True)
    for k in params:
        np.testing.assert_allclose(flat[k], each[k], rtol=1e-12, atol=1e-15)


def test_flat_buffers_and_float32():
    rng = np.random.default_rng(4)
    a = Tensor(rng.normal(size=(4, 3)).astype(np.float32), requires_grad=True)
    b = Tensor(rng.normal(size=(3,)).astype(np.float32), requires_grad=True)
    frozen = Tensor(np.ones(2, np.float32))
    opt = optim.Adam([a, b, frozen], learning_rate=0.1)
    assert a.data.base is b.data.base and a.data.base is not None
    bufs = opt.grad_buffers()
    assert set(bufs) == {a, b} and bufs[a].base is bufs[b].base
    (ops.linear(Tensor(np.ones((2, 4), np.float32)), a, b) ** 2).sum().backward(into=bufs)
    assert a.grad is bufs[a]
    before = a.data.copy()
    opt.step()
    assert a.data.dtype == np.float32 and not np.array_equal(a.data, before)
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    opt.zero_grad(set_to_none=False)
    assert a.grad is bufs[a] and not a.grad.any()
    # A parameter whose data was rebound is copied back into the flat buffer.
    a.data = np.zeros((4, 3), np.float32)
    a.grad = None
    opt.step()
    assert a.data.base is b.data.base and not a.data.any()


def test_learning_rate_schedule_drives_the_step():
    sched = schedules.StepDecay(0.1, step_size=2, gamma=0.5)
    p = Tensor(np.ones(3), requires_grad=True)
    opt = optim.SGD([p], learning_rate=sched)
    seen = []
    for _ in range(5):
        seen.append(opt.learning_rate)
        p.grad = np.ones(3)
        opt.step()
    assert seen == [0.1, 0.1, 0.05, 0.05, 0.025]
    np.testing.assert_allclose(p.data, 1 - sum(seen))
    cfg = json.loads(json.dumps(opt.get_config()))
    again = optim.get({"class_name": "SGD", "config": cfg})
    assert isinstance(again._lr, schedules.StepDecay) and again.learning_rate == 0.1


def test_schedule_values():
    exp = schedules.ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5)
    assert exp(0) == 1.0 and exp(10) == pytest.approx(0.5) and exp(5) == pytest.approx(0.5**0.5)
    stair = schedules.ExponentialDecay(1.0, 10, 0.5, staircase=True)
    assert [stair(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cos = schedules.CosineDecay(1.0, decay_steps=4, alpha=0.1)
    np.testing.assert_allclose(
        [cos(s) for s in range(6)],
        [0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(s, 4) / 4)) for s in range(6)],
    )
    warm = schedules.CosineDecay(0.0, decay_steps=2, warmup_steps=4, warmup_target=2.0)
    np.testing.assert_allclose(
        [warm(s) for s in range(8)], [0.0, 0.5, 1.0, 1.5, 2.0, 1.0, 0.0, 0.0], atol=1e-12
    )
    lin = schedules.LinearWarmup(schedules.StepDecay(1.0, 2, 0.1), warmup_steps=4)
    np.testing.assert_allclose(
        [lin(s) for s in range(8)], [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.1, 0.1]
    )
    for s in (exp, stair, cos, warm, lin, schedules.LinearWarmup(0.3, 2, 0.1)):
        back = schedules.get(json.loads(json.dumps(schedules.serialize(s))))
        assert [back(k) for k in range(9)] == [s(k) for k in range(9)]


def test_keras_habits_and_registry():
    opt = optim.Adam(3e-3)
    assert opt.learning_rate == 3e-3 and not opt.built
    assert optim.SGD(lr=0.2).learning_rate == 0.2
    assert optim.get("adam", learning_rate=0.5).learning_rate == 0.5
    assert isinstance(optim.get("AdamW"), optim.AdamW) and optim.get(opt) is opt
    assert optim.get("rmsprop").learning_rate == 1e-2 and optim.RMSprop().rho == 0.99
    assert optim.Adadelta().learning_rate == 1.0 and optim.AdamW().weight_decay == 1e-2
    p = Tensor(np.ones(2), requires_grad=True)
    opt.build([p])
    opt.build([p])  # building again with the same parameters is a no-op
    back = optim.get(json.loads(json.dumps(optim.serialize(opt))))
    assert back.get_config() == opt.get_config()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: optim.get("adamm"), "unknown optimizer 'adamm'"),
        (lambda: optim.Adam(lr=0.1, learning_rate=0.1), "not both"),
        (lambda: optim.SGD(nesterov=True), "nesterov needs momentum > 0"),
        (lambda: optim.SGD(clipnorm=1.0, clipvalue=1.0), "clipnorm or clipvalue"),
        (lambda: optim.Adam(learning_rate=-1.0), "learning_rate must be ≥ 0"),
        (lambda: optim.Adam(beta1=0.9), "unknown arguments"),
        (lambda: optim.Adam().step(), "build"),
        (lambda: optim.Adam(learning_rate="fast"), "learning_rate must be a number"),
        (lambda: optim.Adam([np.ones(3)]), "must be a Tensor"),
    ],
)
def test_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        make()


def test_load_state_dict_mismatch_and_rebuild_errors():
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam([a])
    with pytest.raises(ValueError, match="already built"):
        opt.build([b])
    other = optim.Adam({"kernel": b})
    with pytest.raises(ValueError, match="build it with the same parameters"):
        opt.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="saved by SGD"):
        opt.load_state_dict(optim.SGD([b]).state_dict())


def test_build_with_no_parameters_then_real_ones():
    opt = optim.SGD(learning_rate=0.5)
    opt.build([])
    opt.step()  # nothing to update
    p = Tensor(np.ones(2), requires_grad=True)
    opt.build({"w": p})
    p.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(p.data, [0.5, 0.5])
    assert list(opt.state_dict()["param_steps"]) == [1]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: optim.Adam(learning_rate=float("inf")), "learning_rate must be a finite number"),
        (lambda: optim.SGD(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (lambda: optim.Adam(epsilon=float("inf")), "epsilon must be a finite number"),
        (lambda: optim.SGD(momentum=float("nan")), "momentum must be a finite number"),
        (lambda: optim.Adam(beta_1=5), "beta_1 must be in"),
        (lambda: optim.Adam(amsgrad="yes"), "amsgrad must be True or False"),
        (lambda: optim.RMSprop(rho=1.5), "rho must be in"),
        (lambda: optim.Adagrad(lr_decay=-0.1), "lr_decay must be ≥ 0"),
        (lambda: optim.SGD(clipnorm=float("inf")), "clipnorm must be a positive finite"),
        (
            lambda: optim.Adam(learning_rate=schedules.StepDecay(float("inf"), 2)),
            "learning_rate must be a finite number",
        ),
    ],
)
def test_non_finite_and_out_of_range_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "change, match, setting",
    [
        (lambda s: s["config"].update(learning_rate=-1.0), "learning_rate must be ≥ 0", True),
        (lambda s: s["config"].update(beta_1=5.0), "beta_1 must be in", True),
        (lambda s: s["config"].update(learning_rate=float("inf")), "finite", True),
        (lambda s: s["config"].update(clipvalue=-2.0), "clipvalue", True),
        (lambda s: s["config"].update(amsgrad=True), "same parameters", False),
        (lambda s: s.update(step=-1), "step must be an integer", True),
        (lambda s: s.update(param_steps=[1, "x"]), "param_steps must be an integer", False),
        (lambda s: s["state"].update({"w.exp_avg": np.zeros(7)}), "shape", False),
    ],
)
def test_load_state_dict_validates_like_the_constructor_and_changes_nothing(change, match, setting):
    w = Tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam({"w": w}, learning_rate=0.1)
    w.grad = np.ones(3)
    opt.step()
    before = opt.state_dict()
    bad = opt.state_dict()
    change(bad)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["config"] == before["config"] and not opt.amsgrad
    assert after["step"] == before["step"] and after["param_steps"] == before["param_steps"]
    for key in before["state"]:
        np.testing.assert_array_equal(after["state"][key], before["state"][key])
    if setting:  # before build, loading is deferred, but the settings are checked at once
        fresh = optim.Adam(learning_rate=0.1)
        with pytest.raises(ValueError, match=match):
            fresh.load_state_dict(bad)
        assert fresh.learning_rate == 0.1 and fresh.iterations == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cls,kw",
    [
        (optim.Adam, {}),
        (optim.Adam, {"amsgrad": True, "weight_decay": 0.1}),
        (optim.AdamW, {"amsgrad": True}),
    ],
)
def test_compiled_adam_gives_the_numpy_rules_bits(cls, kw, dtype):
    """Adam's one-pass compiled update (_kernels/optim_jit.py) and the NumPy passes it replaces:
    the same bits over 6 steps, with a zero, a NaN and an infinite gradient among them."""
    pytest.importorskip("numba")
    from helpers import assert_bitwise_equal, compiled_and_numpy

    rng = np.random.default_rng(0)
    start = rng.standard_normal(5000).astype(dtype)
    grads = [rng.standard_normal(5000).astype(dtype) for _ in range(6)]
    grads[2][:3] = [0.0, np.nan, np.inf]

    def train():
        p = Tensor(start.copy(), requires_grad=True)
        opt = cls([p], learning_rate=1e-2, **kw)
        with np.errstate(invalid="ignore"):
            for g in grads:
                p.grad = g.copy()
                opt.step()
        return [p.data]

    assert_bitwise_equal(*compiled_and_numpy(train))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_flat_update_shared_over_the_team_gives_the_same_bits(case, monkeypatch):
    """Inside splitgrad's own threads the flat update's chunks run on the team (optim/base.py);
    each chunk is elementwise, so the parameters come out bit for bit as in one thread."""
    from splitgrad._kernels import thread_team

    _, cls, kwargs, _, _ = case
    monkeypatch.setattr(optim.Optimizer, "_CHUNK", 7)  # 5 chunks of 32 parameters
    real_size, real_run = thread_team.team_size, thread_team.run_pieces
    monkeypatch.setattr(thread_team, "team_size", lambda: max(2, real_size()))
    runs = []
    monkeypatch.setattr(optim.base, "run_pieces", lambda ps: runs.append(1) or real_run(ps))
    rng = np.random.default_rng(5)
    start = rng.standard_normal((4, 8))
    grads = [rng.standard_normal((4, 8)) for _ in range(4)]

    def train(on_team):
        p = Tensor(start.copy(), requires_grad=True)
        opt = cls([p], **kwargs)
        for g in grads:
            p.grad = opt.grad_buffers()[p]
            p.grad[...] = g
            if on_team:
                with thread_team.own_threads:
                    opt.step()
            else:
                opt.step()
        return p.data

    alone = train(False)
    assert not runs
    np.testing.assert_array_equal(train(True), alone)
    assert len(runs) == len(grads)  # every step went over the team
