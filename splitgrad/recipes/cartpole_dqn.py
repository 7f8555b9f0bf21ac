"""cartpole-dqn: double DQN with a replay buffer and a target network on CartPole-v1.

Q-network Dense 64 ReLU → Dense 64 ReLU → Dense 2; γ 0.99, Huber loss (δ 1), Adam 1e-3. The
agent acts ε-greedily (ε from 1 to 0.05 over the first 10,000 steps) into a replay buffer of
50,000 transitions; after 1,000 steps, every step is followed by one update on 64 transitions
sampled from it (`--batch-size`), and the target network copies the online one every 500
updates. An epoch is 1,000 environment steps. After each epoch the greedy policy plays 100
validation episodes; training stops at the solved mark (475 on CartPole-v1) and keeps the best
weights (measured: 4 seeds, 16–47 s, 17–47 epochs). The test metric is the greedy mean return
over 100 other episodes.

`--env` as in cartpole-pg. Quick mode: 2 epochs of 200 steps, learning after 100, batch 32.
"""

from __future__ import annotations

from splitgrad import rl
from splitgrad.recipes import cartpole_pg

DESCRIPTION = "double DQN, Dense 64-64 relu -> Q, replay + target net, on CartPole-v1 (--env)"
DEFAULTS = {
    "epochs": 100,
    "batch_size": 64,  # transitions per update, sampled from the replay buffer
    "learning_rate": 1e-3,
    "steps_per_epoch": 1000,
    "buffer_size": 50_000,
    "learning_starts": 1000,
    "train_freq": 1,  # environment steps per update
    "epsilon_start": 1.0,
    "epsilon_end": 0.05,
    "exploration_steps": 10_000,
    "validation_episodes": 100,
}
QUICK = {
    "epochs": 2,
    "batch_size": 32,
    "steps_per_epoch": 200,
    "learning_starts": 100,
    "exploration_steps": 300,
    "validation_episodes": 5,
}
TASK = "reinforcement"
AGENT = {"hidden": [64, 64], "gamma": 0.99, "double": True, "target_update": 500}

load_data = cartpole_pg.load_data
evaluate = cartpole_pg.evaluate
attachments = cartpole_pg.attachments
saved_extra = cartpole_pg.saved_extra


def build_model(learning_rate, data):
    return cartpole_pg.build_agent(rl.DQN, learning_rate, data, **AGENT)


def batches(data, settings):
    """ε-greedy steps into the replay buffer, and batches sampled from it (made once per run)."""
    if data.source is None:
        keys = (
            "batch_size",
            "buffer_size",
            "steps_per_epoch",
            "train_freq",
            "learning_starts",
            "epsilon_start",
            "epsilon_end",
            "exploration_steps",
        )
        data.source = rl.ReplayBatches(
            data.agent, data.env, seed=data.seed, **{k: settings[k] for k in keys}
        )
    return data.source


def fit_options(model, data, settings):
    return {"callbacks": [cartpole_pg.validation(data, settings, batches(data, settings))]}
