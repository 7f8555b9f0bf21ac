"""DQN (Mnih et al. 2015) with a target network and the Huber loss; double DQN (van Hasselt et
al. 2016) as an option.

    y      = r + γ·(1 − terminated)·Q_target(s', a*)
    a*     = argmax_a' Q(s', a')            (double=True: the online network chooses)
           = argmax_a' Q_target(s', a')     (double=False: y uses max_a' Q_target(s', a'))
    loss   = mean Huber_δ(Q(s, a) − y),  Huber_δ(d) = d²/2 if |d| ≤ δ else δ·(|d| − δ/2)

Only `terminated` (the task ended) stops the bootstrap; an episode cut by the time limit still
has a future. The target network's weights are not trainable; they copy the online weights
when the agent is built and after every `target_update` updates (gradient steps), and at no
other time. A batch is sampled transitions: x the observations, y {"actions", "rewards",
"next_obs", "terminated"} (and "episode_returns" for the `return` metric).
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..layers.layer import register
from ..losses import MeanSquaredError
from ..tensor import Tensor, no_grad
from .agent import Agent, mlp


def huber(d: Tensor, delta: float = 1.0) -> Tensor:
    """Elementwise Huber_δ(d), composed from |d| and min(|d|, δ) (PyTorch's huber_loss):
    with q = min(|d|, δ), Huber = q·(|d| − q/2), whose gradient is d inside δ and δ·sign(d)
    outside."""
    a = ops.abs(d)
    q = ops.clip(a, None, delta)
    return q * (a - q * a.dtype.type(0.5))


@register
class DQN(Agent):
    """Q(s, ·) = q_net(s); TD targets from a target network (see the module docstring)."""

    def __init__(
        self,
        n_actions,
        hidden=(64, 64),
        gamma=0.99,
        double=True,
        target_update=500,
        huber_delta=1.0,
        name=None,
        dtype="float32",
    ):
        super().__init__(n_actions, hidden, name=name, dtype=dtype)
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"DQN: gamma must be in [0, 1], got {gamma!r}")
        if int(target_update) < 1:
            raise ValueError(f"DQN: target_update must be >= 1 update, got {target_update!r}")
        self.gamma, self.double = float(gamma), bool(double)
        self.target_update, self.huber_delta = int(target_update), float(huber_delta)
        self.q_net = mlp(self.hidden, self.n_actions, dtype)
        self.target_net = mlp(self.hidden, self.n_actions, dtype, trainable=False)

    def default_loss(self):
        # The supervised view: regression of Q-values on given targets.
        return MeanSquaredError()

    def build(self, input_shape):
        self.q_net(np.zeros((1, *input_shape[1:]), self.dtype))
        self.target_net(np.zeros((1, *input_shape[1:]), self.dtype))
        self.sync_target()

    def call(self, x):
        return self.q_net(x)

    @property
    def updates(self) -> int:
        """Gradient steps taken: the optimizer's step count. A checkpoint saves it with the
        optimizer, so a resumed agent copies its target on the schedule of the run that saved
        it (a new compile starts the count again)."""
        return 0 if self.optimizer is None else int(self.optimizer.iterations)

    def sync_target(self):
        """Copy the online weights into the target network."""
        self.target_net.set_weights(self.q_net.get_weights())

    def act(self, obs, rngs=None, epsilon=0.0) -> np.ndarray:
        """argmax_a Q(s, a); with `rngs`, each row instead takes a uniformly random action with
        probability ε (one uniform draw per row always, so streams stay aligned)."""
        greedy = self.scores(obs).argmax(axis=1)
        if rngs is None:
            return greedy
        out = greedy.copy()
        for i, rng in enumerate(rngs):
            if rng.random() < epsilon:
                out[i] = rng.integers(self.n_actions)
        return out

    def td_targets(self, y) -> np.ndarray:
        """y = r + γ·(1 − terminated)·Q_target(s', a*), float64 (no gradient)."""
        nxt = np.asarray(y["next_obs"], dtype=self.dtype)
        with no_grad():
            q_target = np.asarray(self.target_net(nxt).data, dtype=np.float64)
            rows = np.arange(len(nxt))
            if self.double:
                choice = np.asarray(self.q_net(nxt).data).argmax(axis=1)
                future = q_target[rows, choice]
            else:
                future = q_target.max(axis=1)
        alive = 1.0 - np.asarray(y["terminated"], dtype=np.float64)
        return np.asarray(y["rewards"], dtype=np.float64) + self.gamma * alive * future

    def train_step(self, x, y) -> dict:
        """One gradient step on a batch of transitions; copies the target when scheduled."""
        if not self.training:
            self.train()
        opt = self.optimizer
        opt.zero_grad()
        target = Tensor(self.td_targets(y).astype(self.dtype))
        chosen = np.eye(self.n_actions, dtype=self.dtype)[np.asarray(y["actions"])]
        with self.threads():
            q_sa = (self(x) * Tensor(chosen)).sum(axis=1)
            loss = huber(q_sa - target, self.huber_delta).mean()
            loss.backward(into=opt.grad_buffers())
        opt.step()
        if self.updates % self.target_update == 0:
            self.sync_target()
        self.update_metrics(y)
        return {"loss": float(loss.data), **{m.name: m.result() for m in self.metrics}}

    def get_config(self):
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "double": self.double,
            "target_update": self.target_update,
            "huber_delta": self.huber_delta,
        }
