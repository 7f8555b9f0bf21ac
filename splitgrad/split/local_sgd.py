"""#3 Local SGD / periodic averaging, and DiLoCo's outer optimizer.

Every worker trains its own replica on its shard of each global batch and the replicas are
averaged (ring all-reduce of the weights, weighted by the samples each saw) every H steps and
at the end of each epoch. H = 1 with plain SGD = #1. DiLoCo (Douillard et al. 2023) treats
Δ = w_global − average as a gradient for an outer Nesterov-SGD step; outer lr 1, momentum 0 =
local SGD.
"""

from __future__ import annotations

import numpy as np

from . import ring, tools
from .base import Way


class LocalSGD(Way):
    """Average weights every H local steps; bytes = 2(N−1)·P·itemsize per averaging."""

    name = "local-sgd"

    def __init__(self, workers: int = 2, H: int = 4, places=None):
        super().__init__(places)
        if int(workers) < 1 or int(H) < 1:
            raise ValueError(f"{type(self).__name__}: workers and H must be >= 1, got "
                             f"workers={workers}, H={H}")
        self.workers, self.H = int(workers), int(H)
        self.outer = None

    def _setup(self, run):
        spec = self.places.put(tools.pack(run.model))
        x_ref, y_ref = run.data_refs()
        run.gather([self.places.submit(h, "setup", key, spec, x_ref, y_ref)
                    for h, key in self._slots()], [f"worker{r}" for r in range(self.workers)])
        self._seen = np.zeros(self.workers)
        self._syncs = 0

    def _step(self, run, step, index):
        shards = np.array_split(index, self.workers)
        ops = [self.places.submit(h, "local_steps", key, [shard] if len(shard) else [], step,
                                  tools.noise_key(run.noise_seed, rank, step))
               for rank, ((h, key), shard) in enumerate(zip(self._slots(), shards))]
        losses = run.gather(ops, [f"worker{r}" for r in range(self.workers)])
        self._seen += [len(s) for s in shards]
        if (step + 1) % self.H == 0:
            self._average(run, step)
        return float(sum(loss * len(s) for loss, s in zip(losses, shards)) / len(index))

    def _average(self, run, step):
        slots, n = self._slots(), self.workers
        weights = self._seen / self._seen.sum()
        loads = [self.places.submit(h, "load_weights", key, float(w))
                 for (h, key), w in zip(slots, weights)]
        ring_ops, ring_names, edges = ring.submit_ring(self.places, slots)
        sets = [self.places.submit(h, "set_averaged", key, step, ring.expected_receives(n),
                                   self.outer) for h, key in slots]
        names = [f"worker{r}" for r in range(n)]
        values = run.gather(loads + ring_ops + sets, names + ring_names + names)
        ring.record_ring(run.traffic, values[n:], edges, "weights")
        self._seen[:] = 0
        self._syncs += 1

    def _finish(self, run):
        from .data_parallel import adopt

        if self._seen.sum():
            self._average(run, run.step - 1)
        h, key = self._slots()[0]
        adopt(run.model, self.places.gather([self.places.submit(h, "get_model", key)])[0])

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return self._syncs * ring.ring_bytes(n_params, self.workers, itemsize)

    def _report(self, run):
        return {"workers": self.workers, "H": self.H, "averagings": self._syncs}


class DiLoCo(LocalSGD):
    """Local SGD whose averaging is an outer step: w ← w − lr·Nesterov(Δ), Δ = w − mean(w_r)."""

    name = "diloco"

    def __init__(self, workers: int = 2, H: int = 4, outer_lr: float = 0.7,
                 outer_momentum: float = 0.9, nesterov: bool = True, places=None):
        super().__init__(workers, H, places)
        self.outer = (float(outer_lr), float(outer_momentum), bool(nesterov))
