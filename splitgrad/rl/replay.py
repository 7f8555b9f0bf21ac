"""A replay buffer: the last `capacity` transitions (s, a, r, s', terminated), sampled uniformly.

Storage is a ring: when full, each new transition overwrites the oldest. `sample(n, rng)`
draws n indices uniformly, with replacement, from the transitions stored so far (what DQN and
Stable-Baselines3 do), and returns copies.
"""

from __future__ import annotations

import numpy as np

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


class ReplayBuffer:
    """The last `capacity` transitions of vector observations of size `obs_size`."""

    def __init__(self, capacity: int, obs_size: int, dtype="float32"):
        if int(capacity) < 1:
            raise ValueError(f"ReplayBuffer: capacity must be a positive integer, got {capacity!r}")
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, int(obs_size)), dtype)
        self.next_obs = np.zeros((self.capacity, int(obs_size)), dtype)
        self.actions = np.zeros(self.capacity, np.int64)
        self.rewards = np.zeros(self.capacity, np.float64)
        self.terminated = np.zeros(self.capacity, bool)
        self.size = 0  # transitions stored (≤ capacity)
        self.next = 0  # where the next one goes
        self.added = 0  # transitions ever added

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminated):
        """Append a batch of transitions (arrays with one row per transition), oldest first."""
        n = len(actions)
        if n > self.capacity:  # only the last `capacity` would survive anyway
            cut = n - self.capacity
            obs, actions, rewards = obs[cut:], actions[cut:], rewards[cut:]
            next_obs, terminated = next_obs[cut:], terminated[cut:]
            self.added += cut
            n = self.capacity
        slots = (self.next + np.arange(n)) % self.capacity
        self.obs[slots], self.next_obs[slots] = obs, next_obs
        self.actions[slots], self.rewards[slots], self.terminated[slots] = (
            actions,
            rewards,
            terminated,
        )
        self.next = int((self.next + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)
        self.added += n

    def sample(self, n: int, rng: np.random.Generator) -> dict:
        """n transitions drawn uniformly with replacement: {field: array}."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty; add transitions first")
        idx = rng.integers(0, self.size, int(n))
        return {f: getattr(self, f)[idx] for f in FIELDS}
