"""Reinforcement learning (splitgrad.rl, the cartpole recipes, `splitgrad play`, the acting way).

Returns checked by hand; REINFORCE's and DQN's updates against PyTorch (float64, one SGD step
of lr 1 = minus the gradient); the replay buffer and the target network as specified; the
environment checks; seeded runs; quick runs through the CLI; the acting way against the
single-process run (inline and on Ray). Full-size CartPole runs are `slow`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, to_torch

import splitgrad as sg
from splitgrad import cli, optim, recipes, rl
from splitgrad.recipes import cartpole_dqn, cartpole_pg
from splitgrad.rl import play as play_mod
from splitgrad.split import WAYS, Inline
from splitgrad.split.acting import Acting

ENV = "CartPole-v1"
RL_RECIPES = {
    "cartpole-pg": "splitgrad.recipes.cartpole_pg",
    "cartpole-dqn": "splitgrad.recipes.cartpole_dqn",
}


# ----- helpers ------------------------------------------------------------------------------------
def built(agent, obs_size=4, optimizer=None):
    agent.build_from_sample(np.zeros((1, obs_size), agent.dtype))
    agent.compile(optimizer=optimizer or optim.Adam(learning_rate=1e-3))
    return agent


def torch_mlp(net):
    """Torch Linear layers holding a copy of a splitgrad mlp's weights (kernel (in, out) → W^T)."""
    layers = []
    for dense in net.layers:
        lin = torch.nn.Linear(*dense.kernel.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(dense.kernel.data.T))
            lin.bias.copy_(torch.tensor(dense.bias.data))
        layers.append(lin)

    def forward(x):
        for lin in layers[:-1]:
            x = torch.relu(lin(x))
        return layers[-1](x)

    return layers, forward


def after_sgd_step(layers):
    """Each layer's (kernel, bias) after θ −= ∇ (torch's gradients), in splitgrad's layout."""
    out = []
    for lin in layers:
        with torch.no_grad():
            out += [(lin.weight - lin.weight.grad).numpy().T, (lin.bias - lin.bias.grad).numpy()]
    return out


def weights_of(net):
    return [w.copy() for d in net.layers for w in (d.kernel.data, d.bias.data)]


@pytest.fixture
def rl_cli():
    """The CLI (the RL recipes and `play` are registered in it)."""
    assert set(RL_RECIPES) <= set(recipes.RECIPES)
    assert play_mod.add_cli in cli._extensions()
    return cli


@pytest.fixture
def acting_registered():
    assert WAYS["acting"] is Acting


# ----- returns ------------------------------------------------------------------------------------
def test_discounted_returns_by_hand():
    # G_2 = 1, G_1 = 1 + 0.9·1 = 1.9, G_0 = 1 + 0.9·1.9 = 2.71
    np.testing.assert_allclose(rl.discounted_returns([1, 1, 1], 0.9), [2.71, 1.9, 1.0])
    # rewards 0, 0, 5 with γ 0.5: 1.25, 2.5, 5
    np.testing.assert_allclose(rl.discounted_returns([0, 0, 5], 0.5), [1.25, 2.5, 5.0])
    assert rl.discounted_returns([], 0.9).shape == (0,)


def test_batch_returns_restart_at_each_episode():
    # Two episodes laid end to end: [1, 1] then [2, 0, 4]; γ 0.5.
    got = rl.batch_returns([1, 1, 2, 0, 4], [2, 3], 0.5)
    np.testing.assert_allclose(got, [1.5, 1.0, 3.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="add up to 4 steps but there are 5 rewards"):
        rl.batch_returns([1, 1, 2, 0, 4], [1, 3], 0.5)


def test_normalize_by_hand():
    # mean 2, population std sqrt(2/3)
    np.testing.assert_allclose(rl.normalize([1, 2, 3]), np.array([-1, 0, 1]) / np.sqrt(2 / 3))
    assert np.all(rl.normalize([0.1, 0.1, 0.1]) == 0)  # std 0: zeros, not NaN
    assert rl.normalize([]).shape == (0,)


# ----- REINFORCE ----------------------------------------------------------------------------------
def reinforce_batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(7, 4))
    y = {
        "actions": rng.integers(0, 2, 7),
        "rewards": rng.uniform(0, 2, 7),
        "lengths": np.array([3, 4]),
        "episode_returns": np.array([2.0, 3.0]),
    }
    return x, y


@pytest.mark.parametrize("baseline", [False, True])
def test_reinforce_step_matches_torch(baseline):
    agent = built(
        rl.Reinforce(2, hidden=(5,), gamma=0.9, baseline=baseline, dtype="float64"),
        optimizer=optim.SGD(learning_rate=1.0),
    )
    x, y = reinforce_batch()
    layers, policy = torch_mlp(agent.policy)
    g = torch.tensor(rl.normalize(rl.batch_returns(y["rewards"], y["lengths"], 0.9)))
    ce = F.cross_entropy(policy(to_torch(x, False)), torch.tensor(y["actions"]), reduction="none")
    if baseline:
        vlayers, value = torch_mlp(agent.value)
        v = value(to_torch(x, False)).reshape(-1)
        loss = (ce * (g - v.detach())).mean() + 0.5 * ((v - g) ** 2).mean()
        layers = layers + vlayers
    else:
        loss = (ce * g).mean()
    loss.backward()
    logs = agent.train_step(x, y)
    assert_close(logs["loss"], loss.item(), rtol=1e-10)
    nets = [agent.policy, agent.value] if baseline else [agent.policy]
    ours = [w for net in nets for w in weights_of(net)]
    for a, b in zip(ours, after_sgd_step(layers)):
        assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert logs["return"] == 2.5  # the mean of the batch's episode returns


def test_reinforce_samples_from_its_policy_and_acts_greedily_without_rngs():
    agent = built(rl.Reinforce(3, hidden=(4,)))
    obs = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)
    logits = agent.scores(obs)[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    draws = [int(agent.act(obs, [np.random.default_rng(i)])[0]) for i in range(3000)]
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 3000, p, atol=0.03)
    assert agent.act(obs)[0] == logits.argmax()


# ----- DQN ----------------------------------------------------------------------------------------
def test_huber_matches_torch_values_and_gradients():
    d = np.array([-3.0, -1.0, -0.4, 0.0, 0.2, 0.99, 1.7, 5.0])
    for delta in (1.0, 0.5, 2.0):
        ours = sg.Tensor(d.copy(), requires_grad=True)
        rl.huber(ours, delta).sum().backward()
        theirs = to_torch(d)
        F.huber_loss(theirs, torch.zeros(len(d)), reduction="none", delta=delta).sum().backward()
        assert_close(
            rl.huber(sg.Tensor(d), delta).data,
            F.huber_loss(torch.tensor(d), torch.zeros(len(d)), reduction="none", delta=delta),
        )
        assert_close(ours.grad, theirs.grad)


def dqn_batch(seed=0, n=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = {
        "actions": rng.integers(0, 3, n),
        "rewards": rng.uniform(-1, 1, n),
        "next_obs": rng.normal(size=(n, 4)),
        "terminated": np.array([False, True] * (n // 2)),
        "episode_returns": np.zeros(0),
    }
    return x, y


def detuned_dqn(double, **kw):
    """A float64 DQN whose online network no longer equals its target."""
    agent = built(
        rl.DQN(3, hidden=(5,), gamma=0.9, double=double, dtype="float64", **kw),
        optimizer=optim.SGD(learning_rate=1.0),
    )
    rng = np.random.default_rng(7)
    for p in agent.q_net.parameters():
        p.data += rng.normal(scale=0.5, size=p.shape)
    return agent


def test_dqn_targets_vanilla_and_double_by_hand():
    x, y = dqn_batch()
    for double in (False, True):
        agent = detuned_dqn(double)
        q_next = agent.q_net(y["next_obs"]).data
        qt_next = agent.target_net(y["next_obs"]).data
        rows = np.arange(len(x))
        future = qt_next[rows, q_next.argmax(1)] if double else qt_next.max(1)
        expected = y["rewards"] + 0.9 * (1 - y["terminated"]) * future
        np.testing.assert_allclose(agent.td_targets(y), expected, rtol=1e-12)
        # Terminated transitions do not bootstrap: their target is the reward alone.
        np.testing.assert_allclose(agent.td_targets(y)[1::2], y["rewards"][1::2])
    assert not np.allclose(detuned_dqn(True).td_targets(y), detuned_dqn(False).td_targets(y))


@pytest.mark.parametrize("double", [False, True])
def test_dqn_step_matches_torch(double):
    agent = detuned_dqn(double)
    x, y = dqn_batch()
    layers, q = torch_mlp(agent.q_net)
    _, q_target = torch_mlp(agent.target_net)
    with torch.no_grad():
        nxt = torch.tensor(y["next_obs"])
        qt = q_target(nxt)
        a_star = q(nxt).argmax(1) if double else qt.argmax(1)
        future = qt.gather(1, a_star[:, None])[:, 0]
        target = (
            torch.tensor(y["rewards"]) + 0.9 * (1 - torch.tensor(y["terminated"]).double()) * future
        )
    q_sa = q(torch.tensor(x)).gather(1, torch.tensor(y["actions"])[:, None])[:, 0]
    loss = F.huber_loss(q_sa, target, delta=1.0)
    loss.backward()
    target_before = weights_of(agent.target_net)
    logs = agent.train_step(x, y)
    assert_close(logs["loss"], loss.item(), rtol=1e-10)
    for a, b in zip(weights_of(agent.q_net), after_sgd_step(layers)):
        assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(weights_of(agent.target_net), target_before):  # not trained, not copied
        np.testing.assert_array_equal(a, b)


def test_target_network_copies_only_when_scheduled():
    agent = built(rl.DQN(2, hidden=(8,), target_update=3), optimizer=optim.SGD(learning_rate=0.1))
    assert all(not p.requires_grad for p in agent.target_net.weights)
    assert not set(map(id, agent.target_net.weights)) & set(map(id, agent.parameters()))
    for a, b in zip(weights_of(agent.target_net), weights_of(agent.q_net)):
        np.testing.assert_array_equal(a, b)  # equal when built
    initial = weights_of(agent.target_net)
    x, y = dqn_batch(n=8)
    y["actions"] = y["actions"] % 2
    for update in range(1, 8):
        agent.train_step(x.astype(np.float32), y)
        expected = weights_of(agent.q_net) if update % 3 == 0 else initial
        for a, b in zip(weights_of(agent.target_net), expected):
            np.testing.assert_array_equal(a, b)
        if update % 3 == 0:
            initial = weights_of(agent.q_net)
        else:
            assert not np.array_equal(weights_of(agent.q_net)[0], initial[0])


def test_epsilon_greedy_explores_at_rate_epsilon():
    agent = built(rl.DQN(4, hidden=(4,)))
    obs = np.zeros((1, 4), np.float32)
    greedy = int(agent.act(obs)[0])
    rng = np.random.default_rng(0)
    picks = np.array([agent.act(obs, [rng], epsilon=0.3)[0] for _ in range(4000)])
    # random actions 30 % of the time, each of the 4 equally likely: 0.7 + 0.3/4 greedy
    assert abs(np.mean(picks == greedy) - 0.775) < 0.03
    assert all(agent.act(obs, [rng], epsilon=0.0)[0] == greedy for _ in range(50))
    collector = rl.rollout.StepCollector(
        ENV, 0, epsilon_start=1.0, epsilon_end=0.1, exploration_steps=100
    )
    assert [collector.epsilon(t) for t in (0, 50, 100, 500)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


# ----- replay buffer ------------------------------------------------------------------------------
def transitions(first, n, d=2):
    ids = np.arange(first, first + n)
    return (
        np.repeat(ids[:, None], d, axis=1).astype(np.float32),
        ids,
        ids.astype(np.float64),
        -np.repeat(ids[:, None], d, axis=1).astype(np.float32),
        ids % 2 == 0,
    )


def test_replay_buffer_keeps_the_last_capacity_transitions():
    buf = rl.ReplayBuffer(5, 2)
    buf.add(*transitions(0, 3))
    assert len(buf) == 3
    assert sorted(buf.actions[: len(buf)]) == [0, 1, 2]
    buf.add(*transitions(3, 4))  # 7 in all: 0 and 1 are overwritten
    assert len(buf) == 5 and buf.added == 7
    assert sorted(buf.actions) == [2, 3, 4, 5, 6]
    buf.add(*transitions(7, 12))  # more than the capacity at once: the last 5 survive
    assert sorted(buf.actions) == [14, 15, 16, 17, 18] and buf.added == 19
    # each stored transition's fields still belong together
    np.testing.assert_array_equal(buf.obs[:, 0], buf.actions)
    np.testing.assert_array_equal(buf.next_obs[:, 0], -buf.actions)
    np.testing.assert_array_equal(buf.terminated, buf.actions % 2 == 0)
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        rl.ReplayBuffer(0, 2)


def test_replay_buffer_samples_uniformly_with_replacement_from_what_it_holds():
    buf = rl.ReplayBuffer(100, 2)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4, np.random.default_rng(0))
    buf.add(*transitions(0, 10))
    sample = buf.sample(20_000, np.random.default_rng(0))
    counts = np.bincount(sample["actions"], minlength=10)
    assert set(sample["actions"]) == set(range(10))  # only stored ones, all of them
    assert counts.min() > 1800 and counts.max() < 2200  # uniform: 2,000 each
    small = buf.sample(8, np.random.default_rng(3))
    again = buf.sample(8, np.random.default_rng(3))
    for field in small:
        np.testing.assert_array_equal(small[field], again[field])
    np.testing.assert_array_equal(small["obs"][:, 0], small["actions"])
    assert len(np.unique(buf.sample(50, np.random.default_rng(1))["actions"])) <= 10  # repeats


def test_learning_starts_after_the_buffer_holds_enough():
    agent = built(rl.DQN(2, hidden=(8,)))
    source = rl.ReplayBatches(
        agent, ENV, batch_size=16, steps_per_epoch=100, train_freq=4, learning_starts=40, seed=0
    )
    batches = list(source.batches(0))
    assert len(source) == 25 and len(batches) == 25 - 9  # 40 steps (10 units) first
    assert source.buffer.added == 100
    x, y = batches[0]
    assert x.shape == (16, 4) and set(y) >= {"actions", "rewards", "next_obs", "terminated"}


# ----- environments -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env_id, words",
    [
        ("NoSuchEnv-v0", ["unknown gymnasium environment 'NoSuchEnv-v0'", "CartPole-v1"]),
        ("Pendulum-v1", ["continuous actions", "Discrete(n)", "Acrobot-v1"]),
        ("FrozenLake-v1", ["observes Discrete(16), not a vector", "1-D vector"]),
        ("", ["gymnasium id"]),
    ],
)
def test_unsupported_environments_are_one_line_errors(env_id, words):
    with pytest.raises(rl.UnsupportedEnvironment) as err:
        rl.describe(env_id)
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_image_observations_are_refused():
    from gymnasium import spaces

    with pytest.raises(rl.UnsupportedEnvironment, match=r"observes images of shape \(8, 8, 3\)"):
        rl.env.check_spaces(
            "Pixels-v0", spaces.Box(0, 255, (8, 8, 3), np.uint8), spaces.Discrete(2)
        )


def test_other_discrete_vector_environments_work_unchanged():
    for env_id, obs, actions in (("Acrobot-v1", 6, 3), ("MountainCar-v0", 2, 3)):
        data = cartpole_pg.load_data(quick=True, seed=0, env=env_id)
        assert (data.info.obs_size, data.info.n_actions) == (obs, actions)
        agent = cartpole_pg.build_model(1e-3, data)
        source = rl.EpisodeBatches(agent, env_id, episodes=1, batches=1, seed=0)
        x, y = next(iter(source.batches(0)))
        assert x.shape[1] == obs and y["actions"].max() < actions
        assert agent.train_step(x, y)["loss"] == pytest.approx(
            agent.train_step(x, y)["loss"], abs=1
        )


# ----- episodes, seeds, reproducibility -----------------------------------------------------------
def test_episodes_do_not_depend_on_what_ran_beside_them():
    agent = built(rl.Reinforce(2))
    collector = rl.rollout.EpisodeCollector(ENV, seed=3, obs_size=4)
    together = collector.collect(agent, [4, 5, 6])
    alone = [collector.collect(agent, [k]) for k in (4, 5, 6)]
    for field in ("obs", "actions", "rewards", "lengths", "terminated"):
        np.testing.assert_array_equal(together[field], np.concatenate([a[field] for a in alone]))


@pytest.mark.parametrize("module", [cartpole_pg, cartpole_dqn])
def test_seeded_runs_are_reproducible(module):
    def run(seed):
        sg.seed(seed)
        settings = recipes.settings_for(module, quick=True)
        data = module.load_data(quick=True, seed=seed)
        agent = module.build_model(settings["learning_rate"], data)
        history = agent.fit(module.batches(data, settings), epochs=settings["epochs"], verbose=0)
        return agent.get_weights(), history.history, data.source.episode_returns

    w1, h1, r1 = run(3)
    w2, h2, r2 = run(3)
    w3, _, r3 = run(4)
    assert h1 == h2 and r1 == r2
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w3)) and r1 != r3


def test_agents_save_and_load_with_their_target_network(tmp_path):
    agent = built(rl.DQN(2, hidden=(6,), target_update=7, double=False))
    for p in agent.q_net.parameters():
        p.data += 1.0  # online ≠ target, so the target's own weights must come back
    agent.save(tmp_path / "dqn")
    again = sg.load_model(tmp_path / "dqn")
    assert type(again) is rl.DQN and again.get_config() == agent.get_config()
    for a, b in zip(again.get_weights(), agent.get_weights()):
        np.testing.assert_array_equal(a, b)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(again.act(obs), agent.act(obs))
    pg = built(rl.Reinforce(2, baseline=True))
    pg.save(tmp_path / "pg")
    assert sg.load_model(tmp_path / "pg").get_config() == pg.get_config()


# ----- the recipes and `play` through the command line --------------------------------------------
@pytest.mark.parametrize("name", ["cartpole-pg", "cartpole-dqn"])
def test_quick_recipe_trains_saves_evaluates_and_plays(rl_cli, name, tmp_path, capsys):
    out = tmp_path / name
    assert rl_cli.main(["train", name, "--quick", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean_return" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["episodes"] == 5 and metrics["mean_return"] >= 8
    png = (out / "rewards.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "return" in json.loads((out / "history.json").read_text())
    assert rl_cli.main(["evaluate", str(out)]) == 0
    assert f"{metrics['mean_return']:.4f}" in capsys.readouterr().out
    gif = tmp_path / "episode.gif"
    assert rl_cli.main(["play", str(out), "--episodes", "3", "--gif", str(gif)]) == 0
    printed = capsys.readouterr().out
    assert "CartPole-v1: mean return" in printed and "3 episode(s)" in printed
    from PIL import Image

    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames > 5 and image.size == (600, 400)


def test_env_flag_and_play_mistakes_are_one_line(rl_cli, tmp_path, capsys):
    args = ["train", "cartpole-pg", "--quick", "--quiet", "--out", str(tmp_path / "x")]
    assert rl_cli.main([*args, "--env", "Pendulum-v1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "continuous actions" in err
    args = ["train", "cartpole-dqn", "--quick", "--env", "Nope-v9", "--out", str(tmp_path / "y")]
    assert rl_cli.main(args) == 2
    assert "unknown gymnasium environment 'Nope-v9'" in capsys.readouterr().err
    plain = sg.nn.Sequential([sg.nn.Dense(1)])
    plain(np.zeros((1, 3), np.float32))
    plain.save(tmp_path / "plain")
    assert rl_cli.main(["play", str(tmp_path / "plain")]) == 2
    assert "not an agent" in capsys.readouterr().err
    assert rl_cli.main(["play", str(tmp_path / "missing")]) == 2
    assert rl_cli.main(["play", str(tmp_path / "plain"), "--episodes", "0"]) == 2


def test_train_with_another_environment(rl_cli, tmp_path, capsys):
    out = tmp_path / "mountain-car"
    args = ["train", "cartpole-pg", "--quick", "--quiet", "--env", "MountainCar-v0", "--out"]
    assert rl_cli.main([*args, str(out)]) == 0
    assert rl_cli.main(["play", str(out), "--episodes", "1"]) == 0
    assert "MountainCar-v0: mean return -200.00" in capsys.readouterr().out


# ----- the acting way -----------------------------------------------------------------------------
def trained(module, way=None, seed=0):
    sg.seed(seed)
    settings = recipes.settings_for(module, quick=True)
    data = module.load_data(quick=True, seed=seed)
    agent = module.build_model(settings["learning_rate"], data)
    history = agent.fit(
        module.batches(data, settings), epochs=settings["epochs"], verbose=0, way=way
    )
    return agent, history, data.source


@pytest.mark.parametrize("module", [cartpole_pg, cartpole_dqn])
def test_one_actor_without_lag_is_the_single_process_run(module):
    alone, h0, s0 = trained(module)
    way = Acting(actors=1, places=Inline())
    split, h1, s1 = trained(module, way)
    assert h0.history == h1.history and s0.episode_returns == s1.episode_returns
    for a, b in zip(alone.get_weights(), split.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert way.expectation(split)[0]
    t = h1.traffic
    assert t["total_bytes"] == t["textbook_bytes"] and t["updates"] > 0
    assert set(t["bytes"]) == {"weights", "trajectories"}
    assert t["by_boundary"]["learner->actor0"] == t["bytes"]["weights"]


def test_several_actors_with_lag_count_what_crossed():
    way = Acting(actors=3, lag=2)
    agent, history, source = trained(cartpole_pg, way)
    t = history.traffic
    assert t["actors"] == 3 and t["lag"] == 2 and t["total_bytes"] == t["textbook_bytes"]
    # REINFORCE: each batch's episodes are shared out, so all of them are played once.
    settings = recipes.settings_for(cartpole_pg, quick=True)
    episodes = settings["epochs"] * settings["batches"] * settings["batch_size"]
    assert t["episodes"] == episodes == len(source.episode_returns)
    steps = sum(source.episode_returns)  # CartPole: reward 1 per step
    assert t["bytes"]["trajectories"] == steps * (4 * 4 + 16) + episodes * 9
    # Weights: the installed copy, then every new version to all 3 actors. The first lag + 1
    # units went out with the initial weights; each later one follows an update.
    units = settings["epochs"] * settings["batches"]
    assert t["updates"] == units
    p = sum(w.size for w in agent.parameters())
    assert t["messages"]["weights"] == 3 * (1 + units - 3)
    assert t["bytes"]["weights"] == 3 * (1 + units - 3) * p * 4
    assert not way.expectation(agent)[0]
    alone, _, _ = trained(cartpole_pg)
    assert not all(np.array_equal(a, b) for a, b in zip(alone.get_weights(), agent.get_weights()))


def test_acting_needs_experience_and_is_a_way_on_the_command_line(
    rl_cli, acting_registered, tmp_path, capsys
):
    model = sg.nn.Sequential([sg.nn.Dense(2)])
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="needs a batch source of experience"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), way=Acting(2), verbose=0)
    out = tmp_path / "acting"
    args = ["train", "cartpole-pg", "--quick", "--quiet", "--out", str(out), "--way", "acting"]
    assert rl_cli.main([*args, "--places", "2", "--way-option", "lag=1"]) == 0
    printed = capsys.readouterr().out
    assert "acting:" in printed and "trajectories" in printed and "textbook" in printed
    assert rl_cli.main(["ways"]) == 0
    assert "acting" in capsys.readouterr().out
    with pytest.raises(ValueError, match="has no option 'bogus'"):
        WAYS["acting"].from_options(2, {"bogus": 1})


@pytest.mark.ray
@pytest.mark.parametrize("module", [cartpole_pg, cartpole_dqn])
def test_actors_on_ray_equal_actors_inline(ray_places, module):
    inline, h0, _ = trained(module, Acting(actors=2, lag=1, places=Inline()))
    remote, h1, _ = trained(module, Acting(actors=2, lag=1, places=ray_places))
    assert h0.history == h1.history
    for a, b in zip(inline.get_weights(), remote.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h0.traffic["bytes"] == h1.traffic["bytes"]


# ----- full size (slow) ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["cartpole-pg", "cartpole-dqn"])
def test_cartpole_is_solved(name, tmp_path, monkeypatch):
    result = recipes.train(name, out=tmp_path / name, verbose=0)
    assert result["metrics"]["episodes"] == 100
    assert result["metrics"]["mean_return"] >= 475, result["metrics"]


# ----- resuming from a checkpoint ---------------------------------------------------------------
def _same_agent(a, b):
    for (key, p), q in zip(a.named_weights().items(), b.weights):
        assert np.array_equal(p.data, q.data), key
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["step"] == sb["step"] and sa["state"].keys() == sb["state"].keys()
    for key in sa["state"]:
        assert np.array_equal(sa["state"][key], sb["state"][key]), key


@pytest.mark.parametrize("kind", ["dqn", "reinforce-baseline"])
def test_agent_saved_loaded_and_trained_on_equals_training_straight(tmp_path, kind):
    """k updates, save, load, m more == k + m straight, bit for bit. DQN's target network is
    weights (saved), and its copy schedule counts the optimizer's steps (saved with it), so
    the copy after update 6 happens in the resumed run too (k = 4, target_update = 3).
    REINFORCE's baseline has no optimizer of its own: the one optimizer trains both networks."""

    def make():
        sg.seed(0)
        if kind == "dqn":
            agent = rl.DQN(3, hidden=(5,), target_update=3, dtype="float64")
        else:
            agent = rl.Reinforce(2, hidden=(5,), baseline=True, dtype="float64")
        return built(agent, optimizer=optim.Adam(learning_rate=0.05))

    batches = [dqn_batch(seed=s) if kind == "dqn" else reinforce_batch(seed=s) for s in range(8)]
    straight = make()
    for x, y in batches:
        straight.train_step(x, y)
    first = make()
    if kind != "dqn":
        trained = {id(p) for p in first.optimizer_parameters()}
        assert {id(p) for p in first.value.parameters()} <= trained
    for x, y in batches[:4]:
        first.train_step(x, y)
    first.save(tmp_path / "agent")
    resumed = sg.load_model(tmp_path / "agent")
    for x, y in batches[4:]:
        resumed.train_step(x, y)
    _same_agent(straight, resumed)
    if kind == "dqn":
        assert resumed.updates == 8
        for a, b in zip(weights_of(resumed.target_net), weights_of(straight.target_net)):
            np.testing.assert_array_equal(a, b)
