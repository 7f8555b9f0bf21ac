"""Playing an environment with an agent: whole episodes in lockstep, or steps of one continuing
episode. The collectors here are what an actor runs, in this process or at another place.

    runner = EpisodeRunner("CartPole-v1")
    episodes = runner.play(agent, env_seeds)             # greedy; rngs=... samples (explores)

* `EpisodeRunner.play` runs several episodes at once, one batched forward pass per step for all
  that are still going; each episode has its own environment seed and its own action stream,
  so an episode's steps do not depend on which others ran beside it.
* `EpisodeCollector` (REINFORCE) plays numbered episodes of a run and returns them laid end
  to end: obs (T, d) float32, actions (T,), rewards (T,), lengths (E,), terminated (E,).
* `StepCollector` (DQN) acts ε-greedily for a number of steps in one environment that carries
  on between calls, and returns the transitions (s, a, r, s', terminated) and the returns of
  the episodes that ended. ε falls linearly from `epsilon_start` to `epsilon_end` over the first
  `exploration_steps` steps of the run (counted over all actors).

Every collector is built from plain keyword arguments (`actor_spec` of a batch source), so
the same one can be built inside a Ray actor.
"""

from __future__ import annotations

import numpy as np

from .env import episode_seed, make_env

TRAIN, VALIDATION, TEST = 0, 1, 2  # the episode streams of a run (their seeds never overlap)
_ACTION_TAG = 0xAC7


def action_rng(seed: int, *key) -> np.random.Generator:
    """The action-sampling stream of episode (or actor) `key` of a run."""
    return np.random.default_rng([int(seed), _ACTION_TAG, *(int(k) for k in key)])


class EpisodeRunner:
    """Plays episodes of `env_id` in lockstep; keeps its environments between calls."""

    def __init__(self, env_id: str, render: bool = False):
        self.env_id, self.render = env_id, render
        self.envs = []

    def _envs(self, n):
        while len(self.envs) < n:
            self.envs.append(
                make_env(self.env_id, render_mode="rgb_array" if self.render else None)
            )
        return self.envs[:n]

    def play(self, agent, env_seeds, rngs=None, frames=False) -> list:
        """One dict per episode: obs, actions, rewards, terminated (bool: ended by the task, not
        by the time limit) and, with `frames`, the rendered rgb frames. `rngs` (one generator
        per episode) makes the agent sample its actions; without them it acts greedily."""
        envs = self._envs(len(env_seeds))
        obs = [
            np.asarray(env.reset(seed=int(s))[0], dtype=np.float32)
            for env, s in zip(envs, env_seeds)
        ]
        runs = [{"obs": [], "actions": [], "rewards": [], "frames": []} for _ in envs]
        done = [False] * len(envs)
        while not all(done):
            live = [i for i, d in enumerate(done) if not d]
            batch = np.stack([obs[i] for i in live])
            acts = agent.act(batch, None if rngs is None else [rngs[i] for i in live])
            for i, a in zip(live, acts):
                run = runs[i]
                if frames:
                    run["frames"].append(envs[i].render())
                nxt, reward, terminated, truncated, _ = envs[i].step(int(a))
                run["obs"].append(obs[i])
                run["actions"].append(int(a))
                run["rewards"].append(float(reward))
                obs[i] = np.asarray(nxt, dtype=np.float32)
                if terminated or truncated:
                    done[i] = True
                    run["terminated"] = bool(terminated)
                    if frames:
                        run["frames"].append(envs[i].render())
        return [
            {
                "obs": np.stack(r["obs"]),
                "actions": np.asarray(r["actions"], dtype=np.int64),
                "rewards": np.asarray(r["rewards"], dtype=np.float64),
                "terminated": r["terminated"],
                **({"frames": r["frames"]} if frames else {}),
            }
            for r in runs
        ]

    def close(self):
        for env in self.envs:
            env.close()
        self.envs = []


def lay_end_to_end(episodes, obs_size: int) -> dict:
    """Episodes (dicts from `play`) as one batch of trajectories."""
    return {
        "obs": np.concatenate(
            [e["obs"] for e in episodes] or [np.zeros((0, obs_size), np.float32)]
        ),
        "actions": np.concatenate([e["actions"] for e in episodes] or [np.zeros(0, np.int64)]),
        "rewards": np.concatenate([e["rewards"] for e in episodes] or [np.zeros(0)]),
        "lengths": np.asarray([len(e["actions"]) for e in episodes], dtype=np.int64),
        "terminated": np.asarray([e["terminated"] for e in episodes], dtype=bool),
    }


class EpisodeCollector:
    """Plays numbered training episodes of a run (REINFORCE's experience): episode k starts
    from `episode_seed(seed, TRAIN, k)` and samples its actions from `action_rng(seed, k)`."""

    def __init__(self, env_id: str, seed: int, obs_size: int):
        self.seed, self.obs_size = int(seed), int(obs_size)
        self.runner = EpisodeRunner(env_id)

    def collect(self, agent, episodes) -> dict:
        episodes = [int(k) for k in episodes]
        played = self.runner.play(
            agent,
            [episode_seed(self.seed, TRAIN, k) for k in episodes],
            rngs=[action_rng(self.seed, TRAIN, k) for k in episodes],
        )
        return lay_end_to_end(played, self.obs_size)


class StepCollector:
    """Acts ε-greedily in one continuing environment (DQN's experience); actor `rank` has its
    own environment, episode seeds and action stream."""

    def __init__(
        self,
        env_id: str,
        seed: int,
        rank: int = 0,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        exploration_steps: int = 10_000,
    ):
        self.seed, self.rank = int(seed), int(rank)
        self.epsilon_start, self.epsilon_end = float(epsilon_start), float(epsilon_end)
        self.exploration_steps = int(exploration_steps)
        self.env = make_env(env_id)
        self.rng = action_rng(self.seed, TRAIN, self.rank)
        self.obs, self.episodes, self.running = None, 0, 0.0

    def epsilon(self, step: int) -> float:
        """ε at step `step` of the run: linear from start to end, then constant."""
        if self.exploration_steps <= 0:
            return self.epsilon_end
        frac = min(1.0, step / self.exploration_steps)
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)

    def collect(self, agent, unit) -> dict:
        """Act for `unit` = (first step number of the run, number of steps)."""
        start, steps = (int(v) for v in unit)
        d = self.env.observation_space.shape[0]
        obs = np.zeros((steps, d), np.float32)
        nxt = np.zeros((steps, d), np.float32)
        actions = np.zeros(steps, np.int64)
        rewards = np.zeros(steps, np.float64)
        terminated = np.zeros(steps, bool)
        finished = []
        for i in range(steps):
            if self.obs is None:
                seed = episode_seed(self.seed, TRAIN, self.rank, self.episodes)
                self.obs = np.asarray(self.env.reset(seed=seed)[0], dtype=np.float32)
                self.running = 0.0
            a = int(agent.act(self.obs[None], [self.rng], epsilon=self.epsilon(start + i))[0])
            after, reward, term, trunc, _ = self.env.step(a)
            obs[i], actions[i], rewards[i], terminated[i] = self.obs, a, reward, term
            nxt[i] = after
            self.running += float(reward)
            if term or trunc:
                finished.append(self.running)
                self.obs, self.episodes = None, self.episodes + 1
            else:
                self.obs = nxt[i].copy()
        return {
            "obs": obs,
            "actions": actions,
            "rewards": rewards,
            "next_obs": nxt,
            "terminated": terminated,
            "finished": np.asarray(finished, dtype=np.float64),
        }
