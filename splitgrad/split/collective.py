"""The place side of data parallel's all-reduce: two place calls per step, chunks fetched directly.

A step of synchronous data parallel is: local gradient → reduce-scatter → all-gather → apply.
Each place runs it for all its logical workers in two calls (instead of one call per ring hop):

    dp_grad   (1) apply the previous step: fetch the peers' all-reduced chunks, assemble the
                  gradient and take the optimizer step; (2) compute this step's gradient and
                  cut it into N chunks, each returned as an object of its own (one per peer).
    dp_reduce fetch chunk r from every peer and sum them in rank order: rank r now owns the
              all-reduced chunk r, returned as one object that every peer fetches next step.

The driver only passes references, as top-level arguments: Ray hands each place the chunks it
needs straight from the peers' outputs once they exist (inline they are plain arrays), with no
further round trip through the driver and no call that waits inside a place. Every worker sends
(N−1) chunks in the reduce-scatter and its reduced chunk to N−1 peers in the all-gather: the
same 2(N−1)/N·P values and 2(N−1) messages per worker as a ring all-reduce, in 2 rounds of
latency instead of 2(N−1). Folding the all-gather and the update into the next step's first
call saves a third call per step; `dp_flush` applies the last step when the driver needs the
weights. Each op reports what its outputs carry to which peer ("sent"); the driver records it
when the step has completed everywhere, so a step cut short by a failure and redone is counted
once. Replicas stay bitwise equal: every chunk is summed once, by its owner. With one
worker there is nothing to reduce: `dp_grad` applies the gradient at once (one call per step).

With two workers a plain exchange moves exactly as much: each sends its whole gradient (P =
2(N−1)/N·P values) to the other, and each sums both in rank order. No reduce call is needed,
so a step is ONE call per place, the update folded into the next step's call. (For N > 2 an
exchange would send (N−1)·P per worker, more than the ring, so those keep the two calls.)
"""

from __future__ import annotations

import time

import numpy as np

from . import per_example, tools


class CollectiveOps:
    """Data-parallel ops of a `Host` (mixed in); see the module docstring for the protocol.

    Each op gets `jobs` (one dict per logical worker on this place) and then the chunks it
    receives, as positional arguments; a job names its chunks as (src rank, position). A job
    holds key, rank, n (workers), step; for `dp_grad` also shard, scale, noise (its dropout
    stream) and optionally clip/noise_std/noise_seed/denom (DP-SGD), and `pending`: (step,
    [(src, position)]) of the all-reduced step still to apply, or None. `exchange` (N = 2)
    sends whole gradients and sums them at the next call instead of reduce-scatter/all-gather.
    """

    def _grad(self, slot, index, scale, noise):
        """slot.vec = scale · ∇loss(rows `index`); returns scale · loss."""
        if len(index) == 0:  # fewer rows than workers in a last, short batch
            slot.vec, slot.recvs = np.zeros(tools.count(slot.model), tools.flat_dtype(slot.model)), 0
            return 0.0
        with tools.rng_scope(None if noise is None else tools.key_state(noise)):
            loss = tools.backward(slot.model, slot.x[index], slot.y[index])
        slot.vec = tools.get_flat_grad(slot.model) * slot.cast(scale)
        slot.recvs = 0
        return loss * scale

    def _clipped_grad(self, slot, job):
        """vec = (Σ_i clip_C(∇loss_i) + N(0, noise_std²)) / denom (DP-SGD, per example)."""
        index = np.asarray(job["shard"])
        with tools.rng_scope(tools.key_state(job["noise"])):
            total, loss_sum, largest = per_example.clipped_sum(
                slot.model, slot.x[index], slot.y[index], job["clip"])
        if job["noise_std"]:
            rng = np.random.default_rng(job["noise_seed"])
            total = total + rng.normal(0.0, job["noise_std"], size=total.shape)
        slot.vec = (total / job["denom"]).astype(tools.flat_dtype(slot.model))
        return loss_sum / job["denom"], largest

    def _apply_pending(self, slot, job, chunks):
        """Take the optimizer step of the pending all-reduce (if not taken already)."""
        if job.get("pending") is None:
            return
        step, parts = job["pending"]
        if slot.step >= step:
            return  # already applied (a retry after a recovery)
        if slot.reduced is None or slot.reduced[0] != step:
            # An update from a half-finished all-reduce would silently corrupt the replica.
            raise RuntimeError(f"all-reduce of step {step} incomplete on worker {job['rank']}")
        n = job["n"]
        if job.get("exchange"):
            vecs = {src: chunks[pos] for src, pos in parts}
            vecs[job["rank"]] = slot.vec
            full = vecs[0].copy()
            for src in range(1, n):  # rank order on every replica: bitwise equal sums
                full += vecs[src]
            tools.optimizer_step(slot.model, full)
            slot.step, slot.reduced = step, None
            return
        full = np.empty(slot.vec.size, slot.vec.dtype)
        for src, pos in parts:
            chunk = chunks[pos]
            lo, hi = tools.chunk_bounds(full.size, n, src)
            full[lo:hi] = chunk
        lo, hi = tools.chunk_bounds(full.size, n, job["rank"])
        full[lo:hi] = slot.reduced[1]
        tools.optimizer_step(slot.model, full)
        slot.step, slot.reduced = step, None

    def op_dp_grad(self, jobs, *chunks):
        """Per job: apply the pending step, compute this step's gradient, send its chunks."""
        heads, outs = [], []
        for job in jobs:
            start = time.perf_counter()
            slot = self.slots[job["key"]]
            self._apply_pending(slot, job, chunks)
            if "clip" in job:
                loss = self._clipped_grad(slot, job)
            else:
                loss = self._grad(slot, job["shard"], job["scale"], job["noise"])
            n, rank = job["n"], job["rank"]
            if n == 1:
                tools.optimizer_step(slot.model, slot.vec)
                slot.step = job["step"]
            elif job.get("exchange"):
                slot.reduced = (job["step"], None)  # the sum is taken in the next call
                outs.append(slot.vec.copy())
                sent = [(dst, outs[-1].nbytes) for dst in range(n) if dst != rank]
                heads.append({"loss": loss, "sent": sent, "busy": time.perf_counter() - start})
                continue
            sent = []
            for dst in range(n):
                if dst != rank:
                    lo, hi = tools.chunk_bounds(slot.vec.size, n, dst)
                    outs.append(slot.vec[lo:hi].copy())
                    sent.append((dst, outs[-1].nbytes))
            heads.append({"loss": loss, "sent": sent, "busy": time.perf_counter() - start})
        return heads, outs

    def op_dp_reduce(self, jobs, *chunks):
        """Per job: sum chunk `rank` over all workers (rank order); output it for the peers."""
        heads, outs = [], []
        for job in jobs:
            start = time.perf_counter()
            slot = self.slots[job["key"]]
            n, rank = job["n"], job["rank"]
            mine = {src: chunks[pos] for src, pos in job["parts"]}
            lo, hi = tools.chunk_bounds(slot.vec.size, n, rank)
            mine[rank] = slot.vec[lo:hi]
            total = mine[0].copy()
            for src in range(1, n):
                total += mine[src]
            slot.reduced = (job["step"], total)
            outs.append(total.copy())
            heads.append({"sent": [(dst, total.nbytes) for dst in range(n) if dst != rank],
                          "busy": time.perf_counter() - start})
        return heads, outs

    def op_dp_flush(self, jobs, *chunks):
        """Per job: apply the pending step (the driver needs the weights now)."""
        heads = []
        for job in jobs:
            start = time.perf_counter()
            self._apply_pending(self.slots[job["key"]], job, chunks)
            heads.append({"sent": [], "busy": time.perf_counter() - start})
        return heads, []
