"""The body of one place: a `Host` holds many logical workers or clients ("slots").

Each slot keeps a model replica (with its compiled optimizer and loss), the data it owns and a
flat scratch vector `vec` for gradients or weights in transit. Ways call ops by name through
`Host.call(op, *args) -> (result, busy seconds)` (or `call_multi` for ops with several outputs,
see collective.py); on Ray the Host is an actor, inline it is a plain object. Ops never return
views of a slot's own arrays, so nothing is shared by accident.

Random streams: ops that train take a `noise` key (`tools.noise_key(seed, rank, step)`) and run
with the default generator seeded from it, so Dropout draws the same masks on Inline and on any
Ray actor. A slot set up with `stream=` (one replica continuing the driver's stream, as in
accumulation and checkpoint/resume) keeps that stream across ops instead.
"""

from __future__ import annotations

import os
import time

import numpy as np

from . import tools
from .collective import CollectiveOps


class Slot:
    """One logical worker/client: its model replica, its data, its scratch vector and step."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y
        self.vec = None
        self.recvs = 0
        self.step = -1
        self.template = None  # pristine model (fresh optimizer state) for federated rounds
        self.anchor = None  # DiLoCo: the global weights at the last synchronisation
        self.momentum = None
        self.stream = None  # the slot's own default-generator state, when it keeps one
        self.reduced = None  # data parallel: (step, this rank's all-reduced chunk)

    def cast(self, scale):
        """`scale` as a scalar of the model's dtype (so float32 vectors stay float32)."""
        return tools.flat_dtype(self.model).type(scale)


class Host(CollectiveOps):
    """A place's process: `call(op, *args)` runs `op_<op>` on its slots and times it.

    When the first argument names a slot that keeps its own stream, the op runs with that
    stream as the default generator.
    """

    def __init__(self):
        self.slots = {}

    def ping(self):
        return os.getpid()

    def call(self, op, *args):
        start = time.perf_counter()
        slot = self.slots.get(args[0]) if args and isinstance(args[0], str) else None
        stream = None if slot is None else slot.stream
        with tools.rng_scope(stream) as box:
            result = getattr(self, "op_" + op)(*args)
        if stream is not None:
            slot.stream = box["state"]
        return result, time.perf_counter() - start

    def call_multi(self, op, *args):
        """Run `op_<op>`, which returns (head, outputs); returns (head, busy, *outputs) so that
        on Ray every output is an object of its own that other places fetch directly."""
        start = time.perf_counter()
        head, outs = getattr(self, "op_" + op)(*args)
        return (head, time.perf_counter() - start, *outs)

    def op_stall(self, seconds):
        """Fault injection: keep this place busy (a hung place, for tests of time limits)."""
        time.sleep(float(seconds))

    # ----- slots ------------------------------------------------------------------------
    def op_reset(self):
        self.slots.clear()

    def op_setup(self, key, model, x, y, index=None, keep_template=False, stream=None):
        """Install a replica; with `index`, the slot owns a copy of just those rows; with
        `stream` (a generator state) it keeps that random stream as its own."""
        if index is not None:
            x, y = np.array(x[index]), np.array(y[index])
        slot = Slot(tools.unpack(model), x, y)
        if keep_template:
            slot.template = model
        slot.anchor = tools.get_flat(slot.model)
        slot.stream = stream
        self.slots[key] = slot
        return len(x)

    def op_get_model(self, key):
        spec = tools.pack(self.slots[key].model)
        spec["stream"] = self.slots[key].stream
        return spec

    def op_set_model(self, key, model, step):
        slot = self.slots[key]
        slot.model = tools.unpack(model)
        slot.step = step
        slot.anchor = tools.get_flat(slot.model)
        slot.vec, slot.recvs, slot.reduced = None, 0, None

    def op_get_state(self, key):
        slot = self.slots[key]
        return {"model": tools.pack(slot.model), "step": slot.step,
                "anchor": None if slot.anchor is None else slot.anchor.copy(),
                "momentum": None if slot.momentum is None else slot.momentum.copy()}

    def op_set_state(self, key, state):
        slot = self.slots[key]
        slot.model, slot.step = tools.unpack(state["model"]), state["step"]
        slot.anchor = None if state["anchor"] is None else np.array(state["anchor"])
        slot.momentum = None if state["momentum"] is None else np.array(state["momentum"])
        slot.vec, slot.recvs, slot.reduced = None, 0, None

    def op_step_of(self, key):
        return self.slots[key].step

    def op_get_flat(self, key):
        return tools.get_flat(self.slots[key].model)

    def op_set_flat(self, key, flat):
        tools.set_flat(self.slots[key].model, flat)

    # ----- gradients ----------------------------------------------------------------------
    def op_grad(self, key, index, scale, weights=None, noise=None):
        """vec = scale · ∇loss(rows `index`); returns scale · loss. `weights` first, if given;
        dropout draws from the stream seeded by `noise`."""
        slot = self.slots[key]
        if weights is not None:
            tools.set_flat(slot.model, weights)
        return self._grad(slot, index, scale, noise)

    def op_take_vec(self, key):
        return self.slots[key].vec.copy()

    def op_push(self, key, index, scale, weights, noise=None):
        """op_grad then op_take_vec in one call: (scale · loss, the gradient to push)."""
        loss = self.op_grad(key, index, scale, weights, noise)
        return loss, self.slots[key].vec.copy()

    # ----- ring all-reduce (reduce-scatter then all-gather) ---------------------------------
    def op_ring_send(self, key, phase, k, rank, n):
        slot = self.slots[key]
        c = (rank - k) % n if phase == "rs" else (rank + 1 - k) % n
        lo, hi = tools.chunk_bounds(slot.vec.size, n, c)
        return slot.vec[lo:hi].copy()

    def op_ring_recv(self, key, phase, k, rank, n, chunk):
        slot = self.slots[key]
        c = (rank - 1 - k) % n if phase == "rs" else (rank - k) % n
        lo, hi = tools.chunk_bounds(slot.vec.size, n, c)
        if phase == "rs":
            slot.vec[lo:hi] += chunk
        else:
            slot.vec[lo:hi] = chunk
        slot.recvs += 1
        return int(chunk.nbytes)

    def _check_reduced(self, slot, expect):
        # An update from a half-finished ring would silently corrupt the replica.
        if slot.vec is None or slot.recvs != expect:
            raise RuntimeError(f"all-reduce incomplete: {slot.recvs} of {expect} chunks arrived")

    # ----- local SGD / DiLoCo -------------------------------------------------------------
    def op_local_steps(self, key, indices, step, noise=None):
        """Plain local training steps on this slot's own rows; returns the mean loss."""
        slot = self.slots[key]
        with tools.rng_scope(None if noise is None else tools.key_state(noise)):
            losses = [tools.train_step(slot.model, slot.x[i], slot.y[i]) for i in indices]
        slot.step = step
        return float(np.mean(losses)) if losses else 0.0

    def op_load_weights(self, key, scale):
        slot = self.slots[key]
        slot.vec = tools.get_flat(slot.model) * slot.cast(scale)
        slot.recvs = 0

    def op_set_averaged(self, key, step, expect, outer):
        """weights ← the all-reduced average; with `outer=(lr, momentum, nesterov)` DiLoCo's
        outer step instead: Δ = anchor − average, anchor ← anchor − lr·(Nesterov) momentum(Δ)."""
        slot = self.slots[key]
        self._check_reduced(slot, expect)
        avg = slot.vec
        if outer is not None:
            lr, mu, nesterov = outer
            delta = slot.anchor - avg
            slot.momentum = delta if slot.momentum is None else mu * slot.momentum + delta
            update = delta + mu * slot.momentum if nesterov else slot.momentum
            avg = slot.anchor - avg.dtype.type(lr) * update.astype(avg.dtype)
        tools.set_flat(slot.model, avg)
        slot.anchor = tools.get_flat(slot.model)
        slot.vec, slot.recvs, slot.step = None, 0, step

    # ----- federated ------------------------------------------------------------------------
    def op_client_round(self, key, weights, epochs, batch_size, mu, seed, noise=None):
        """Train a fresh copy of the client model from `weights` on the client's own data.

        FedProx adds μ/2·‖w − w_global‖² to the loss (μ = 0 leaves the loss untouched).
        Returns (Δ = w_local − w_global, n_k, mean loss); the data itself never leaves.
        """
        with tools.rng_scope(None if noise is None else tools.key_state(noise)):
            return self._client_round(key, weights, epochs, batch_size, mu, seed)

    def _client_round(self, key, weights, epochs, batch_size, mu, seed):
        slot = self.slots[key]
        model = tools.unpack(slot.template)
        tools.set_flat(model, weights)
        n = len(slot.x)
        bs = n if batch_size is None else int(batch_size)
        rng = np.random.default_rng(seed)
        losses = []
        for _ in range(epochs):
            order = rng.permutation(n) if bs < n else np.arange(n)
            for lo in range(0, n, bs):
                idx = order[lo:lo + bs]
                losses.append(tools.train_step(model, slot.x[idx], slot.y[idx],
                                               prox=(mu, weights) if mu else None))
        delta = tools.get_flat(model) - weights
        return delta, n, float(np.mean(losses))

    # ----- accumulation and checkpoint/resume ------------------------------------------------
    def op_accumulate(self, key, micro, total, step):
        """Σ_j (n_j/total)·∇loss_j over micro-batches, then one optimizer step."""
        slot = self.slots[key]
        model = slot.model
        tools.zero_grad(model)
        loss = 0.0
        for idx in micro:
            part = tools.loss_tensor(model, slot.x[idx], slot.y[idx])
            weight = len(idx) / total
            (part * model.dtype.type(weight)).backward()
            loss += float(part.data) * weight
        tools.step_optimizer(model)
        slot.step = step
        return loss

    def op_train(self, key, batches, first_step):
        """Ordinary training steps (one place, nothing crosses); returns the losses."""
        slot = self.slots[key]
        out = [tools.train_step(slot.model, slot.x[i], slot.y[i]) for i in batches]
        slot.step = first_step + len(batches) - 1
        return out

    def op_export(self, key):
        return tools.export_state(self.slots[key].model)

    def op_import(self, key, state):
        tools.import_state(self.slots[key].model, state)

