"""The base of the agents: a Model that acts, and learns from batches of experience in its own
`train_step`, so `Model.fit` (the one training loop) trains it like any model.

    agent.act(obs)                      # greedy actions for a batch of observations
    agent.act(obs, rngs, epsilon=0.1)   # exploring: one random generator per row

An agent is compiled like any model (`compile(optimizer)`; the loss is the agent's own
"supervised view", what `Model.evaluate(x, y)` measures) and saved with `model.save` /
`splitgrad.checkpoint` (it is `@register`ed; its networks are attributes, so their weights
have dotted names such as "policy.layers.0.kernel"). Its metric `return` is the mean return
of the episodes that ended in the epoch (the batches carry them as y["episode_returns"]).
"""

from __future__ import annotations

import numpy as np

from ..layers.core import Dense
from ..metrics import Metric
from ..model import Model, Sequential
from ..tensor import no_grad


def mlp(hidden, outputs: int, dtype="float32", trainable=True) -> Sequential:
    """Dense(h, relu) for each h in `hidden`, then Dense(outputs): the agents' networks.
    trainable=False makes weights that no optimizer moves (a target network)."""
    layers = [Dense(int(h), activation="relu", dtype=dtype) for h in hidden]
    layers.append(Dense(int(outputs), dtype=dtype))
    for layer in layers:
        layer.trainable = trainable  # read when the layer builds its weights
    return Sequential(layers, dtype=dtype)


class EpisodeReturn(Metric):
    """Mean return of the episodes reported in the epoch's batches (y["episode_returns"])."""

    name = "return"

    def update(self, y_true, y_pred=None):
        returns = y_true.get("episode_returns") if isinstance(y_true, dict) else None
        if returns is not None and len(returns):
            self.total += float(np.sum(returns))
            self.count += len(returns)


class Agent(Model):
    """A model over observations (N, obs_size) whose outputs score `n_actions` actions.

    Subclasses define `call` (the scores), `act`, `default_loss` and `train_step(x, y)`, where
    x holds observations and y a dict of the rest of the experience.
    """

    def __init__(self, n_actions, hidden=(32,), name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        if int(n_actions) < 1:
            raise ValueError(f"{type(self).__name__}: n_actions must be >= 1, got {n_actions!r}")
        self.n_actions = int(n_actions)
        self.hidden = [int(h) for h in hidden]

    def compile(self, optimizer="adam", loss=None, metrics=None):
        """Like Model.compile; the loss defaults to the agent's own (`default_loss`)."""
        super().compile(optimizer, loss if loss is not None else self.default_loss(), metrics)
        self.metrics = [*self.metrics, EpisodeReturn()]

    def default_loss(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, obs) -> np.ndarray:
        """The network's outputs for a batch of observations, without a graph (float64)."""
        with no_grad():
            return np.asarray(self(np.asarray(obs, dtype=self.dtype)).data, dtype=np.float64)

    def act(self, obs, rngs=None, epsilon=0.0) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_metrics(self, y):
        for m in self.metrics:
            if isinstance(m, EpisodeReturn):
                m.update(y)

    def get_config(self):
        return {**super().get_config(), "n_actions": self.n_actions, "hidden": self.hidden}
