"""cartpole-pg: REINFORCE on CartPole-v1, MIT 6.S191's reinforcement-learning lab.

Dense 32 ReLU → Dense 2 logits; returns discounted with γ 0.95 and normalised over each batch
(docs/semantics.md); loss mean(CE(logits, action)·return); Adam. A batch is 4 fresh episodes
played by the current policy (`--batch-size` episodes), an epoch 10 batches. After each epoch
the greedy policy plays 100 validation episodes; training stops once their mean return reaches
the environment's solved mark (475 on CartPole-v1) and keeps the best weights. The lab's
learning rate is 1e-3; 2e-3 solves in about half the episodes (measured: 5 seeds, 400–1,760
episodes, 4–23 s). The test metric is the greedy mean return over 100 other episodes.

`--env` picks any gymnasium environment with discrete actions and a vector observation
(Acrobot-v1, MountainCar-v0). Quick mode: 3 epochs of 2 batches, 5 evaluation episodes.
`splitgrad play RUN` replays the trained policy (splitgrad/rl/play.py). The helpers below are
shared with cartpole-dqn.
"""

from __future__ import annotations

import types

import numpy as np

from splitgrad import optim, rl

DESCRIPTION = "REINFORCE, Dense 32 relu -> logits, on CartPole-v1 (--env for other gymnasium envs)"
DEFAULTS = {
    "epochs": 100,
    "batch_size": 4,  # episodes per batch (one update each)
    "learning_rate": 2e-3,
    "batches": 10,  # batches per epoch
    "validation_episodes": 100,
}
QUICK = {"epochs": 3, "batches": 2, "validation_episodes": 5}
TASK = "reinforcement"
DEFAULT_ENV = "CartPole-v1"
AGENT = {"hidden": [32], "gamma": 0.95, "normalize": True, "baseline": False}
EVAL_EPISODES, QUICK_EVAL_EPISODES = 100, 5


def load_data(quick=False, seed=0, env=None):
    """The environment (checked: discrete actions, vector observations) and the run's seed."""
    info = rl.describe(env or DEFAULT_ENV)
    return types.SimpleNamespace(
        env=info.env_id,
        info=info,
        seed=int(seed),
        eval_episodes=QUICK_EVAL_EPISODES if quick else EVAL_EPISODES,
        meta={"task": TASK},
        agent=None,  # the agent build_model makes: the batch source acts with it
        source=None,
        evaluator=None,
    )


def build_agent(cls, learning_rate, data, **config):
    """An agent of class `cls` for the data's environment, built and compiled with Adam (and
    kept as `data.agent`, the policy the batch source plays)."""
    agent = cls(data.info.n_actions, **config)
    agent.build_from_sample(np.zeros((1, data.info.obs_size), np.float32))
    agent.compile(optimizer=optim.Adam(learning_rate=learning_rate))
    data.agent = agent
    return agent


def build_model(learning_rate, data):
    return build_agent(rl.Reinforce, learning_rate, data, **AGENT)


def batches(data, settings):
    """Fresh episodes of the current policy (made once per run and kept on `data`)."""
    if data.source is None:
        data.source = rl.EpisodeBatches(
            data.agent, data.env, settings["batch_size"], settings["batches"], data.seed
        )
    return data.source


def fit_options(model, data, settings):
    return {"callbacks": [validation(data, settings, batches(data, settings))]}


def validation(data, settings, source):
    """The check after each epoch (kept as `data.evaluator`): the greedy mean return over the
    validation episodes; stop at the environment's solved mark, keep the best weights."""
    data.evaluator = rl.EvaluateReturn(
        data.env,
        episodes=settings["validation_episodes"],
        seed=data.seed,
        stop_at=data.info.reward_threshold,
        source=source,
    )
    return data.evaluator


def evaluate(model, data):
    """The greedy policy's returns over the test episodes."""
    return rl.evaluate_policy(model, data.env, data.eval_episodes, data.seed)


def attachments(model, data, history):
    """rewards.png: every training episode's return, the validation checks, the solved mark."""
    evaluations = data.evaluator.evaluations if data.evaluator is not None else ()
    returns = data.source.episode_returns if data.source is not None else []
    png = rl.plot_rewards(returns, evaluations, data.info.reward_threshold, title=data.env)
    return {"rewards.png": png}


def saved_extra(data):
    """The environment, so `splitgrad play` knows where to act."""
    return {"env": data.env}
