"""Batch sources of experience: what `Model.fit` trains an agent on.

    agent.fit(EpisodeBatches(agent, "CartPole-v1", episodes=4, batches=25, seed=0), epochs=20)

Both sources split the work the same way, so an actor at another place can do the acting
(splitgrad/split/acting.py) while the learner keeps the rest:

    plan(epoch)          the epoch's units of acting, in order (episode numbers, or step ranges)
    split(unit, n)       one unit cut into n parts, one per actor
    actor_spec(rank)     (collector class, keyword arguments): how an actor builds its collector
    merge(parts)         the actors' experience, put back together in order
    learn(experience)    the learner's side: a training batch (x, y) for `train_step`, or None
    batches(epoch)       all of it in this process: collect each unit, learn, yield the batch

* `EpisodeBatches` (on-policy, REINFORCE): each unit is `episodes` numbered episodes played
  with the agent's current weights; each becomes one batch.
* `ReplayBatches` (off-policy, DQN): each unit is `train_freq` ε-greedy steps (of every
  actor: n actors bring n times the experience); learning adds them to a replay buffer and,
  once it holds `learning_starts` transitions, samples one batch of `batch_size` from it (with
  the source's own generator).

Both keep `episode_returns`, the return of every training episode in the order learned (the
reward curve), and hand the new ones to the agent in y["episode_returns"].
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .replay import ReplayBuffer
from .rollout import EpisodeCollector, StepCollector

_REPLAY_TAG = 0x5A3


def _obs_size(agent) -> int:
    if not getattr(agent, "built", False):
        raise ValueError(
            f"{type(agent).__name__} is not built yet: call "
            "agent.build_from_sample(np.zeros((1, obs_size), 'float32')) before making its "
            "batch source (rl.describe(env_id).obs_size gives obs_size)"
        )
    return int(agent.input_shape[-1])


class EpisodeBatches:
    """Batches of `episodes` whole fresh episodes; an epoch is `batches` batches."""

    def __init__(self, agent, env_id: str, episodes: int = 4, batches: int = 10, seed: int = 0):
        self.agent, self.env_id, self.seed = agent, env_id, int(seed)
        self.episodes, self.per_epoch = int(episodes), int(batches)
        self.obs_size = _obs_size(agent)
        self.episode_returns = []
        self._collector = None

    def __len__(self) -> int:
        return self.per_epoch

    def plan(self, epoch: int) -> list:
        first = epoch * self.per_epoch * self.episodes
        return [
            np.arange(first + b * self.episodes, first + (b + 1) * self.episodes)
            for b in range(self.per_epoch)
        ]

    def split(self, unit, n: int) -> list:
        return np.array_split(unit, n)

    def actor_spec(self, rank: int):
        return EpisodeCollector, {
            "env_id": self.env_id,
            "seed": self.seed,
            "obs_size": self.obs_size,
        }

    def merge(self, parts) -> dict:
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def learn(self, experience):
        bounds = np.concatenate([[0], np.cumsum(experience["lengths"])])
        returns = [float(experience["rewards"][a:b].sum()) for a, b in itertools.pairwise(bounds)]
        self.episode_returns.extend(returns)
        y = {
            "actions": experience["actions"],
            "rewards": experience["rewards"],
            "lengths": experience["lengths"],
            "episode_returns": np.asarray(returns),
        }
        return experience["obs"], y

    def batches(self, epoch: int):
        if self._collector is None:
            cls, kwargs = self.actor_spec(0)
            self._collector = cls(**kwargs)
        for unit in self.plan(epoch):
            yield self.learn(self._collector.collect(self.agent, unit))

    def experience_bytes(self, steps: int, episodes: int) -> int:
        """What `collect` returns for that much experience: obs float32 ·d, action int64,
        reward float64 per step; length int64 and terminated flag per episode."""
        return steps * (4 * self.obs_size + 16) + episodes * 9

    @staticmethod
    def counts(experience) -> tuple:
        """(steps, episodes) in a piece of experience."""
        return len(experience["actions"]), len(experience["lengths"])


class ReplayBatches:
    """ε-greedy acting into a replay buffer, and batches sampled from it; an epoch is
    `steps_per_epoch` environment steps (one batch per `train_freq` steps once learning has
    started)."""

    def __init__(
        self,
        agent,
        env_id: str,
        batch_size: int = 64,
        buffer_size: int = 50_000,
        steps_per_epoch: int = 1000,
        train_freq: int = 1,
        learning_starts: int = 1000,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        exploration_steps: int = 10_000,
        seed: int = 0,
    ):
        self.agent, self.env_id, self.seed = agent, env_id, int(seed)
        self.obs_size = _obs_size(agent)
        self.batch_size, self.train_freq = int(batch_size), int(train_freq)
        self.steps_per_epoch, self.learning_starts = int(steps_per_epoch), int(learning_starts)
        self.exploration = {
            "epsilon_start": float(epsilon_start),
            "epsilon_end": float(epsilon_end),
            "exploration_steps": int(exploration_steps),
        }
        self.buffer = ReplayBuffer(buffer_size, self.obs_size, agent.dtype)
        self.rng = np.random.default_rng([self.seed, _REPLAY_TAG])
        self.episode_returns, self._pending = [], []
        self._collector = None

    def __len__(self) -> int:
        return math.ceil(self.steps_per_epoch / self.train_freq)

    def plan(self, epoch: int) -> list:
        first, end = epoch * self.steps_per_epoch, (epoch + 1) * self.steps_per_epoch
        return [(t, min(self.train_freq, end - t)) for t in range(first, end, self.train_freq)]

    def split(self, unit, n: int) -> list:
        # Every actor plays the unit's steps in its own environment (Ape-X): n actors bring
        # n times the experience per update, all at the unit's ε.
        return [unit] * n

    def actor_spec(self, rank: int):
        return StepCollector, {
            "env_id": self.env_id,
            "seed": self.seed,
            "rank": rank,
            **self.exploration,
        }

    def merge(self, parts) -> dict:
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def learn(self, experience):
        e = experience
        self.buffer.add(e["obs"], e["actions"], e["rewards"], e["next_obs"], e["terminated"])
        self.episode_returns.extend(float(r) for r in e["finished"])
        self._pending.extend(float(r) for r in e["finished"])
        if len(self.buffer) < max(self.learning_starts, 1):
            return None
        sample = self.buffer.sample(self.batch_size, self.rng)
        y = {k: sample[k] for k in ("actions", "rewards", "next_obs", "terminated")}
        y["episode_returns"], self._pending = np.asarray(self._pending), []
        return sample["obs"], y

    def batches(self, epoch: int):
        if self._collector is None:
            cls, kwargs = self.actor_spec(0)
            self._collector = cls(**kwargs)
        for unit in self.plan(epoch):
            batch = self.learn(self._collector.collect(self.agent, unit))
            if batch is not None:
                yield batch

    def experience_bytes(self, steps: int, episodes: int) -> int:
        """obs and next obs float32 ·d, action int64, reward float64, terminated flag per
        step; the return (float64) of each episode that ended."""
        return steps * (8 * self.obs_size + 17) + episodes * 8

    @staticmethod
    def counts(experience) -> tuple:
        """(steps, episodes that ended) in a piece of experience."""
        return len(experience["actions"]), len(experience["finished"])
