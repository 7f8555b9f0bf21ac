"""#2 Asynchronous parameter server with a staleness bound (stale-synchronous parallel, SSP).

The server (this driver) holds the weights and the optimizer. In clock c every worker pulls
weights, computes (n_r/B)·∇loss on its shard of batch c and pushes it; the server applies each
push as its own optimizer step, in arrival order. Worker r reads weights that are δ_r =
min(s, r mod (s+1), c) clocks old — a fixed, reproducible schedule of "slow" workers that
never breaks the bound s. With 1 worker, δ = 0 (sequential SGD); with s = 0 and plain SGD the
N pushes of a clock add up to #1's step.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import numpy as np

from . import replicas
from .base import Way


# ----- place side ------------------------------------------------------------------------------
def push(host, key, index, scale, weights, noise):
    """Place op: pull `weights`, compute scale · ∇loss(rows `index`) with dropout drawn from the
    stream seeded by `noise`; returns (scale · loss, the gradient to push)."""
    slot = host.slots[key]
    replicas.set_flat(slot.model, weights)
    if len(index) == 0:
        return 0.0, np.zeros(replicas.count(slot.model), replicas.flat_dtype(slot.model))
    with replicas.rng_scope(replicas.key_state(noise)):
        loss = replicas.backward(slot.model, slot.x[index], slot.y[index])
    return loss * scale, replicas.get_flat_grad(slot.model) * slot.cast(scale)


# ----- driver side -----------------------------------------------------------------------------
class ParameterServer(Way):
    """Push gradients (P), pull weights (P) per worker per clock; staleness ≤ `staleness`."""

    name = "parameter-server"
    number, cut, crosses = 2, "the batch, in time", "gradients up, weights down"
    formula = "2P per worker/push"
    checks = "1 worker = SGD; staleness 0 = #1; each push once; staleness <= s"
    options: ClassVar[dict] = {"staleness": 1}
    note = (
        "each push is its own optimizer step on weights up to s=1 clocks old; = #1 only "
        "with s=0 and plain SGD"
    )

    def __init__(self, workers: int = 2, staleness: int = 1, places=None):
        super().__init__(places)
        if int(workers) < 1 or int(staleness) < 0:
            raise ValueError(
                f"ParameterServer: need workers >= 1 and staleness >= 0, got "
                f"workers={workers}, staleness={staleness}"
            )
        self.workers, self.staleness = int(workers), int(staleness)

    def setup(self, run):
        self.install_replicas(run)
        self._history = {-1: replicas.get_flat(run.model)}  # weights at the end of each clock
        self.pushes = []  # (worker, clock, staleness) in the order the server applied them

    def delay(self, rank: int, clock: int) -> int:
        return min(self.staleness, rank % (self.staleness + 1), clock)

    def step(self, run, clock, index):
        model, traffic = run.model, run.traffic
        shards = np.array_split(index, self.workers)
        ops, names = [], []
        for rank, ((h, key), shard) in enumerate(zip(self.slots(), shards)):
            pulled = self._history[clock - 1 - self.delay(rank, clock)]
            traffic.record("weights", "server", f"worker{rank}", payload=pulled)
            # One call per worker and clock: pull, gradient and push together.
            ops.append(
                self.places.submit(
                    h,
                    push,
                    key,
                    shard,
                    len(shard) / len(index),
                    self.places.put(pulled),
                    replicas.noise_key(run.noise_seed, rank, clock),
                )
            )
            names.append(f"worker{rank}")
        values = run.gather(ops, names)
        loss = 0.0
        for rank in range(self.workers):
            scaled_loss, grad = values[rank]
            traffic.record("gradients", f"worker{rank}", "server", payload=grad)
            replicas.optimizer_step(model, grad)
            self.pushes.append((rank, clock, self.delay(rank, clock)))
            loss += scaled_loss
        self._history[clock] = replicas.get_flat(model)
        self._history.pop(clock - self.staleness - 2, None)  # older weights are never read
        return float(loss)

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return 2 * n_params * itemsize * self.workers * steps

    def report(self, run):
        staleness = [s for _, _, s in self.pushes]
        applied = Counter((w, c) for w, c, _ in self.pushes)
        return {
            "workers": self.workers,
            "staleness_bound": self.staleness,
            "max_staleness": max(staleness, default=0),
            "staleness_histogram": dict(Counter(staleness)),
            "pushes_applied": len(self.pushes),
            "each_push_once": all(v == 1 for v in applied.values()),
        }
