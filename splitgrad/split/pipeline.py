"""#7 Pipeline parallel: the layers cut into S stages, one place each; micro-batches flow through.

Each global batch of B rows is cut into M micro-batches. Stage s runs its layers forward on
micro-batch j and sends the activation to stage s+1; the last stage computes the loss of the
micro-batch weighted by its share of the batch, n_j/B, so that the gradients the stages sum
over the M micro-batches are the full-batch gradients; each backward sends the gradient of the
stage's input back to stage s-1. When every micro-batch is back, every stage takes its
optimizer step on its own parameters. The order of the forwards and backwards at each stage is
the schedule (pipeline_schedule.py: GPipe or 1F1B); both give the same gradients, bitwise.

What crosses: per micro-batch and cut, the activation forward and its gradient back,
2·(B/M)·d values for a cut of width d. A stage waits at the start and end of each step (the
bubble, (S-1)/(M+S-1) of its time with equal op times): `history.traffic["bubble"]` sets the
formula next to the schedule's replay with unit and with measured op times, and, on Ray,
next to the idle time measured from each op's start and end.

On Ray every op of a step is submitted at once, each taking the previous stage's output as a
top-level argument: Ray resolves it at the next stage's actor, the driver's code never fetches
it, and each actor runs its ops in the order submitted, which is the schedule's. (Ray itself
returns values of at most 100 KB inline to the caller that owns them, the driver's core
worker, and inlines them into the next call; larger ones go from object store to object store.)

`replicas=R` (data parallel × pipeline) runs R copies of the pipeline on the R shards of each
batch (S·R places) and all-reduces each stage's gradients among its R copies (allreduce.py)
before the step; each cut's and each stage's all-reduce traffic are counted on their own.

Dropout: stage s draws micro-batch j's masks from a stream seeded by (run seed, replica, step,
s, j), the same inline and on Ray; a one-place run draws other masks. A dead place is a clear
error: a stage's weights live only at its place (restart from a saved model).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import ClassVar

import numpy as np

from ..layers.layer import generators
from ..layers.normalization import BatchNormalization
from ..tensor import Tensor
from . import blocks, replicas
from . import pipeline_schedule as schedules
from .allreduce import AllReduce, assemble, ring_bytes, send
from .base import Way
from .host import Slot
from .places import PlaceFailure


# ----- place side ------------------------------------------------------------------------------
def setup_stage(host, key, spec, x, y):
    """Place op: install a stage built from `spec` (blocks.block_spec) in slot `key`; the first
    stage owns the inputs x, the last the labels y."""
    model = replicas.unpack(spec)
    model.train()
    slot = Slot(model, x, y)
    slot.state.update(flight={}, held=0)
    host.slots[key] = slot
    return replicas.count(model)


def forward(host, job, act=None):
    """Place op: micro-batch `job["j"]` forward through this stage, from the rows `job["rows"]`
    of the data (first stage) or the previous stage's activation `act`. The last stage computes
    the loss weighted by n_j/B. Keeps the graph until the backward; outputs the activation."""
    start = time.perf_counter()
    slot = host.slots[job["key"]]
    model, rows = slot.model, job["rows"]
    inp = Tensor(np.asarray(slot.x[rows] if act is None else act), requires_grad=act is not None)
    head = {}
    with replicas.rng_scope(replicas.key_state(job["noise"])), model.threads():
        out = model(inp)
        if job["last"]:
            loss = model.loss(slot.y[rows], out)
            head["loss"] = float(loss.data) * job["weight"]
            out = loss * model.dtype.type(job["weight"])
    flight = slot.state["flight"]
    flight[job["j"]] = (inp, out)
    slot.state["held"] = max(slot.state["held"], len(flight))
    outs = [] if job["last"] else [out.data.copy()]
    head.update(sent=outs[0].nbytes if outs else 0, held=len(flight))
    head.update(t0=start, t1=time.perf_counter())
    return head, outs


def backward(host, job, grad=None):
    """Place op: micro-batch `job["j"]` backward through this stage from the gradient of its
    output (`grad`, from the next stage; the last stage starts from its loss), adding into the
    parameters' gradients; outputs the gradient of the stage's input. The stage's last backward
    of the step also adds the regularization penalties' gradients (`job["penalty"]`: once per
    stage over all replicas) and reports the squared gradient norm (for clipnorm)."""
    start = time.perf_counter()
    slot = host.slots[job["key"]]
    model = slot.model
    buffers = model.optimizer.grad_buffers()
    inp, out = slot.state["flight"].pop(job["j"])
    with model.threads():
        out.backward(None if grad is None else np.asarray(grad), into=buffers)
    outs = []
    if job["stage"] > 0:
        outs = [inp.grad if inp.grad is not None else np.zeros_like(inp.data)]
    head = {"sent": outs[0].nbytes if outs else 0}
    if job["final"]:
        head["penalty"] = 0.0
        terms = model.regularization_losses() if job["penalty"] else []
        if terms:
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            head["penalty"] = float(total.data)
            total.backward(into=buffers)
        if job["norm"]:
            flat = replicas.get_flat_grad(model)
            head["sq"] = float(np.dot(flat, flat))
    head.update(t0=start, t1=time.perf_counter())
    return head, outs


def share(host, jobs):
    """Place op (replicas > 1): put each stage copy's gradient into the all-reduce."""
    heads, outs = [], []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        slot.vec = replicas.get_flat_grad(slot.model)
        pieces, sent = send(slot, job)
        outs.extend(pieces)
        heads.append({"sent": sent, "busy": time.perf_counter() - start})
    return heads, outs


def update(host, jobs, *chunks):
    """Place op: each stage's optimizer step, on its summed gradients (scaled by `coef` for a
    global clipnorm), or on the all-reduced ones (`pending`); then zero them for the next step."""
    heads = []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        model = slot.model
        if job.get("pending") is not None:
            replicas.optimizer_step(model, assemble(slot, job, chunks))
        else:
            if job["coef"] < 1.0:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad *= p.grad.dtype.type(job["coef"])
            model.optimizer.step()
        model.optimizer.zero_grad()
        slot.step = job["step"]
        heads.append({"busy": time.perf_counter() - start})
    return heads


def fetch(host, key):
    """Place op: the stage's weights, optimizer state and generators (blocks.adopt_blocks)."""
    model = host.slots[key].model
    return {
        "weights": model.get_weights(),
        "opt_state": model.optimizer.state_dict(),
        "layer_rngs": {k: g.bit_generator.state for k, g in generators(model).items()},
        "held": host.slots[key].state["held"],
    }


# ----- driver side -----------------------------------------------------------------------------
class Pipeline(Way):
    """S stages × M micro-batches (GPipe or 1F1B); bytes = 2·(B/M)·d per micro-batch per cut
    (and with R replicas, each stage's ring all-reduce 2(R−1)·P_s per step)."""

    name = "pipeline"
    number, cut, crosses = 7, "the layers", "activations forward, their gradients back"
    formula = "2(B/M)d per micro-batch/cut"
    checks = "GPipe and 1F1B gradients = full-batch gradients; bubble (S-1)/(M+S-1)"
    options: ClassVar[dict] = {
        "stages": None,  # default: places // replicas
        "microbatches": 4,
        "schedule": "1f1b",
        "balance": "params",
        "cuts": None,  # by hand: the layer indices where stages start, e.g. "2,5"
        "replicas": 1,
    }
    equivalent = True
    note = "micro-batch losses weighted by n_j/B: the full-batch gradient up to float rounding"

    def __init__(
        self,
        stages: int = 2,
        microbatches: int = 4,
        schedule: str = "1f1b",
        balance: str = "params",
        cuts=None,
        replicas: int = 1,
        places=None,
    ):
        super().__init__(places)
        who = type(self).__name__
        for arg, value in (("stages", stages), ("microbatches", microbatches)):
            if int(value) < 1:
                raise ValueError(f"{who}: {arg} must be >= 1, got {value}")
        if int(replicas) < 1:
            raise ValueError(f"{who}: replicas must be >= 1, got {replicas}")
        schedules.make(schedule, 1, 1)  # a bad name fails here, before any place starts
        if balance not in ("params", "time"):
            raise ValueError(f"{who}: balance must be 'params' or 'time', got {balance!r}")
        self.cuts = blocks.parse_cuts(cuts, "pipeline: cuts")
        if self.cuts is not None and len(self.cuts) + 1 != int(stages):
            raise ValueError(
                f"{who}: cuts {self.cuts} make {len(self.cuts) + 1} stages, not stages={stages}"
            )
        self.stages, self.microbatches = int(stages), int(microbatches)
        self.schedule, self.balance, self.replicas = schedule, balance, int(replicas)
        self.workers = self.stages * self.replicas
        self._reduces = []

    @classmethod
    def from_options(cls, n, options, places=None):
        opts = cls.with_defaults(options)
        reps = int(opts.pop("replicas") or 1)
        stages = opts.pop("stages")
        if stages is None:
            cuts = blocks.parse_cuts(opts["cuts"])
            stages = len(cuts) + 1 if cuts is not None else max(1, int(n) // reps)
        return cls(stages=stages, replicas=reps, places=places, **opts)

    def expectation(self, model):
        stack = [model]
        while stack:
            layer = stack.pop()
            if layer.stochastic():
                return False, (
                    "each micro-batch draws its own dropout masks (seeded by run seed, stage, "
                    "step, micro-batch): same distribution, other masks; exact without dropout"
                )
            if isinstance(layer, BatchNormalization):
                return False, "batch normalisation sees micro-batch statistics, not the batch's"
            stack.extend(child for _, child in layer.sublayers())
        return super().expectation(model)

    def _slot(self, s, r):
        return self.places.host_of(r * self.stages + s), f"p{s}.{r}"

    def _name(self, s, r):
        return f"stage{s}" if self.replicas == 1 else f"stage{s}.r{r}"

    # ----- setup -------------------------------------------------------------------------------
    def setup(self, run):
        model, n_stages = run.model, self.stages
        layers = blocks.layers_of(model)
        if n_stages > len(layers):
            raise ValueError(
                f"pipeline: {n_stages} stages need at least {n_stages} layers; model "
                f"{model.name!r} has {len(layers)}. Use fewer stages (--way-option stages=N)."
            )
        if model.optimizer.global_clipnorm is not None and self.replicas > 1:
            raise ValueError(
                "pipeline: global_clipnorm with replicas > 1 is not supported (the norm would need "
                "every stage's all-reduced gradient); use clipvalue, or replicas=1"
            )
        self._clip = model.optimizer.global_clipnorm
        self.bounds = self._bounds(model, run.x[: run.batch_size])  # time a whole batch
        self._blocks = blocks.cut(model, self.bounds)
        acts = blocks.boundary_activations(model, run.x[:1])
        self.widths = [math.prod(acts[b].shape[1:]) for b in self.bounds[1:-1]]
        self._stage_params = [replicas.count(b) for b in self._blocks]
        x_ref, y_ref = run.data_refs()
        pending, names = [], []
        for s, block in enumerate(self._blocks):
            spec = self.places.put(blocks.block_spec(model, block, acts[self.bounds[s]], False))
            for r in range(self.replicas):
                h, key = self._slot(s, r)
                x = x_ref if s == 0 else None
                y = y_ref if s == n_stages - 1 else None
                pending.append(self.places.submit(h, setup_stage, key, spec, x, y))
                names.append(self._name(s, r))
        run.gather(pending, names)
        self._reduces = []
        if self.replicas > 1:
            for s in range(n_stages):
                members = {}
                for r in range(self.replicas):
                    h, key = self._slot(s, r)
                    members.setdefault(h, []).append((r, key))
                self._reduces.append(AllReduce(self.places, members, self.replicas, "gradients"))
        self._rows, self._held, self._updating = 0, None, ([], [])
        self._bubble = schedules.BubbleLog(n_stages)

    def _bounds(self, model, sample):
        n = len(blocks.layers_of(model))
        if self.cuts is not None:
            return blocks.check_bounds([0, *self.cuts, n], n, "pipeline: cuts")
        if self.stages == 1:
            return [0, n]
        from threadpoolctl import threadpool_limits

        threads = getattr(self.places, "threads", None)  # time the layers as the stages run
        limits = threadpool_limits(threads, "blas") if threads else contextlib.nullcontext()
        with limits:
            return blocks.plan(model, self.stages, by=self.balance, x=sample)

    # ----- one step ------------------------------------------------------------------------------
    def step(self, run, step, index):
        n_stages, total = self.stages, len(index)
        pending, plans = {}, {}
        for r, shard in enumerate(np.array_split(index, self.replicas)):
            micro = [m for m in np.array_split(shard, self.microbatches) if len(m)]
            if not micro:
                continue
            plan = plans[r] = schedules.make(self.schedule, n_stages, len(micro))
            finals = [acts[-1] for acts in plan]
            for s, kind, j in schedules.submission_order(plan):
                h, key = self._slot(s, r)
                job = {"key": key, "stage": s, "j": j}
                if kind == "F":
                    job.update(
                        rows=micro[j],
                        last=s == n_stages - 1,
                        weight=len(micro[j]) / total,
                        noise=[*replicas.noise_key(run.noise_seed, r, step), s, j],
                    )
                    args = () if s == 0 else (pending[r, s - 1, "F", j].outs[0],)
                    outs = 0 if s == n_stages - 1 else 1
                    pending[r, s, kind, j] = self.places.submit_multi(
                        h, forward, outs, job, *args, direct=True
                    )
                else:
                    job.update(final=finals[s] == ("B", j), penalty=r == 0, norm=bool(self._clip))
                    args = () if s == n_stages - 1 else (pending[r, s + 1, "B", j].outs[0],)
                    outs = 1 if s > 0 else 0
                    pending[r, s, kind, j] = self.places.submit_multi(
                        h, backward, outs, job, *args, direct=True
                    )
            self._rows += len(shard)
        keys = list(pending)
        # One wait per step: the previous step's updates (queued before this step's ops at each
        # actor, which runs its ops in order) come back with this step's reports.
        updates, self._updating = self._updating, ([], [])
        values = self.places.gather([*updates[0], *(pending[k] for k in keys)])
        self._record_updates(run.traffic, updates[1], values[: len(updates[0])])
        heads = dict(zip(keys, values[len(updates[0]) :]))
        loss = self._account(run.traffic, heads, plans)
        if self._reduces:
            self._all_reduce(run.traffic, step)
        self._update(run.traffic, step, heads)
        return loss

    def _account(self, traffic, heads, plans) -> float:
        """Record what crossed each cut and each op's busy time, the bubble; returns the loss."""
        last, loss = self.stages - 1, 0.0
        for (r, s, kind, _), head in heads.items():
            name = self._name(s, r)
            traffic.busy(name, head["t1"] - head["t0"])
            if kind == "F" and s < last:
                traffic.record("activations", name, self._name(s + 1, r), size=head["sent"])
            if kind == "B" and s > 0:
                traffic.record("gradients", name, self._name(s - 1, r), size=head["sent"])
            loss += head.get("loss", 0.0) + head.get("penalty", 0.0)
        for r, plan in plans.items():
            self._bubble.add(
                plan,
                {
                    (s, k, j): (heads[r, s, k, j]["t0"], heads[r, s, k, j]["t1"])
                    for s, acts in enumerate(plan)
                    for k, j in acts
                },
            )
        return loss

    def _all_reduce(self, traffic, step):
        """Each stage's copies all-reduce their gradients (allreduce.py), all stages at once."""
        produced = []
        for reduce in self._reduces:
            produced.append({})
            for h, group in reduce.members.items():
                jobs = [
                    {"key": key, "rank": r, "n": self.replicas, "tag": step} for r, key in group
                ]
                n_outs = len(group) * reduce.outputs_per_worker()
                produced[-1][h] = self.places.submit_multi(h, share, n_outs, jobs)
        for s, (reduce, made) in enumerate(zip(self._reduces, produced)):
            names = [self._name(s, r) for r in range(self.replicas)]
            reduce.run(_StageTraffic(traffic, names), made, step)

    def _update(self, traffic, step, heads):
        """Submit every stage's optimizer step; its report is fetched with the next step's."""
        coef = 1.0
        if self._clip:
            norm = math.sqrt(sum(h["sq"] for h in heads.values() if "sq" in h))
            coef = min(1.0, self._clip / (norm + 1e-6))  # torch.nn.utils.clip_grad_norm_
        jobs, chunks, names = {}, {}, {}
        for s in range(self.stages):
            for r in range(self.replicas):
                h, key = self._slot(s, r)
                job = {"key": key, "step": step, "coef": coef}
                if self._reduces:
                    job.update(rank=r, n=self.replicas)
                    job["pending"] = self._reduces[s].parts(r, chunks.setdefault(h, []))
                jobs.setdefault(h, []).append(job)
                names.setdefault(h, []).append(self._name(s, r))
        self._updating = (
            [self.places.submit(h, update, jobs[h], *chunks.get(h, [])) for h in jobs],
            [names[h] for h in jobs],
        )
        for reduce in self._reduces:
            reduce.pending = None

    def _record_updates(self, traffic, names, values):
        for group_names, group in zip(names, values):
            for name, head in zip(group_names, group):
                traffic.busy(name, head["busy"])

    def _drain(self, traffic):
        """Wait for the last submitted updates (the driver needs the weights now)."""
        updates, self._updating = self._updating, ([], [])
        self._record_updates(traffic, updates[1], self.places.gather(updates[0]))

    # ----- the rest ---------------------------------------------------------------------------
    def recover(self, run, hosts, step):
        slots = [(s, self._slot(s, r)[0]) for s in range(self.stages) for r in range(self.replicas)]
        stages = sorted({s for s, h in slots if h in hosts})
        raise PlaceFailure(
            hosts,
            f"pipeline: the place(s) {hosts} holding stage(s) {stages} died during step {step}; "
            "a stage's weights and optimizer state live only at its place, so the step cannot "
            "be redone. Restart from the last saved model (callbacks.ModelCheckpoint, or the "
            "checkpoint-resume way)",
            getattr(self.places, "where", None),
        )

    def finish(self, run):
        self._drain(run.traffic)
        slots = [self._slot(s, 0) for s in range(self.stages)]
        parts = self.places.gather([self.places.submit(h, fetch, key) for h, key in slots])
        self._held = [p["held"] for p in parts]
        blocks.adopt_blocks(run.model, self._blocks, parts)

    def textbook_bytes(self, n_params, steps, itemsize=4):
        total = 2 * self._rows * sum(self.widths) * itemsize
        if self.replicas > 1:
            total += steps * sum(ring_bytes(p, self.replicas, itemsize) for p in self._stage_params)
        return total

    def report(self, run):
        by, names = run.traffic.by_boundary, self._name
        cuts = []
        for c, d in enumerate(self.widths):
            sent = [
                sum(by.get(f"{names(a, r)}->{names(b, r)}", 0) for r in range(self.replicas))
                for a, b in ((c, c + 1), (c + 1, c))
            ]
            cuts.append(
                {
                    "after_layer": self.bounds[c + 1],
                    "d": d,
                    "activations_bytes": sent[0],
                    "gradients_bytes": sent[1],
                    "textbook_bytes": 2 * self._rows * d * run.itemsize,
                }
            )
        timed = getattr(self.places, "name", "") != "inline"
        return {
            "stages": self.stages,
            "microbatches": self.microbatches,
            "replicas": self.replicas,
            "schedule": self.schedule,
            "bounds": self.bounds,
            "cuts": cuts,
            "bubble": self._bubble.report(self.microbatches, timed),
            "in_flight": self._held,
        }

    def describe(self):
        return (
            f"pipeline {self.stages} stages x {self.microbatches} micro-batches "
            f"({self.schedule}, {self.replicas} replica(s)) on {self.places.describe()}"
        )


class _StageTraffic:
    """One stage's all-reduce seen by the traffic log: its worker r is the stage's copy r."""

    def __init__(self, traffic, names):
        self.traffic, self.names = traffic, names

    def _place(self, name):
        return self.names[int(name.removeprefix("worker"))]

    def busy(self, place, seconds):
        self.traffic.busy(self._place(place), seconds)

    def record(self, kind, src, dst, payload=None, size=None, messages=1):
        self.traffic.record(kind, self._place(src), self._place(dst), payload, size, messages)
