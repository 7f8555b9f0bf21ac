"""#3 Local SGD / periodic averaging, and DiLoCo's outer optimizer.

Every worker trains its own replica on its shard of each global batch, and the replicas are
averaged (an all-reduce of the weights, allreduce.py, weighted by the samples each saw) every H
steps and at the end of each epoch. H = 1 with plain SGD = #1. DiLoCo (Douillard et al. 2023)
treats Δ = w_global − average as a gradient for an outer Nesterov-SGD step; outer lr 1,
momentum 0 = local SGD.
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from . import host as host_ops
from . import replicas
from .allreduce import AllReduce, assemble, ring_bytes, send
from .base import Way


# ----- place side ------------------------------------------------------------------------------
def setup(host, key, spec, x, y):
    """Install the replica; the global weights at the last averaging (DiLoCo's anchor) start
    as its own."""
    host_ops.setup(host, key, spec, x, y)
    slot = host.slots[key]
    slot.state["anchor"] = replicas.get_flat(slot.model)


def local_steps(host, key, indices, step, noise):
    """Place op: plain local training steps on this slot's rows; returns the mean loss."""
    slot = host.slots[key]
    with replicas.rng_scope(replicas.key_state(noise)):
        losses = [replicas.train_step(slot.model, slot.x[i], slot.y[i]) for i in indices]
    slot.step = step
    return float(np.mean(losses)) if losses else 0.0


def load_weights(host, jobs):
    """Place op, the all-reduce's producing call: vec = weight share · weights, sent out."""
    heads, outs = [], []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        slot.vec = replicas.get_flat(slot.model) * slot.cast(job["share"])
        pieces, sent = send(slot, job)
        outs.extend(pieces)
        heads.append({"sent": sent, "busy": time.perf_counter() - start})
    return heads, outs


def set_averaged(host, jobs, *chunks):
    """Place op: weights ← the all-reduced average; with `outer=(lr, momentum, nesterov)`
    DiLoCo's outer step instead: Δ = anchor − average, anchor ← anchor − lr·(Nesterov)
    momentum(Δ)."""
    heads = []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        avg = assemble(slot, job, chunks)
        if job["outer"] is not None:
            lr, mu, nesterov = job["outer"]
            anchor, momentum = slot.state["anchor"], slot.state.get("momentum")
            delta = anchor - avg
            momentum = delta if momentum is None else mu * momentum + delta
            update = delta + mu * momentum if nesterov else momentum
            avg = anchor - avg.dtype.type(lr) * update.astype(avg.dtype)
            slot.state["momentum"] = momentum
        replicas.set_flat(slot.model, avg)
        slot.state["anchor"] = replicas.get_flat(slot.model)
        slot.vec, slot.step = None, job["step"]
        heads.append({"sent": [], "busy": time.perf_counter() - start})
    return heads, []


# ----- driver side -----------------------------------------------------------------------------
class LocalSGD(Way):
    """Average weights every H local steps; bytes = 2(N−1)·P·itemsize per averaging."""

    name = "local-sgd"
    number, cut, crosses = 3, "the batch, in time", "weights every H steps"
    formula = "2(N-1)/N*P per H steps"
    checks = "H = 1 with SGD = #1; DiLoCo outer lr 1 = local SGD"
    options: ClassVar[dict] = {"H": 4}
    note = (
        "replicas take H=4 local optimizer steps on their shards between averagings; = #1 "
        "only with H=1 and plain SGD"
    )

    def __init__(self, workers: int = 2, H: int = 4, places=None):
        super().__init__(places)
        if int(workers) < 1 or int(H) < 1:
            raise ValueError(
                f"{type(self).__name__}: workers and H must be >= 1, got workers={workers}, H={H}"
            )
        self.workers, self.H = int(workers), int(H)
        self.outer = None

    def setup(self, run):
        self.install_replicas(run, setup)
        self._seen = np.zeros(self.workers)
        self._syncs = 0

    def step(self, run, step, index):
        shards = np.array_split(index, self.workers)
        ops = [
            self.places.submit(
                h,
                local_steps,
                key,
                [shard] if len(shard) else [],
                step,
                replicas.noise_key(run.noise_seed, rank, step),
            )
            for rank, ((h, key), shard) in enumerate(zip(self.slots(), shards))
        ]
        losses = run.gather(ops, [f"worker{r}" for r in range(self.workers)])
        self._seen += [len(s) for s in shards]
        if (step + 1) % self.H == 0:
            self._average(run, step)
        return float(sum(loss * len(s) for loss, s in zip(losses, shards)) / len(index))

    def _average(self, run, step):
        """One all-reduce of the weights, weighted by the samples each replica saw."""
        reduce = AllReduce(self.places, self.members(), self.workers, "weights")
        shares = self._seen / self._seen.sum()
        produced = {}
        for h, group in reduce.members.items():
            jobs = [
                {
                    "key": key,
                    "rank": rank,
                    "n": self.workers,
                    "tag": self._syncs,
                    "share": float(shares[rank]),
                }
                for rank, key in group
            ]
            produced[h] = self.places.submit_multi(
                h, load_weights, len(group) * reduce.outputs_per_worker(), jobs
            )
        reduce.run(run.traffic, produced, self._syncs)
        ops = []
        for h, group in reduce.members.items():
            chunks = []
            jobs = [
                {
                    "key": key,
                    "rank": rank,
                    "n": self.workers,
                    "step": step,
                    "pending": reduce.parts(rank, chunks),
                    "outer": self.outer,
                }
                for rank, key in group
            ]
            ops.append(self.places.submit_multi(h, set_averaged, 0, jobs, *chunks))
        for (h, group), heads in zip(reduce.members.items(), self.places.gather(ops)):
            for (rank, _), head in zip(group, heads):
                reduce.record(run.traffic, rank, head)
        self._seen[:] = 0
        self._syncs += 1

    def finish(self, run):
        if self._seen.sum():
            self._average(run, run.step - 1)
        h, key = self.slots()[0]
        replicas.adopt(
            run.model, self.places.gather([self.places.submit(h, host_ops.get_model, key)])[0]
        )

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return self._syncs * ring_bytes(n_params, self.workers, itemsize)

    def report(self, run):
        return {"workers": self.workers, "H": self.H, "averagings": self._syncs}


class DiLoCo(LocalSGD):
    """Local SGD whose averaging is an outer step: w ← w − lr·Nesterov(Δ), Δ = w − mean(w_r)."""

    name = "diloco"
    options: ClassVar[dict] = {"H": 4, "outer_lr": 0.7, "outer_momentum": 0.9}
    note = "local SGD whose averaging is an outer Nesterov step (lr 0.7, momentum 0.9)"

    def __init__(
        self,
        workers: int = 2,
        H: int = 4,
        outer_lr: float = 0.7,
        outer_momentum: float = 0.9,
        nesterov: bool = True,
        places=None,
    ):
        super().__init__(workers, H, places)
        self.outer = (float(outer_lr), float(outer_momentum), bool(nesterov))
