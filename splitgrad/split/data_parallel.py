"""#1 Synchronous data parallel: every worker holds a replica; gradients are all-reduced.

Each global batch B is cut into N shards; worker r computes (n_r/B)·∇loss on its shard, a ring
all-reduce sums the N vectors (2(N−1)/N·P values sent per worker), and every replica takes the
same optimizer step. N workers with B/N each = one worker with B (allclose); replicas stay
bitwise equal. A dead place is restarted and restored from the last completed step.
"""

from __future__ import annotations

import numpy as np

from . import ring, tools
from .base import Way


class DataParallel(Way):
    """Synchronous data parallel with ring all-reduce; bytes = 2(N−1)·P·itemsize per step."""

    name = "data-parallel"

    def __init__(self, workers: int = 2, places=None):
        super().__init__(places)
        if int(workers) < 1:
            raise ValueError(f"DataParallel: workers must be >= 1, got {workers}")
        self.workers = int(workers)

    def _slots(self):
        return [(self.places.host_of(r), f"w{r}") for r in range(self.workers)]

    def _setup(self, run):
        model_ref = self.places.put(tools.pack(run.model))
        x_ref, y_ref = run.data_refs()
        run.gather([self.places.submit(h, "setup", key, model_ref, x_ref, y_ref)
                    for h, key in self._slots()], [f"worker{r}" for r in range(self.workers)])

    def _grad_ops(self, run, step, shards, total):
        return [self.places.submit(h, "grad", key, shard, len(shard) / total)
                for (h, key), shard in zip(self._slots(), shards)]

    def _step(self, run, step, index):
        slots, n = self._slots(), self.workers
        shards = np.array_split(index, n)
        grads = self._grad_ops(run, step, shards, len(index))
        names = [f"worker{r}" for r in range(n)]
        ring_ops, ring_names, edges = ring.submit_ring(self.places, slots)
        applies = [self.places.submit(h, "apply_grad", key, step, ring.expected_receives(n))
                   for h, key in slots]
        values = run.gather(grads + ring_ops + applies, names + ring_names + names)
        ring.record_ring(run.traffic, values[n:], [(i, s, d) for i, s, d in edges], "gradients")
        return self._loss(values[:n])

    def _loss(self, values):
        return float(sum(values))

    def _recover(self, run, hosts, step):
        """Restart dead places and bring every replica to the most advanced survivor's state."""
        for h in hosts:
            self.places.restart(h)
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
        h, key = self._slots()[0]
        replica = self.places.gather([self.places.submit(h, "get_model", key)])[0]
        adopt(run.model, replica)

    def replica_weights(self):
        """Flat weights of every replica (for checking that they are bitwise equal)."""
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
