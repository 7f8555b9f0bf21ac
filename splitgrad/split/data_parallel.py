"""#1 Synchronous data parallel: every worker holds a replica; gradients are all-reduced.

Each global batch B is cut into N shards; worker r computes (n_r/B)·∇loss on its shard, the
all-reduce (allreduce.py) sums the N vectors, and every replica takes the same optimizer step.
N workers with B/N each = one worker with B (allclose); replicas stay bitwise equal.

Each place makes one call per step for all its workers when N ≤ 2, two when N > 2: `grad`
applies the previous step's all-reduced gradient (folding the all-gather and the update into
this call saves a third call per step), computes this step's gradient and sends its chunks;
`allreduce.reduce` sums the chunks each rank owns. `flush` applies the last step when the
driver needs the weights. A dead place is restarted and restored from the last completed step.

Dropout: worker r draws its masks from a stream seeded by (run seed, r, step), the same inline
and on Ray, so a run is reproducible anywhere. The masks differ from a one-place run's (that
one draws a single stream for the whole batch), so with dropout N workers = 1 worker holds in
distribution, not bitwise; without dropout it holds exactly.
"""

from __future__ import annotations

import time

import numpy as np

from . import elastic, replicas
from . import host as host_ops
from .allreduce import AllReduce, assemble, ring_bytes, send
from .base import Way
from .places import DataLost


# ----- place side ------------------------------------------------------------------------------
def _apply_pending(slot, job, chunks):
    """Take the optimizer step of the pending all-reduce (if this replica has not already)."""
    if job.get("pending") is None:
        return
    step = job["pending"][0]
    if slot.step >= step:
        return  # already applied (a retry after a recovery)
    replicas.optimizer_step(slot.model, assemble(slot, job, chunks))
    slot.step = step


def gradient(slot, job):
    """slot.vec = scale · ∇loss(rows `shard`); returns scale · loss. (A job may name another
    function in "gradient": DP-SGD's per-example clipped, noised sum, dp_sgd.py.)"""
    index, scale = job["shard"], job["scale"]
    if len(index) == 0:  # fewer rows than workers in a last, short batch
        slot.vec = np.zeros(replicas.count(slot.model), replicas.flat_dtype(slot.model))
        return 0.0
    with replicas.rng_scope(replicas.key_state(job["noise"])):
        loss = replicas.backward(slot.model, slot.x[index], slot.y[index])
    slot.vec = replicas.get_flat_grad(slot.model) * slot.cast(scale)
    return loss * scale


def grad(host, jobs, *chunks):
    """Place op, per job (one per worker here): apply the pending step, compute this step's
    gradient, send its pieces to the peers."""
    heads, outs = [], []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        _apply_pending(slot, job, chunks)
        loss = job.get("gradient", gradient)(slot, job)
        pieces, sent = send(slot, job)
        outs.extend(pieces)
        heads.append({"loss": loss, "sent": sent, "busy": time.perf_counter() - start})
    return heads, outs


def flush(host, jobs, *chunks):
    """Place op: apply the pending step (the driver needs the weights now)."""
    heads = []
    for job in jobs:
        start = time.perf_counter()
        _apply_pending(host.slots[job["key"]], job, chunks)
        heads.append({"sent": [], "busy": time.perf_counter() - start})
    return heads, []


# ----- driver side -----------------------------------------------------------------------------
class DataParallel(Way):
    """Synchronous data parallel with all-reduce; bytes = 2(N−1)·P·itemsize per step in all."""

    name = "data-parallel"
    number, cut, crosses = 1, "the batch", "gradients (all-reduce)"
    formula = "2(N-1)/N*P per worker/step"
    checks = "N workers with B/N = 1 worker with B; replicas bitwise equal"
    equivalent = True
    note = "gradients all-reduced before every step: the one-place step up to float rounding"
    dropout_note = (
        "each worker draws its own dropout masks (seeded by run seed, rank, step): "
        "same distribution, other masks; exact without dropout"
    )

    def __init__(self, workers: int = 2, places=None):
        super().__init__(places)
        if int(workers) < 1:
            raise ValueError(f"{type(self).__name__}: workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self._reduce = None

    def expectation(self, model):
        if replicas.has_dropout(model):
            return False, self.dropout_note
        return super().expectation(model)

    def setup(self, run):
        self.install_replicas(run)
        self._reduce = AllReduce(self.places, self.members(), self.workers, "gradients")

    def _grad_job(self, run, step, rank, shard, total):
        """What worker `rank` computes in `step` (DP-SGD adds clipping and noise)."""
        return {
            "shard": shard,
            "scale": len(shard) / total,
            "noise": replicas.noise_key(run.noise_seed, rank, step),
        }

    def step(self, run, step, index):
        reduce, n = self._reduce, self.workers
        shards = np.array_split(index, n)
        produced = {}
        for h, group in reduce.members.items():
            chunks = []
            jobs = [
                {
                    "key": key,
                    "rank": rank,
                    "n": n,
                    "tag": step,
                    "pending": reduce.parts(rank, chunks),
                    **self._grad_job(run, step, rank, shards[rank], len(index)),
                }
                for rank, key in group
            ]
            produced[h] = self.places.submit_multi(
                h, grad, len(group) * reduce.outputs_per_worker(), jobs, *chunks
            )
        heads = reduce.run(run.traffic, produced, step)
        self._last = (step, index)  # redone by `recover` if its all-reduce is lost
        return self._loss([heads[rank]["loss"] for rank in range(n)])

    def _loss(self, values):
        return float(sum(values))

    def _flush(self, traffic, hosts=None):
        """Apply the pending all-reduced step on every replica (of `hosts`, default all)."""
        reduce = self._reduce
        if reduce is None or reduce.pending is None:
            return
        members = [h for h in reduce.members if hosts is None or h in hosts]
        ops = []
        for h in members:
            chunks = []
            jobs = [
                {"key": key, "rank": rank, "n": self.workers, "pending": reduce.parts(rank, chunks)}
                for rank, key in reduce.members[h]
            ]
            ops.append(self.places.submit_multi(h, flush, 0, jobs, *chunks))
        for h, heads in zip(members, self.places.gather(ops)):
            for (rank, _), head in zip(reduce.members[h], heads):
                reduce.record(traffic, rank, head)
        reduce.pending = None

    def recover(self, run, hosts, step):
        """Restart dead places (a place that cannot come back is retired and its workers move
        to the others: elastic) and bring every replica to the most advanced survivor's state."""
        before = self.slots()
        elastic.restart_or_retire(self, run, hosts, step)
        # The last completed step's reduced pieces usually outlive their places (the object
        # store keeps them), so the survivors can still apply it. When a whole node died, the
        # pieces it held died with it: then the step is done again below.
        try:
            self._flush(run.traffic, [h for h in self._reduce.members if h not in hosts])
        except DataLost:
            self._reduce.pending = None
        slots = self.slots()  # where each worker lives now (moved workers get a new slot)
        moved = {r for r, (old, new) in enumerate(zip(before, slots)) if old != new}
        self._reduce = AllReduce(self.places, self.members(), self.workers, "gradients")
        alive = [(r, h, key) for r, (h, key) in enumerate(before) if h not in hosts]
        if not alive:
            raise RuntimeError(
                f"{self.name}: every place holding a replica died at step {step}; nothing to "
                "restore from (use more places than 1, or CheckpointResume)"
            )
        steps = self.places.gather(
            [self.places.submit(h, host_ops.step_of, key) for _, h, key in alive]
        )
        best = int(np.argmax(steps))
        done = max(steps)
        _, src_host, src_key = alive[best]
        source = self.places.submit(src_host, host_ops.get_model, src_key).value
        x_ref, y_ref = run.data_refs()
        ops = []
        for r, (h, key) in enumerate(slots):
            if h in hosts or r in moved:
                ops.append(self.places.submit(h, host_ops.setup, key, source, x_ref, y_ref))
            if h in hosts or r in moved or steps[[a[0] for a in alive].index(r)] < done:
                ops.append(self.places.submit(h, host_ops.set_model, key, source, done))
        self.places.gather(ops)
        last = getattr(self, "_last", None)
        if done < step - 1 and last is not None and last[0] == step - 1:
            # Nobody took the last step's update and its all-reduced pieces are gone: redo it
            # (same dropout streams, so the same bits); its traffic crosses, and counts, again.
            self.step(run, *last)
        return done == step

    def finish(self, run):
        self._flush(run.traffic)
        h, key = self.slots()[0]
        replicas.adopt(
            run.model, self.places.gather([self.places.submit(h, host_ops.get_model, key)])[0]
        )

    def replica_weights(self):
        """Flat weights of every replica (for checking that they are bitwise equal)."""
        self._flush(None)
        return self.places.gather(
            [self.places.submit(h, host_ops.get_flat, key) for h, key in self.slots()]
        )

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return steps * ring_bytes(n_params, self.workers, itemsize)

    def report(self, run):
        per = 2 * (self.workers - 1) / self.workers * run.n_params * run.itemsize
        return {"workers": self.workers, "textbook_bytes_per_worker_step": per}
