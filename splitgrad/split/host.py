"""The body of one place: a `Host` holds many logical workers or clients ("slots").

Each slot keeps a model replica (with its compiled optimizer and loss), the rows of data it
owns, a flat vector `vec` in transit (a gradient or weights being all-reduced) and `state`, a
dict where a way keeps whatever else it needs between calls.

Ways run **place ops** on a host: plain module-level functions `op(host, *args)` written next to
the way that uses them (each way's module holds both its driver side and its place side). The
driver calls `places.submit(host_index, op, *args)`; on Ray the Host is an actor and the op
travels by reference (its module and name), inline it is a plain call. The generic ops every
way shares (install a replica, fetch it, reset) are below. Ops never return views of a slot's
own arrays, so nothing is shared by accident.

Random streams: ops that train take a `noise` key (`replicas.noise_key(seed, rank, step)`) and
run with the default generator seeded from it, so Dropout draws the same masks inline and on
any Ray actor. A slot set up with `stream=` (one replica continuing the driver's stream, as in
accumulation and checkpoint/resume) keeps that stream across ops instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import numpy as np

from ..optim.base import Optimizer
from . import replicas


class Slot:
    """One logical worker/client: its replica, its data, its vector in transit, its step."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y
        self.vec = None  # a flat vector being all-reduced (allreduce.py)
        self.step = -1  # the last global step this replica completed
        self.stream = None  # the slot's own default-generator state, when it keeps one
        self.state = {}  # whatever else the way keeps here between calls

    def cast(self, scale):
        """`scale` as a scalar of the model's dtype (so float32 vectors stay float32)."""
        return replicas.flat_dtype(self.model).type(scale)


class Host:
    """A place's process: `call(op, *args)` runs `op(self, *args)` and times it.

    When the first argument names a slot that keeps its own stream, the op runs with that
    stream as the default generator. `threads` sets this process's BLAS thread count: a Ray
    place runs with the thread count of the driver, whose process is the place on `Inline`,
    because a product's rounding can depend on how many threads share it (so Ray and Inline
    give bitwise-equal weights).
    """

    def __init__(self, threads=None):
        self.slots = {}
        self._limits = None
        if threads is not None:
            from threadpoolctl import threadpool_limits

            # Kept for the life of the place: the limit holds until it is restored.
            self._limits = threadpool_limits(limits=int(threads), user_api="blas")

    def ping(self):
        return os.getpid()

    def where(self) -> dict:
        """This place's process, machine and (on Ray) node, and its BLAS thread count."""
        from threadpoolctl import threadpool_info

        blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
        node = None
        with contextlib.suppress(Exception):  # not a Ray worker
            import ray

            node = ray.get_runtime_context().get_node_id()
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node": node,
            "blas_threads": max(blas, default=1),
        }

    def call(self, op, *args):
        start = time.perf_counter()
        slot = self.slots.get(args[0]) if args and isinstance(args[0], str) else None
        stream = None if slot is None else slot.stream
        with replicas.rng_scope(stream) as box:
            result = op(self, *args)
        if stream is not None:
            slot.stream = box["state"]
        return result, time.perf_counter() - start

    def call_multi(self, op, *args):
        """Run `op`, which returns (head, outputs); returns (head, busy, *outputs) so that on
        Ray every output is an object of its own that other places fetch directly."""
        start = time.perf_counter()
        head, outs = op(self, *args)
        return (head, time.perf_counter() - start, *outs)


# ----- the place ops every way shares -----------------------------------------------------------
def reset(host):
    host.slots.clear()


def stall(host, seconds):
    """Fault injection: keep this place busy (a hung place, for tests of time limits)."""
    time.sleep(float(seconds))


def setup(host, key, spec, x, y, index=None, stream=None):
    """Install a replica built from `spec` in slot `key`; with `index`, the slot owns a copy of
    just those rows; with `stream` (a generator state) it keeps that random stream as its own.
    Returns the number of rows the slot owns."""
    if index is not None:
        x, y = np.array(x[index]), np.array(y[index])
    slot = Slot(replicas.unpack(spec), x, y)
    slot.stream = stream
    host.slots[key] = slot
    return len(x)


def set_learning_rate(host, rate):
    """Give every optimizer held at this place the learning rate `rate` (a callback such as
    ReduceLROnPlateau changed the driver's between steps). Returns how many it set."""
    found = {}
    _optimizers(list(host.slots.values()), found, depth=4)
    for opt in found.values():
        opt.learning_rate = rate
    return len(found)


def _optimizers(obj, found, depth):
    """Collect the optimizers in `obj` (a slot, a model, a way's state) into `found` by id."""
    if depth < 0 or obj is None:
        return
    if isinstance(obj, Optimizer):
        found[id(obj)] = obj
    elif isinstance(obj, Slot):
        _optimizers([obj.model, obj.state], found, depth - 1)
    elif isinstance(obj, dict):
        _optimizers(list(obj.values()), found, depth - 1)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _optimizers(item, found, depth - 1)
    elif isinstance(getattr(obj, "optimizer", None), Optimizer):  # a model
        found[id(obj.optimizer)] = obj.optimizer


def get_model(host, key):
    """The slot's replica as a spec (with its own stream, if it keeps one)."""
    slot = host.slots[key]
    spec = replicas.pack(slot.model, slot.x[:1])
    spec["stream"] = slot.stream
    return spec


def set_model(host, key, spec, step):
    """Replace the slot's replica (recovery: bring it to the state of `step`)."""
    slot = host.slots[key]
    slot.model, slot.step, slot.vec, slot.state = replicas.unpack(spec), step, None, {}


def step_of(host, key):
    return host.slots[key].step


def get_flat(host, key):
    return replicas.get_flat(host.slots[key].model)


def set_flat(host, key, flat):
    replicas.set_flat(host.slots[key].model, flat)
