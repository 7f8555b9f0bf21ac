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
    ReduceLROnPlateau changed the driver's between steps). Returns the keys of the slots that
    hold one (the logical places the rate reached, for the traffic count).

    "Every optimizer" is every one a way keeps here, however deep in a slot's `state`: live
    ones (a replica's, a shard's, a stage's, a helper head's, an optimizer over a flat piece)
    and ones at rest that the way rebuilds an optimizer from later (an `Optimizer.state_dict()`
    such as federated learning's fresh client state, or a replica spec's "opt_config"), so no
    rebuild brings the old rate back. Only the rate changes: moments and step counts stay."""
    reached = []
    for key, slot in host.slots.items():
        live, resting = {}, {}
        _optimizers(slot, live, resting, {})
        for opt in live.values():
            opt.learning_rate = rate
        for holder, name in resting.values():
            # A new dict, not an edit of the old: a spec may be shared with the driver inline.
            holder[name] = {**holder[name], "learning_rate": rate}
        if live or resting:
            reached.append(key)
    return reached


def _optimizers(obj, live, resting, seen):
    """Collect the optimizers in `obj` (a slot, a model, a way's state) into `live` by id, and
    the optimizer configs at rest, as (the dict holding it, its key), into `resting`."""
    if obj is None or isinstance(obj, (np.ndarray, str, bytes, int, float)) or id(obj) in seen:
        return
    seen[id(obj)] = obj  # kept alive while the walk runs, so no id is reused meanwhile
    if isinstance(obj, Optimizer):
        live[id(obj)] = obj
    elif isinstance(obj, Slot):
        _optimizers([obj.model, obj.state], live, resting, seen)
    elif isinstance(obj, dict):
        for key in ("config", "opt_config"):  # a state_dict's config, a replica spec's
            config = obj.get(key)
            if isinstance(config, dict) and "learning_rate" in config and _at_rest(obj, key):
                resting[id(config)] = (obj, key)
        _optimizers(list(obj.values()), live, resting, seen)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _optimizers(item, live, resting, seen)
    elif isinstance(getattr(obj, "optimizer", None), Optimizer):  # a model, a shard's program
        live[id(obj.optimizer)] = obj.optimizer


def _at_rest(obj, key) -> bool:
    """Is `obj[key]` an optimizer's config: inside a state_dict (beside "class_name" and
    "state") or a replica spec (beside "opt_cls")?"""
    if key == "config":
        return "class_name" in obj and "state" in obj
    return "opt_cls" in obj


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
