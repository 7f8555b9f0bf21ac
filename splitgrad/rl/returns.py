"""Discounted returns and their normalisation (docs/semantics.md, REINFORCE on CartPole).

G_t = r_t + γ·G_{t+1}, computed backwards from the last step (G_T = r_T), and reset at every
episode boundary of a batch of concatenated episodes;
normalised: (G − mean(G)) / std(G) over the whole batch (population std; a batch whose
returns are all equal has std 0 and gives zeros).
"""

from __future__ import annotations

import itertools

import numpy as np


def discounted_returns(rewards, gamma: float) -> np.ndarray:
    """G_t = r_t + γ·G_{t+1} for one episode's rewards (float64)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def batch_returns(rewards, lengths, gamma: float) -> np.ndarray:
    """Discounted returns of episodes laid end to end (`lengths` steps each)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.sum() != len(rewards):
        raise ValueError(
            f"batch_returns: the episode lengths add up to {int(lengths.sum())} steps but "
            f"there are {len(rewards)} rewards"
        )
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    parts = [discounted_returns(rewards[a:b], gamma) for a, b in itertools.pairwise(bounds)]
    return np.concatenate(parts) if parts else np.zeros(0)


def normalize(x) -> np.ndarray:
    """(x − mean(x)) / std(x); all-equal values (std 0) give zeros."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or np.all(x == x.flat[0]):
        return np.zeros_like(x)
    centred = x - x.mean()
    return centred / centred.std()
