"""How good a policy is: the mean return of greedy episodes, a callback that checks it during
training (and stops at the "solved" mark), and the reward curve.

    evaluate_policy(agent, "CartPole-v1", episodes=100, seed=0)   # {"mean_return": ..., ...}

Evaluation episodes act greedily (argmax) and come from the run's TEST stream of episode seeds;
the callback uses the VALIDATION stream, so stopping at the mark never peeks at the episodes
the final figure is measured on.
"""

from __future__ import annotations

import io

import numpy as np

from ..callbacks import Callback
from .env import episode_seed
from .rollout import TEST, VALIDATION, EpisodeRunner


def episode_returns(agent, runner, seed: int, stream: int, episodes: int) -> np.ndarray:
    """Returns of `episodes` greedy episodes from stream `stream` of the run seeded `seed`."""
    played = runner.play(agent, [episode_seed(seed, stream, k) for k in range(episodes)])
    return np.array([e["rewards"].sum() for e in played])


def evaluate_policy(agent, env_id: str, episodes: int = 100, seed: int = 0) -> dict:
    """Greedy returns over `episodes` test episodes: mean, std, min, max."""
    runner = EpisodeRunner(env_id)
    try:
        returns = episode_returns(agent, runner, seed, TEST, int(episodes))
    finally:
        runner.close()
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "episodes": float(len(returns)),
    }


class EvaluateReturn(Callback):
    """After every `every` epochs: the greedy mean return over `episodes` validation episodes.

    `stop_at`: stop training once that mean reaches it (e.g. the environment's solved mark).
    `restore_best_weights`: end with the weights that scored best (the last ones if it stopped
    at the mark). `evaluations` holds (epoch, training episodes so far, mean return) for the
    reward curve; the episodes are counted in `source.episode_returns` when a source is given.
    """

    def __init__(
        self,
        env_id,
        episodes=10,
        every=1,
        seed=0,
        stop_at=None,
        restore_best_weights=True,
        source=None,
        verbose=0,
    ):
        self.env_id, self.episodes, self.every, self.seed = env_id, int(episodes), int(every), seed
        self.stop_at, self.restore_best_weights, self.verbose = (
            stop_at,
            restore_best_weights,
            verbose,
        )
        self.source, self.evaluations = source, []
        self.best, self.best_weights = None, None
        self._runner = None

    def on_train_begin(self, logs=None):
        self._runner = EpisodeRunner(self.env_id)
        self.best, self.best_weights = None, None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        mean = float(
            episode_returns(self.model, self._runner, self.seed, VALIDATION, self.episodes).mean()
        )
        played = len(self.source.episode_returns) if self.source is not None else epoch + 1
        self.evaluations.append((epoch, played, mean))
        if self.verbose:
            print(f"epoch {epoch + 1}: greedy mean return {mean:.1f} over {self.episodes} episodes")
        if self.best is None or mean >= self.best:
            self.best = mean
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
        if self.stop_at is not None and mean >= self.stop_at:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        if self._runner is not None:
            self._runner.close()


def plot_rewards(episode_returns, evaluations=(), threshold=None, title="returns") -> bytes:
    """The reward curve as PNG bytes: each training episode's return with a moving mean of
    100, the greedy evaluations (EvaluateReturn.evaluations) and the solved mark."""
    from ..plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    returns = np.asarray(episode_returns, dtype=np.float64)
    episodes = np.arange(1, len(returns) + 1)
    if len(returns):
        ax.plot(episodes, returns, lw=0.6, alpha=0.45, label="training episode")
        window = min(100, len(returns))
        mean = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(episodes[window - 1 :], mean, lw=2, label=f"mean of the last {window}")
    if evaluations:
        xs, ys = [n for _, n, _ in evaluations], [m for _, _, m in evaluations]
        ax.plot(xs, ys, "o-", ms=3, label="greedy evaluation (validation episodes)")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"solved ({threshold:g})")
    ax.set_xlabel("training episode")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    return buf.getvalue()
