"""#9 Sharded optimizer state, gradients and parameters (ZeRO stages 1–3; FSDP).

N workers split every global batch as in data parallel (#1), but no worker holds the whole
optimizer: the flat parameter vector is cut into N pieces (`replicas.chunk_bounds`) and worker
r keeps piece r's master copy and optimizer state and takes piece r's optimizer step.

    stage 1  each worker: all weights, all gradients, 1/N of the optimizer state
    stage 2  ... and 1/N of the gradients (the full vector is released after the reduce-scatter)
    stage 3  ... and 1/N of the weights: a layer's weights are gathered when it runs, forward
             and again backward (there the layer is recomputed from its stored input), then
             dropped; stage 3 cuts every layer into N pieces, so each gather is one layer's

One step is the two halves of allreduce.py's protocol with the optimizer step between them:
reduce-scatter of the gradients (worker r sums piece r over all workers, in rank order), the
step on piece r, all-gather of the updated weights. Every update rule in optim/ is elementwise,
so the N piece-steps are the whole step bit for bit: the weights equal data parallel's (#1)
bitwise, and one place's up to float rounding. Bytes in all per step: stages 1–2 2(N−1)·P, as
#1; stage 3 3(N−1)·P (the weights are gathered twice).

Memory per worker (b bytes per value; S optimizer state arrays, Adam 2, momentum SGD 1;
"optimizer" = the piece's master copy and its state, K = (1+S)·b bytes per value as in the
ZeRO paper), measured by `footprint` and reported in `history.traffic["memory"]`:
    stage 1: P·b + P·b + (1+S)·P·b/N   stage 2: P·b + (2+S)·P·b/N   stage 3: (2+S)·P·b/N
(+ one layer's gathered weights while it runs). The update rule's scratch buffers (Adam: two
per value) are also only piece-sized; they are working memory and not counted here.

Checkpoints are plain model checkpoints: `finish` gathers the pieces into the driver's model
(weights and the whole optimizer state), `model.save(path)` writes it, and a model loaded from
it trains on alone or under Zero(M) for any M (`setup` cuts its optimizer state anew).
`k` > 1 (stages 1–2) accumulates k micro-batches per worker before the reduce-scatter (ZeRO ×
gradient accumulation, #13): N workers × k micro-batches = one batch of B (allclose).
"""

from __future__ import annotations

import copy
import itertools
import time
from typing import ClassVar

import numpy as np

from ..layers.layer import generators
from ..tensor import Tensor, no_grad
from . import host as host_ops
from . import replicas
from .base import Way
from .blocks import layers_of
from .data_parallel import DataParallel
from .offload import (
    backward_only,
    cut_state,
    export_piece,
    flat_state,
    load_flat_state,
    piece_optimizer,
    put,
    step_piece,
    take,
)
from .places import PlaceFailure


# ----- the plan: which piece of which layer each worker holds ----------------------------------
def make_plan(model, n: int, stage: int) -> dict:
    """Units (ranges of the flat parameter vector cut separately: the whole vector in stages
    1–2, one per layer in stage 3), each unit's N pieces, and the layer segments of stage 3."""
    shapes = [tuple(p.shape) for p in model.parameters()]
    total = int(sum(int(np.prod(s)) for s in shapes))
    segments, units, tensors = [(0, 0)], [(0, total)], [(0, len(shapes))]
    if stage == 3:
        segments, units, tensors = _segments(model, total)
    ranges = []
    for r in range(n):
        mine = []
        for lo, hi in units:
            a, b = replicas.chunk_bounds(hi - lo, n, r)
            mine.append((lo + a, lo + b))
        ranges.append(mine)
    return {"n": n, "stage": stage, "units": units, "segments": segments, "ranges": ranges,
            "tensors": tensors, "shapes": shapes, "total": total}  # fmt: skip


def _segments(model, total):
    """Runs of layers each holding one layer with parameters (stage 3 gathers per run)."""
    layers = layers_of(model)
    counts = [sum(p.size for p in layer.parameters()) for layer in layers]
    if sum(counts) != total:
        raise ValueError(
            f"Zero(stage=3): the model's parameters ({total}) are not all inside its layers "
            f"({sum(counts)}); stage 3 needs a Sequential whose layers own every weight"
        )
    starts = [0]
    for i, c in enumerate(counts):
        if c and i > starts[-1] and any(counts[starts[-1] : i]):
            starts.append(i)
    bounds = [*starts, len(layers)]
    segments = list(itertools.pairwise(bounds))
    units, tensors, lo, i = [], [], 0, 0
    for a, b in segments:
        units.append((lo, lo + sum(counts[a:b])))
        n_tensors = sum(len(layer.parameters()) for layer in layers[a:b])
        tensors.append((i, i + n_tensors))
        lo, i = units[-1][1], i + n_tensors
    return segments, units, tensors


# ----- place side ------------------------------------------------------------------------------
def setup(host, jobs, spec, x, y, plan):
    """Place op: per job, a worker with the model minus its optimizer, its piece of the weights
    (the master copy) and of the optimizer state; stage 3 then drops the model's weights.
    Outputs, for stage 3, the worker's piece of each unit (what the first step gathers)."""
    heads, outs = [], []
    for job in jobs:
        key, rank = job["key"], job["rank"]
        host_ops.setup(host, key, spec, x, y)
        slot = host.slots[key]
        flat = replicas.get_flat(slot.model)
        slot.model.optimizer = None  # no worker holds the optimizer of the whole model
        master, opt = piece_optimizer(spec, take(flat, plan["ranges"][rank]), job["state"])
        slot.state = {"plan": plan, "rank": rank, "master": master, "opt": opt, "own": {},
                      "grad": None, "peak": 0}  # fmt: skip
        if plan["stage"] == 3:
            _release(slot.model.parameters())
            outs.extend(_unit_pieces(slot))
        heads.append({"busy": 0.0})
    return heads, outs


def _release(params):
    for p in params:
        p.data = np.empty(0, p.dtype)  # the layer's weights exist only while it runs


def _unit_pieces(slot) -> list:
    """This worker's master values cut by unit (one output per unit, for the gathers)."""
    z = slot.state
    values, out, at = z["master"].data, [], 0
    for a, b in z["plan"]["ranges"][z["rank"]]:
        out.append(values[at : at + b - a].copy())
        at += b - a
    return out


def _pieces_for_peers(vec, ranges, rank, n) -> tuple[list, list]:
    """Reduce-scatter's first half: piece `dst` of `vec` for every peer (ascending)."""
    peers = [dst for dst in range(n) if dst != rank]
    outs = [take(vec, ranges[dst]) for dst in peers]
    return outs, [(dst, o.nbytes) for dst, o in zip(peers, outs)]


def compute(host, jobs, *chunks):
    """Place op (stages 1–2): put the last all-gathered weights together, compute this worker's
    Σ_j (n_j/B)·∇loss over its k micro-batches, send piece c of it to peer c."""
    heads, outs = [], []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        z = slot.state
        plan, rank, n = z["plan"], z["rank"], z["plan"]["n"]
        got = _gather_all(slot, job["parts"], chunks)
        loss, vec = 0.0, np.zeros(plan["total"], replicas.flat_dtype(slot.model))
        micro = [m for m in np.array_split(job["shard"], job["k"]) if len(m)]
        with replicas.rng_scope(replicas.key_state(job["noise"])):
            for i, idx in enumerate(micro):
                weight = len(idx) / job["total"]
                value = backward_only(slot.model, slot.x[idx], slot.y[idx])
                g = replicas.get_flat_grad(slot.model) * slot.cast(weight)
                vec = g if i == 0 else vec + g
                loss += value * weight
        pieces, sent = _pieces_for_peers(vec, plan["ranges"], rank, n)  # stages 1–2: one unit
        z["own"] = {0: take(vec, plan["ranges"][rank])}
        z["grad"] = vec if plan["stage"] == 1 else None  # stage 1 keeps all the gradients
        outs.extend(pieces)
        heads.append({"loss": loss, "got": got, "sent": sent, "busy": time.perf_counter() - start})
    return heads, outs


def _gather_all(slot, parts, chunks) -> list:
    """All-gather's second half: the peers' updated pieces and this worker's own into the
    model's weights. `parts` = [(src, position in chunks)], None when nothing is pending."""
    if parts is None:
        return []
    z = slot.state
    ranges = z["plan"]["ranges"]
    full = np.empty(z["plan"]["total"], replicas.flat_dtype(slot.model))
    put(full, ranges[z["rank"]], z["master"].data)
    for src, pos in parts:
        put(full, ranges[src], chunks[pos])
    replicas.set_flat(slot.model, full)
    return [(src, chunks[pos].nbytes) for src, pos in parts]


def flush(host, jobs, *chunks):
    """Place op: apply the pending all-gather (the driver needs the weights now)."""
    heads = []
    for job in jobs:
        got = _gather_all(host.slots[job["key"]], job["parts"], chunks)
        heads.append({"got": got, "sent": [], "busy": 0.0})
    return heads, []


def update(host, jobs, *chunks):
    """Place op: reduce-scatter's second half (sum piece `rank` of every unit over all
    workers, in rank order), then the optimizer step on this worker's piece. Outputs the
    updated piece of each unit, for the peers' all-gathers."""
    heads, outs = [], []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        z = slot.state
        plan, rank = z["plan"], z["rank"]
        totals = []
        for u in range(len(z["own"])):  # a peer's pieces of the units follow one another
            mine = {src: chunks[pos + u] for src, pos in job["parts"]}
            mine[rank] = z["own"][u]
            total = mine[0].copy()
            for src in range(1, plan["n"]):  # rank order: every worker sums alike (bitwise)
                total += mine[src]
            totals.append(total)
        grad = totals[0] if len(totals) == 1 else np.concatenate(totals)
        step_piece(z["master"], z["opt"], grad)
        if plan["stage"] == 1:
            put(z["grad"], plan["ranges"][rank], grad)  # stage 1 keeps the whole gradient
        else:
            z["grad"] = grad  # stages 2–3: only this worker's piece
        z["own"] = {}
        pieces = _unit_pieces(slot) if plan["stage"] == 3 else [z["master"].data.copy()]
        outs.extend(pieces)
        heads.append({"busy": time.perf_counter() - start})
    return heads, outs


def export(host, key):
    """Place op: this worker's piece (master and optimizer state), and from its model the
    weights that are not trained (normalisation statistics) and the layer generators."""
    slot = host.slots[key]
    z = slot.state
    model = slot.model
    return {
        **export_piece(z["master"], z["opt"]),
        "frozen": [p.data.copy() for p in model.weights if not p.requires_grad],
        "layer_rngs": {k: g.bit_generator.state for k, g in generators(model).items()},
    }


def footprint(host, key) -> dict:
    """Place op: bytes this worker holds between steps, by kind (measured from its arrays)."""
    slot = host.slots[key]
    z = slot.state
    opt_state = z["opt"].state_dict()["state"].values()
    return {
        "weights": int(sum(p.data.nbytes for p in slot.model.parameters())),
        "gradients": 0 if z["grad"] is None else int(z["grad"].nbytes),
        "optimizer": int(z["master"].data.nbytes + sum(a.nbytes for a in opt_state)),
        "gathered_peak": int(z["peak"]),
    }


# ----- place side, stage 3: a layer's weights exist only while it runs --------------------------
def _own(z, u) -> np.ndarray:
    """This worker's piece of unit u (a view of its master values)."""
    mine = z["plan"]["ranges"][z["rank"]]
    at = sum(b - a for a, b in mine[:u])
    return z["master"].data[at : at + mine[u][1] - mine[u][0]]


def _materialize(slot, u, parts, chunks):
    """All-gather of unit u: its weights from the peers' pieces and this worker's own, put
    into its layers. Returns (layers, their parameters, [(src, bytes) received])."""
    z, model = slot.state, slot.model
    plan = z["plan"]
    lo, hi = plan["units"][u]
    full = np.empty(hi - lo, z["master"].dtype)
    pieces = {src: chunks[pos] for src, pos in parts}
    pieces[z["rank"]] = _own(z, u)
    for src, piece in pieces.items():
        a, b = plan["ranges"][src][u]
        full[a - lo : b - lo] = piece
    a, b = plan["segments"][u]
    layers = layers_of(model)[a:b]
    i0, i1 = plan["tensors"][u]
    params, at = [p for layer in layers for p in layer.parameters()], 0
    for p, shape in zip(params, plan["shapes"][i0:i1]):
        size = int(np.prod(shape))
        p.data = full[at : at + size].reshape(shape)
        at += size
    z["peak"] = max(z["peak"], full.nbytes)
    return layers, params, [(src, chunks[pos].nbytes) for src, pos in parts]


def _layer_state(layers) -> dict:
    """What running the layers changes besides the output: their generators (seeded
    Dropout) and untrained weights (normalisation statistics); recomputing must not."""
    return {
        "gens": [
            copy.deepcopy({k: g.bit_generator.state for k, g in generators(la).items()})
            for la in layers
        ],
        "frozen": [p.data.copy() for la in layers for p in la.weights if not p.requires_grad],
    }


def _set_layer_state(layers, state):
    for layer, gens in zip(layers, state["gens"]):
        for k, g in generators(layer).items():
            g.bit_generator.state = copy.deepcopy(gens[k])
    frozen = [p for la in layers for p in la.weights if not p.requires_grad]
    for p, a in zip(frozen, state["frozen"]):
        p.data[...] = a


def forward_unit(host, jobs, *chunks):
    """Place op (stage 3): gather unit u's weights, run its layers on the stored input (no
    graph is kept), store their output for the next unit, drop the weights."""
    heads = []
    for job in jobs:
        start = time.perf_counter()
        slot, u = host.slots[job["key"]], job["unit"]
        z, model = slot.state, slot.model
        if u == 0:
            if not model.training:
                model.train()
            z.update(acts={}, marks={}, after={}, loss=0.0, penalty=0.0)
            z["rng"], z["h"] = replicas.key_state(job["noise"]), slot.x[job["shard"]]
        layers, params, got = _materialize(slot, u, job["parts"], chunks)
        if len(job["shard"]):
            z["marks"][u] = (copy.deepcopy(z["rng"]), _layer_state(layers))
            z["acts"][u] = h = z["h"]
            with replicas.rng_scope(z["rng"]) as box, no_grad(), model.threads():
                for layer in layers:
                    h = layer(h)
            z["rng"], z["h"] = box["state"], h.data
            z["after"][u] = _layer_state(layers)
        _release(params)
        heads.append({"got": got, "sent": [], "busy": time.perf_counter() - start})
    return heads, []


def backward_unit(host, jobs, *chunks):
    """Place op (stage 3): gather unit u's weights again, recompute its layers from the stored
    input (same random draws), backpropagate (the loss at the last unit, else the gradient the
    unit above left), drop the weights, send piece c of the unit's gradient to peer c."""
    heads, outs = [], []
    for job in jobs:
        start = time.perf_counter()
        slot, u = host.slots[job["key"]], job["unit"]
        z, model = slot.state, slot.model
        plan, rank, n = z["plan"], z["rank"], z["plan"]["n"]
        layers, params, got = _materialize(slot, u, job["parts"], chunks)
        lo, hi = plan["units"][u]
        grad = np.zeros(hi - lo, z["master"].dtype)
        if len(job["shard"]):
            rng, before = z["marks"].pop(u)
            _set_layer_state(layers, before)
            for p in params:
                p.grad = None
            inp = z["acts"].pop(u)
            with replicas.rng_scope(rng), model.threads():
                t = h = Tensor(inp, requires_grad=True) if u else inp
                for layer in layers:
                    h = layer(h)
                penalties = [q for layer in layers for q in layer.regularization_losses()]
                if u == len(plan["units"]) - 1:
                    h = model.loss(slot.y[job["shard"]], h)
                    for q in penalties:
                        h = h + q
                    z["loss"] = float(h.data)
                    h.backward()
                else:
                    h.backward(z.pop("upstream"))
                    if penalties:
                        total = penalties[0]
                        for q in penalties[1:]:
                            total = total + q
                        z["penalty"] += float(total.data)
                        total.backward()
            _set_layer_state(layers, z["after"].pop(u))
            if u:
                z["upstream"] = t.grad
            if params:
                parts = [
                    np.zeros(p.size, p.dtype) if p.grad is None else p.grad.ravel() for p in params
                ]
                grad = np.concatenate(parts) * slot.cast(job["scale"])
        _release(params)
        local = [[(a - lo, b - lo)] for a, b in (r[u] for r in plan["ranges"])]
        pieces, sent = _pieces_for_peers(grad, local, rank, n)
        z["own"][u] = take(grad, local[rank])
        outs.extend(pieces)
        loss = (z["loss"] + z["penalty"]) * job["scale"] if u == 0 else None
        heads.append({"loss": loss, "got": got, "sent": sent, "busy": time.perf_counter() - start})
    return heads, outs


# ----- driver side -----------------------------------------------------------------------------
class Zero(Way):
    """ZeRO over N workers: reduce-scatter the gradients, step 1/N each, all-gather the weights;
    2(N−1)·P per step in all (stage 3: 3(N−1)·P); data parallel's weights bit for bit."""

    name = "zero"
    number, cut, crosses = 9, "the optimizer state", "reduce-scatter grads + all-gather weights"
    formula = "2(N-1)/N*P per worker/step (stage 3: 3(N-1)/N*P)"
    checks = "same weights as #1 (bitwise); 1/N optimizer state per place; reloads at any N"
    options: ClassVar[dict] = {"stage": 1, "k": 1}
    equivalent = True
    note = "data parallel whose optimizer is cut into N pieces: #1's weights bit for bit"

    def __init__(self, workers: int = 2, stage: int = 1, k: int = 1, places=None):
        super().__init__(places)
        self.workers, self.stage, self.k = int(workers), int(stage), int(k)
        if self.workers < 1 or self.stage not in (1, 2, 3) or self.k < 1:
            raise ValueError(
                f"Zero: need workers >= 1, stage 1, 2 or 3 and k >= 1, got workers={workers}, "
                f"stage={stage}, k={k}"
            )
        if self.stage == 3 and self.k > 1:
            raise ValueError(
                "Zero(stage=3, k>1): accumulating micro-batches would gather every layer's "
                "weights k times per step; use stage 1 or 2 with k, or k=1 with stage 3"
            )
        self.plan = self._pieces = None

    def expectation(self, model):
        if replicas.has_dropout(model):
            return False, DataParallel.dropout_note
        return super().expectation(model)

    # ----- plumbing: one call per place for all its workers --------------------------------------
    def _submit(self, op, per_job: int, make_job, extra=()) -> dict:
        """`op` at every place for its workers; make_job(rank, key, chunks) returns the job,
        appending the references it needs to `chunks` (the call's last arguments)."""
        pending = {}
        for h, group in self.members().items():
            chunks = []
            jobs = [make_job(rank, key, chunks) for rank, key in group]
            pending[h] = self.places.submit_multi(
                h, op, per_job * len(group), jobs, *extra, *chunks
            )
        return pending

    def _out(self, pending, rank, i, per_job):
        """Output i of worker `rank`'s job in a `_submit` call with `per_job` outputs each."""
        h = self.places.host_of(rank)
        j = [r for r, _ in self.members()[h]].index(rank)
        return pending[h].outs[j * per_job + i]

    def _sent(self, pending, src, dst):
        """The piece worker `src` made for worker `dst` (outputs in ascending peer order)."""
        return self._out(pending, src, dst if dst < src else dst - 1, self.workers - 1)

    def _job(self, fields, refs=None):
        """A make_job for `_submit`: the fields `fields(rank)` and, as "parts", where the call
        finds each peer's pieces `refs(src, rank)` (a reference or a list of them) among its
        arguments: [(src, position of the first)]; no `refs`, parts None."""

        def make(rank, key, chunks):
            parts = None if refs is None else []
            for src in range(self.workers) if refs is not None else ():
                if src != rank:
                    parts.append((src, len(chunks)))
                    got = refs(src, rank)
                    chunks.extend(got if isinstance(got, list) else [got])
            return {"key": key, **fields(rank), "parts": parts}

        return make

    def _collect(self, run, pendings) -> float:
        """Wait for the calls, account what each worker received and sent; the batch loss."""
        order = [(p, h) for p in pendings for h in p]
        values = self.places.gather([p[h] for p, h in order])
        losses = {}
        for (_, h), heads in zip(order, values):
            for (rank, _), head in zip(self.members()[h], heads):
                run.traffic.busy(f"worker{rank}", head["busy"])
                for src, size in head.get("got", []):
                    run.traffic.record("weights", f"worker{src}", f"worker{rank}", size=size)
                for dst, size in head.get("sent", []):
                    run.traffic.record("gradients", f"worker{rank}", f"worker{dst}", size=size)
                if head.get("loss") is not None:
                    losses[rank] = head["loss"]
        return float(sum(losses[r] for r in sorted(losses)))

    # ----- the way ------------------------------------------------------------------------------
    def setup(self, run):
        self.plan = plan = make_plan(run.model, self.workers, self.stage)
        state = flat_state(run.model)
        spec = {**run.spec(), "opt_state": None}  # the whole optimizer never leaves the driver
        units = len(plan["units"]) if self.stage == 3 else 0
        done = self._submit(
            setup,
            units,
            self._job(lambda r: {"rank": r, "state": cut_state(state, plan["ranges"][r])}),
            (self.places.put(spec), *run.data_refs(), plan),
        )
        self.places.gather(list(done.values()))
        self._pieces = None  # stages 1–2: every worker starts with all the weights
        if self.stage == 3:
            self._pieces = [
                [self._out(done, r, u, units) for u in range(units)] for r in range(self.workers)
            ]

    def _gathered(self, u):
        """refs for `_job`: the pieces of unit u the last update left (None: nothing pending)."""
        pieces = self._pieces
        return None if pieces is None else (lambda src, dst: pieces[src][u])

    def step(self, run, step, index):
        n = self.workers
        shards = np.array_split(index, n)

        def work(**more):
            return lambda r: {
                "shard": shards[r],
                "scale": len(shards[r]) / len(index),
                "total": len(index),
                "k": self.k,
                "noise": replicas.noise_key(run.noise_seed, r, step),
                **more,
            }

        if self.stage < 3:  # all of the model at once; the pending all-gather first
            grads = [self._submit(compute, n - 1, self._job(work(), self._gathered(0)))]
            calls = grads
        else:  # unit by unit, forward, then backward from the top
            units = range(len(self.plan["units"]))
            calls = [
                self._submit(forward_unit, 0, self._job(work(unit=u), self._gathered(u)))
                for u in units
            ]
            grads = [
                self._submit(backward_unit, n - 1, self._job(work(unit=u), self._gathered(u)))
                for u in reversed(units)
            ][::-1]
            calls = calls + grads

        def reduced(src, dst):  # what worker src made of each unit for worker dst
            return [self._sent(g, src, dst) for g in grads]

        updated = self._submit(update, len(grads), self._job(lambda r: {}, reduced))
        loss = self._collect(run, [*calls, updated])
        per = len(grads)
        self._pieces = [[self._out(updated, r, u, per) for u in range(per)] for r in range(n)]
        return loss

    def recover(self, run, hosts, step):
        raise PlaceFailure(
            hosts,
            "zero keeps each piece of the optimizer state at one place only, so a dead place's "
            "piece is lost; resume from a checkpoint (model.save after an epoch, then fit the "
            "loaded model again with Zero on the places that are left)",
        )

    def finish(self, run):
        if self.stage < 3 and self._pieces is not None:  # the last all-gather, into the models
            self._collect(run, [self._submit(flush, 0, self._job(lambda r: {}, self._gathered(0)))])
            self._pieces = None
        model, ranges = run.model, self.plan["ranges"]
        pieces = self.places.gather([self.places.submit(h, export, key) for h, key in self.slots()])
        flat = np.empty(self.plan["total"], replicas.flat_dtype(model))
        for piece, mine in zip(pieces, ranges):
            put(flat, mine, piece["master"])
        replicas.set_flat(model, flat)
        for p, a in zip([p for p in model.weights if not p.requires_grad], pieces[0]["frozen"]):
            p.data[...] = a
        for key, gen in generators(model).items():
            gen.bit_generator.state = pieces[0]["layer_rngs"][key]
        load_flat_state(model, pieces, ranges)

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return (3 if self.stage == 3 else 2) * (self.workers - 1) * n_params * itemsize * steps

    def report(self, run):
        measured = self.places.gather(
            [self.places.submit(h, footprint, key) for h, key in self.slots()]
        )
        plan, b = self.plan, run.itemsize
        s = len(run.model.optimizer.state_names())
        biggest = max((hi - lo for lo, hi in plan["units"]), default=0)
        memory = []
        for r, feet in enumerate(measured):
            piece = sum(hi - lo for lo, hi in plan["ranges"][r])
            formula = {
                "weights": 0 if self.stage == 3 else plan["total"] * b,
                "gradients": (plan["total"] if self.stage == 1 else piece) * b,
                "optimizer": (1 + s) * piece * b,
                "gathered_peak": biggest * b if self.stage == 3 else 0,
            }
            memory.append({"worker": r, "measured": feet, "formula": formula})
        return {"workers": self.workers, "stage": self.stage, "k": self.k, "memory": memory}
