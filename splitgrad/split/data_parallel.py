"""#1 Synchronous data parallel: every worker holds a replica; gradients are all-reduced.

Each global batch B is cut into N shards; worker r computes (n_r/B)·∇loss on its shard, an
all-reduce sums the N vectors (reduce-scatter + all-gather: 2(N−1)/N·P values sent per worker,
as in a ring), and every replica takes the same optimizer step. N workers with B/N each = one
worker with B (allclose); replicas stay bitwise equal. Each place makes one call per step for
all its workers with N ≤ 2, two with N > 2 (collective.py): chunks go place to place through
Ray's object store, the driver only hands out references. A dead place is restarted and
restored from the last completed step.

Dropout: worker r draws its masks from a stream seeded by (run seed, r, step), the same on
Inline and on Ray, so a run is reproducible anywhere. The masks differ from a one-place run's
(that one draws a single stream for the whole batch), so with dropout N workers = 1 worker
holds in distribution, not bitwise; without dropout it holds exactly.
"""

from __future__ import annotations

import numpy as np

from .. import random as sg_random
from . import ring, tools
from .base import Way


class DataParallel(Way):
    """Synchronous data parallel with all-reduce; bytes = 2(N−1)·P·itemsize per step in all."""

    name = "data-parallel"

    def __init__(self, workers: int = 2, places=None):
        super().__init__(places)
        if int(workers) < 1:
            raise ValueError(f"DataParallel: workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self._pending = None

    def _members(self):
        """{host: [(rank, slot key)]} in rank order."""
        out = {}
        for rank, (h, key) in enumerate(self._slots()):
            out.setdefault(h, []).append((rank, key))
        return out

    def _setup(self, run):
        model_ref = self.places.put(tools.pack(run.model))
        x_ref, y_ref = run.data_refs()
        run.gather([self.places.submit(h, "setup", key, model_ref, x_ref, y_ref)
                    for h, key in self._slots()], [f"worker{r}" for r in range(self.workers)])
        self._pending = None

    def _grad_job(self, run, step, rank, shard, total):
        """What worker `rank` computes in `step` (DP-SGD adds clipping and noise)."""
        return {"shard": shard, "scale": len(shard) / total,
                "noise": tools.noise_key(run.noise_seed, rank, step)}

    def _pending_for(self, rank, chunks):
        """The pending step for worker `rank`: its peers' reduced chunks, appended to `chunks`
        (the call's positional arguments) and named by position."""
        if self._pending is None:
            return None
        step, refs = self._pending
        parts = []
        for src in range(self.workers):
            if src != rank:
                parts.append((src, len(chunks)))
                chunks.append(refs[src])
        return step, parts

    def _exchange(self):
        # Two workers: swapping whole gradients moves exactly the ring's 2(N−1)/N·P per worker
        # and needs one call per step instead of two (collective.py).
        return self.workers == 2

    def _step(self, run, step, index):
        n, members, exchange = self.workers, self._members(), self._exchange()
        shards = np.array_split(index, n)
        grads = {}
        for h, group in members.items():
            chunks = []
            jobs = [{"key": key, "rank": rank, "n": n, "step": step, "exchange": exchange,
                     "pending": self._pending_for(rank, chunks),
                     **self._grad_job(run, step, rank, shards[rank], len(index))}
                    for rank, key in group]
            outs = len(group) * (1 if exchange else n - 1)
            grads[h] = self.places.submit_multi(h, "dp_grad", outs, jobs, *chunks)
        if exchange:
            return self._finish_exchange(run, step, members, grads)
        sent = {}  # (src, dst) -> the chunk of src's gradient that dst reduces
        for h, group in members.items():
            outs = iter(grads[h].outs)
            for rank, _ in group:
                for dst in range(n):
                    if dst != rank:
                        sent[rank, dst] = next(outs)
        reduces = {}
        for h, group in members.items():
            if n == 1:
                break  # one worker applied its gradient in dp_grad already
            chunks, jobs = [], []
            for rank, key in group:
                parts = []
                for src in range(n):
                    if src != rank:
                        parts.append((src, len(chunks)))
                        chunks.append(sent[src, rank])
                jobs.append({"key": key, "rank": rank, "n": n, "step": step, "parts": parts})
            reduces[h] = self.places.submit_multi(h, "dp_reduce", len(group), jobs, *chunks)
        hosts = list(members)
        heads = self.places.gather([grads[h] for h in hosts] + [reduces[h] for h in reduces])
        losses = []
        for i, h in enumerate(hosts):
            for j, (rank, _) in enumerate(members[h]):
                self._record(run, rank, heads[i][j])
                if reduces:
                    self._record(run, rank, heads[len(hosts) + i][j])
                losses.append(heads[i][j]["loss"])
        if reduces:
            self._pending = (step, {rank: ref for h in hosts
                                    for (rank, _), ref in zip(members[h], reduces[h].outs)})
        return self._loss(losses)

    def _finish_exchange(self, run, step, members, grads):
        hosts = list(members)
        heads = self.places.gather([grads[h] for h in hosts])
        losses = []
        for h, group_heads in zip(hosts, heads):
            for (rank, _), head in zip(members[h], group_heads):
                self._record(run, rank, head)
                losses.append(head["loss"])
        self._pending = (step, {rank: ref for h in hosts
                                for (rank, _), ref in zip(members[h], grads[h].outs)})
        return self._loss(losses)

    def _record(self, run, rank, head):
        """Busy time and every chunk worker `rank` sent (measured bytes, one message each)."""
        if run is None:  # a flush outside fit (replica_weights): nothing to account to
            return
        run.traffic.busy(f"worker{rank}", head["busy"])
        for dst, size in head["sent"]:
            run.traffic.record("gradients", f"worker{rank}", f"worker{dst}", size=int(size))

    def _flush(self, run, hosts=None):
        """Apply the pending all-reduced step on every replica (of `hosts`, default all)."""
        if self._pending is None:
            return
        members = self._members()
        hosts = [h for h in members if hosts is None or h in hosts]
        ops = []
        for h in hosts:
            chunks = []
            jobs = [{"key": key, "rank": rank, "n": self.workers, "exchange": self._exchange(),
                     "pending": self._pending_for(rank, chunks)} for rank, key in members[h]]
            ops.append(self.places.submit_multi(h, "dp_flush", 0, jobs, *chunks))
        for h, heads in zip(hosts, self.places.gather(ops)):
            for (rank, _), head in zip(members[h], heads):
                self._record(run, rank, head)
        self._pending = None

    def _loss(self, values):
        return float(sum(values))

    def _recover(self, run, hosts, step):
        """Restart dead places and bring every replica to the most advanced survivor's state."""
        for h in hosts:
            self.places.restart(h)
        # The last completed step's reduced chunks outlive their places (the object store
        # keeps them), so the survivors can still apply it.
        self._flush(run, [h for h in range(self.places.n) if h not in hosts])
        slots = self._slots()
        alive = [(r, h, key) for r, (h, key) in enumerate(slots) if h not in hosts]
        if not alive:
            raise RuntimeError(
                f"{self.name}: every place holding a replica died at step {step}; nothing to "
                "restore from (use more places than 1, or CheckpointResume)")
        steps = run.places.gather([self.places.submit(h, "step_of", key) for _, h, key in alive])
        best = int(np.argmax(steps))
        done = max(steps)
        _, src_host, src_key = alive[best]
        source = self.places.submit(src_host, "get_model", src_key).value
        x_ref, y_ref = run.data_refs()
        ops = []
        for r, (h, key) in enumerate(slots):
            if h in hosts:
                ops.append(self.places.submit(h, "setup", key, source, x_ref, y_ref))
            if h in hosts or steps[[a[0] for a in alive].index(r)] < done:
                ops.append(self.places.submit(h, "set_model", key, source, done))
        run.places.gather(ops)
        return done == step

    def _finish(self, run):
        self._flush(run)
        h, key = self._slots()[0]
        replica = self.places.gather([self.places.submit(h, "get_model", key)])[0]
        adopt(run.model, replica)

    def replica_weights(self):
        """Flat weights of every replica (for checking that they are bitwise equal)."""
        self._flush(None)
        return self.places.gather([self.places.submit(h, "get_flat", key)
                                   for h, key in self._slots()])

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return steps * ring.ring_bytes(n_params, self.workers, itemsize)

    def _report(self, run):
        per = 2 * (self.workers - 1) / self.workers * run.n_params * run.itemsize
        return {"workers": self.workers, "textbook_bytes_per_worker_step": per}


def adopt(model, spec):
    """Copy a replica's weights, optimizer state and layer RNGs (a `tools.pack` spec) home."""
    model.set_weights(spec["weights"])
    if spec["opt_state"] is not None:
        model.optimizer.load_state_dict(spec["opt_state"])
    for key, gen in tools.layer_rngs(model).items():
        gen.bit_generator.state = spec["layer_rngs"][key]
    if spec.get("stream") is not None:
        # One replica that continued the driver's stream: the driver continues from its end.
        sg_random.set_state(spec["stream"])
