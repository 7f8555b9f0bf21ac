"""REINFORCE (Williams 1992), the policy gradient of MIT 6.S191's CartPole lab, optionally with
a learned baseline.

    G_t = r_t + γ·G_{t+1} per episode; Â = (G − mean G) / std G over the batch (normalize=True)
    loss = mean_t CE(logits_t, a_t) · A_t        with CE = −log π(a_t | s_t)
    A_t = Â_t, or with a baseline A_t = Â_t − V(s_t) (V not differentiated here), and
    loss += value_weight · mean_t (V(s_t) − Â_t)²  (the baseline learns to predict Â)

Descending this loss raises log π(a_t|s_t) in proportion to how much better than usual the
rest of the episode went. A batch is whole episodes laid end to end: x the observations, y
{"actions", "rewards", "lengths"} (and "episode_returns" for the `return` metric).
"""

from __future__ import annotations

import numpy as np

from ..layers.layer import register
from ..losses import SparseCategoricalCrossentropy, sparse_categorical_crossentropy
from ..tensor import Tensor
from .agent import Agent, mlp
from .returns import batch_returns, normalize


@register
class Reinforce(Agent):
    """π(a|s) = softmax(policy(s)); loss = mean CE(logits, a)·A (see the module docstring).

    MIT lab defaults: hidden (32,), γ 0.95, normalised returns, no baseline.
    """

    def __init__(
        self,
        n_actions,
        hidden=(32,),
        gamma=0.95,
        normalize=True,
        baseline=False,
        value_weight=0.5,
        name=None,
        dtype="float32",
    ):
        super().__init__(n_actions, hidden, name=name, dtype=dtype)
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"Reinforce: gamma must be in [0, 1], got {gamma!r}")
        self.gamma, self.normalize = float(gamma), bool(normalize)
        self.baseline, self.value_weight = bool(baseline), float(value_weight)
        self.policy = mlp(self.hidden, self.n_actions, dtype)
        if self.baseline:
            self.value = mlp(self.hidden, 1, dtype)

    def default_loss(self):
        # The supervised view: how well the policy predicts given actions (imitation).
        return SparseCategoricalCrossentropy(from_logits=True)

    def build(self, input_shape):
        if self.baseline:  # the value network is not on call()'s path: build it here
            self.value(np.zeros((1, *input_shape[1:]), self.dtype))

    def call(self, x):
        return self.policy(x)

    def act(self, obs, rngs=None, epsilon=0.0) -> np.ndarray:
        """Greedy (argmax) actions; with `rngs`, one action per row sampled from π(·|s)."""
        logits = self.scores(obs)
        if rngs is None:
            return logits.argmax(axis=1)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(z / z.sum(axis=1, keepdims=True), axis=1)
        draws = np.array([rng.random() for rng in rngs])
        picks = (cdf < draws[:, None]).sum(axis=1)
        return np.minimum(picks, self.n_actions - 1)

    def advantages(self, x, y) -> np.ndarray:
        """The (normalised) returns of the batch, float64 (before any baseline)."""
        returns = batch_returns(y["rewards"], y["lengths"], self.gamma)
        return normalize(returns) if self.normalize else returns

    def train_step(self, x, y) -> dict:
        """One update from a batch of whole episodes."""
        if not self.training:
            self.train()
        opt = self.optimizer
        opt.zero_grad()
        target = self.advantages(x, y).astype(self.dtype)
        with self.threads():
            logits = self(x)
            ce = sparse_categorical_crossentropy(
                y["actions"], logits, from_logits=True, reduction="none"
            )
            if self.baseline:
                v = self.value(x).reshape(-1)
                weight = Tensor(target - v.data)
                err = v - Tensor(target)
                loss = (ce * weight).mean() + (err * err).mean() * self.dtype.type(
                    self.value_weight
                )
            else:
                loss = (ce * Tensor(target)).mean()
            loss.backward(into=opt.grad_buffers())
        opt.step()
        self.update_metrics(y)
        return {"loss": float(loss.data), **{m.name: m.result() for m in self.metrics}}

    def get_config(self):
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "normalize": self.normalize,
            "baseline": self.baseline,
            "value_weight": self.value_weight,
        }
