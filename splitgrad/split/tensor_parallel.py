"""#8 Tensor (intra-layer) parallel: the weights of each layer pair cut across N places.

What it shards: every consecutive pair of the model (a Sequential) that tensor_shards.py can
cut: a Dense or Conv2D split by its outputs (column-parallel), then only channel-local layers
(pooling, elementwise activations, Flatten), then a Dense or Conv2D split by its inputs
(row-parallel), found greedily from the first layer. Every other layer is replicated: each
place runs it on the whole tensor, identically. A model with no such pair is refused.

One step, at each of the N places at once (each place holds its shards and a copy of the rest):

    forward   for each pair k: the replicated layers before it, then its partial output from
              the whole input; ALL-REDUCE the partial outputs (the pair's one reduction)
    loss      bias and activation of the last pair, the replicated tail, the loss; backward
              through them and through the last pair's shards down to its input
    backward  ALL-REDUCE each pair's partial input gradient, then on through the replicated
              layers before it into the previous pair (skipped when nothing before the first
              pair needs a gradient)
    update    each place steps its own shards and its copy of the replicated weights

The all-reduce is THE one (allreduce.py): activations are reduced in the forward pass (kind
"activations"), input gradients in the backward pass ("gradients"); per pair and pass,
2(N−1)·B·d values in all for a reduced tensor of width d. The replicated layers draw their
dropout masks from the driver's stream, continued identically at every place, so the masks are
the one-place run's. Column-then-row equals the unsharded pair up to float rounding (the sum
over shards is added in another order than one GEMM adds it).
"""

from __future__ import annotations

import copy
import math
import time
from typing import ClassVar

import numpy as np

from .. import random as sg_random
from ..layers import activations
from ..layers.layer import generators
from ..tensor import Tensor
from . import blocks, replicas
from .allreduce import AllReduce, assemble, ring_bytes, send
from .base import NotApplicable, Way
from .host import Slot
from .tensor_shards import MegatronPair, bias_parameter, find_pairs, layer_spec, rebuild


# ----- place side ------------------------------------------------------------------------------
class _Segment:
    """At one place: replicated layers, then one pair's shards (none in the tail segment)."""

    def __init__(self, spec):
        self.rep = [rebuild(s) for s in spec["rep"]]
        self.pair = spec.get("first") is not None
        if self.pair:
            self.first = rebuild(spec["first"])
            self.between = [cls.from_config(config) for cls, config in spec["between"]]
            self.second = rebuild(spec["second"])
            self.bias = None if spec["bias"] is None else bias_parameter(spec["bias"])
            self.activation = spec["activation"]
        self.need = spec.get("need", False)  # does the pair's input need its gradient?

    def params(self):
        out = [p for layer in self.rep for p in layer.parameters()]
        if self.pair:
            out += self.first.parameters() + self.second.parameters()
            out += [self.bias] if self.bias is not None else []
        return out

    def replicated(self, h):
        for layer in self.rep:
            h = layer(h)
        return h

    def partial(self, u):
        y = self.first(u)
        for layer in self.between:
            y = layer(y)
        return self.second(y)

    def finish(self, total):
        return activations.get(self.activation)(total if self.bias is None else total + self.bias)


class _Program:
    """One place's part of the model: the segments, the tail, the optimizer, the loss."""

    def __init__(self, spec):
        self.segments = [_Segment(s) for s in spec["segments"]]
        self.tail = _Segment({"rep": spec["tail"]})
        self.opt = spec["opt_cls"].from_config(copy.deepcopy(spec["opt_config"]))
        self.opt.build(self.parameters())
        self.opt.load_state_dict(copy.deepcopy(spec["opt_state"]))
        self.loss = copy.deepcopy(spec["loss"])
        self.kept = {}

    @property
    def optimizer(self):
        """The place's optimizer under a model's name (host.set_learning_rate finds it)."""
        return self.opt

    def parameters(self):
        return [p for seg in [*self.segments, self.tail] for p in seg.params()]

    def replicated_layers(self):
        return [layer for seg in [*self.segments, self.tail] for layer in seg.rep]


def setup_rank(host, key, spec, x, y, stream):
    """Place op: build this place's shards and copies (spec from the driver) in slot `key`."""
    program = _Program(spec)
    slot = Slot(program, x, y)
    slot.stream = None  # kept by the phase op itself (its first argument is not a slot key)
    slot.state.update(program=program, stream=copy.deepcopy(stream))
    host.slots[key] = slot
    return len(program.parameters())


def _phase(slot, job, received):
    """Run one phase of the step; returns (vector for the next all-reduce or None, loss)."""
    program, rows, kind = slot.state["program"], job["rows"], job["phase"][0]
    into = program.opt.grad_buffers()
    segs, kept = program.segments, program.kept
    if kind == "F":
        k = job["phase"][1]
        if k == 0:
            s, h = None, Tensor(np.asarray(slot.x[rows]))
        else:  # the all-reduced output of pair k-1, as a leaf: its gradient ends there
            s = Tensor(received.reshape(kept[k - 1][3].shape), requires_grad=True)
            h = segs[k - 1].finish(s)
        u = segs[k].replicated(h)
        leaf = Tensor(u.data, requires_grad=segs[k].need)
        p = segs[k].partial(leaf)
        kept[k] = (s, u, leaf, p)
        return p.data.ravel(), None
    if kind == "L":
        last = len(segs) - 1
        s = Tensor(received.reshape(kept[last][3].shape), requires_grad=True)
        out = program.tail.replicated(segs[last].finish(s))
        loss = program.loss(slot.y[rows], out)
        for term in (
            t for layer in program.replicated_layers() for t in layer.regularization_losses()
        ):
            loss = loss + term
        loss.backward(into=into)
        return _back_through_pair(program, last, s.grad, into), float(loss.data)
    k = job["phase"][1]  # "B": the all-reduced gradient of pair k's input
    _, u, _, _ = kept[k]
    if u.requires_grad:
        u.backward(received.reshape(u.shape), into=into)
    if k == 0:
        return None, None
    return _back_through_pair(program, k - 1, kept[k][0].grad, into), None


def _back_through_pair(program, k, grad, into):
    _, _, leaf, p = program.kept[k]
    p.backward(grad, into=into)
    return leaf.grad.ravel() if program.segments[k].need else None


def phase(host, jobs, *chunks):
    """Place op: per job (one per rank here), finish the pending all-reduce, run the phase,
    send the next vector's pieces; the last phase takes the optimizer step."""
    heads, outs = [], []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        program = slot.state["program"]
        received = assemble(slot, job, chunks) if job.get("pending") is not None else None
        with replicas.rng_scope(slot.state["stream"]) as box:
            vec, loss = _phase(slot, job, received)
        slot.state["stream"] = box["state"]
        sent = []
        if vec is not None:
            slot.vec = vec
            pieces, sent = send(slot, job)
            outs.extend(pieces)
        if job["last"]:
            program.opt.step()
            program.opt.zero_grad()
            program.kept.clear()
            slot.step = job["step"]
        heads.append({"loss": loss, "sent": sent, "busy": time.perf_counter() - start})
    return heads, outs


def fetch(host, key):
    """Place op: this place's weights (in its optimizer's order), optimizer state, the
    replicated layers' weights and generators, and its random stream."""
    slot = host.slots[key]
    program = slot.state["program"]
    layers = program.replicated_layers()
    return {
        "params": [p.data.copy() for p in program.parameters()],
        "opt_state": program.opt.state_dict(),
        "replicated": [layer.get_weights() for layer in layers],
        "rngs": [{k: g.bit_generator.state for k, g in generators(la).items()} for la in layers],
        "stream": copy.deepcopy(slot.state["stream"]),
    }


# ----- driver side -----------------------------------------------------------------------------
class TensorParallel(Way):
    """Layer pairs sharded over N places (Megatron); bytes = 2(N−1)·B·d per pair and pass."""

    name = "tensor-parallel"
    number, cut, crosses = 8, "inside a layer", "partial activations, partial input gradients"
    formula = "2(N-1)*B*d per layer pair and pass (all-reduce)"
    checks = (
        "column- then row-parallel layers = the unsharded layers; "
        "concatenated shard gradients = full gradients"
    )
    options: ClassVar[dict] = {}
    equivalent = True
    note = "each pair's output summed over its shards: the unsharded layers up to float rounding"

    def __init__(self, workers: int = 2, places=None):
        super().__init__(places)
        if int(workers) < 1:
            raise ValueError(f"TensorParallel: workers must be >= 1, got {workers}")
        self.workers = int(workers)

    def setup(self, run):
        model, n = run.model, self.workers
        opt = model.optimizer
        if opt.clipnorm is not None or opt.global_clipnorm is not None:
            raise ValueError(
                "tensor-parallel: clipnorm and global_clipnorm need norms over every shard, "
                "which no place has; use clipvalue (elementwise), or another way"
            )
        layers = blocks.layers_of(model)
        found = find_pairs(layers, n)
        if not found:
            raise NotApplicable(
                f"tensor-parallel shards consecutive layer pairs: a Dense or Conv2D with at "
                f"least {n} outputs (split by outputs), then only pooling, elementwise "
                f"Activation or Flatten layers, then a Dense or Conv2D (split by inputs); "
                f"model {model.name!r} ({[type(la).__name__ for la in layers]}) has none"
            )
        self.pairs = [MegatronPair(layers[i], layers[i + 1 : j], layers[j], n) for i, j in found]
        acts = blocks.boundary_activations(model, run.x[:1])
        self._widths = []  # per pair: (d of the reduced output, d of its input if reduced)
        where = {id(p): i for i, p in enumerate(model.parameters())}
        start, segments = 0, [[] for _ in range(n)]
        self._sources, self._replicated = [[] for _ in range(n)], []
        for k, ((i, j), pair) in enumerate(zip(found, self.pairs)):
            rep = layers[start:i]
            need = k > 0 or any(p.requires_grad for la in rep for p in la.parameters())
            d_in = math.prod(acts[i].shape[1:]) if need else 0
            self._widths.append((math.prod(acts[j + 1].shape[1:]), d_in))
            for c in range(n):
                first, mids, second = pair.ranks[c]
                segments[c].append(
                    {
                        "rep": [layer_spec(la) for la in rep],
                        "first": layer_spec(first),
                        "between": [(type(b), b.get_config()) for b in mids],
                        "second": layer_spec(second),
                        "bias": pair.bias,
                        "activation": pair.activation_name,
                        "need": need,
                    }
                )
                src = self._sources[c]
                src += [(where[id(p)], None, None) for la in rep for p in la.parameters()]
                src += [
                    (where[id(getattr(la, nm))], ax, idx) for la, nm, ax, idx in pair.sources[c]
                ]
                if pair.bias is not None:
                    src.append((where[id(pair.second.bias)], None, None))
            self._replicated += rep
            start = j + 1
        tail = layers[start:]
        self._replicated += tail
        for c in range(n):
            self._sources[c] += [(where[id(p)], None, None) for la in tail for p in la.parameters()]
        self._phases = self._plan()
        opt = model.optimizer
        state = opt.state_dict()
        x_ref, y_ref = run.data_refs()
        stream = sg_random.get_state()
        pending = []
        for c, (h, key) in enumerate(self.slots()):
            spec = {
                "segments": segments[c],
                "tail": [layer_spec(la) for la in tail],
                "opt_cls": type(opt),
                "opt_config": opt.get_config(),
                "opt_state": blocks.sliced_state(state, self._sources[c]),
                "loss": model.loss,
            }
            pending.append(
                self.places.submit(h, setup_rank, key, self.places.put(spec), x_ref, y_ref, stream)
            )
        run.gather(pending, [f"worker{c}" for c in range(n)])
        members = self.members()
        self._fwd = AllReduce(self.places, members, n, "activations")
        self._bwd = AllReduce(self.places, members, n, "gradients")
        self._rows = 0

    def _plan(self):
        """The phases of one step: F_0..F_{K-1}, L, then B_k while pair k's input needs it."""
        k_last = len(self.pairs) - 1
        phases = [("F", k) for k in range(k_last + 1)] + [("L",)]
        k = k_last
        while k >= 0 and self._widths[k][1]:  # pair k's input gradient is all-reduced
            phases.append(("B", k))
            k -= 1
        return phases

    def step(self, run, step, index):
        prev, loss = None, None
        for i, phase_id in enumerate(self._phases):
            last = i == len(self._phases) - 1
            reduce = None if last else (self._fwd if phase_id[0] == "F" else self._bwd)
            produced = {}
            for h, group in self.members().items():
                chunks, jobs = [], []
                for rank, key in group:
                    jobs.append(
                        {
                            "key": key,
                            "rank": rank,
                            "n": self.workers,
                            "tag": (step, i),
                            "phase": phase_id,
                            "rows": index,
                            "last": last,
                            "step": step,
                            "pending": prev.parts(rank, chunks) if prev is not None else None,
                        }
                    )
                outs = 0 if last else len(group) * reduce.outputs_per_worker()
                produced[h] = self.places.submit_multi(h, phase, outs, jobs, *chunks)
            if prev is not None:
                prev.pending = None
            if reduce is not None:
                heads = reduce.run(run.traffic, produced, (step, i))
            else:
                heads = self._gather(run.traffic, produced)
            if phase_id[0] == "L":
                loss = heads[0]["loss"]
            prev = reduce
        self._rows += len(index)
        return loss

    def _gather(self, traffic, produced):
        hosts = list(produced)
        out = {}
        for h, heads in zip(hosts, self.places.gather([produced[h] for h in hosts])):
            for (rank, _), head in zip(self.members()[h], heads):
                traffic.busy(f"worker{rank}", head["busy"])
                out[rank] = head
        return out

    def finish(self, run):
        model = run.model
        parts = self.places.gather([self.places.submit(h, fetch, key) for h, key in self.slots()])
        for layer, weights, rngs in zip(self._replicated, parts[0]["replicated"], parts[0]["rngs"]):
            layer.set_weights(weights)
            for key, gen in generators(layer).items():
                gen.bit_generator.state = rngs[key]
        params = model.parameters()
        for c, part in enumerate(parts):
            for (pos, axis, idx), value in zip(self._sources[c], part["params"]):
                if idx is None:
                    params[pos].data[...] = value
                else:
                    np.moveaxis(params[pos].data, axis, 0)[idx] = np.moveaxis(value, axis, 0)
        merged = blocks.scatter_state(
            model.optimizer.state_dict(),
            [(src, part["opt_state"]) for src, part in zip(self._sources, parts)],
        )
        model.optimizer.load_state_dict(merged)
        sg_random.set_state(parts[0]["stream"])

    def textbook_bytes(self, n_params, steps, itemsize=4):
        widths = sum(d_out + d_in for d_out, d_in in self._widths)
        return ring_bytes(self._rows * widths, self.workers, itemsize)

    def report(self, run):
        return {
            "workers": self.workers,
            "pairs": [
                {"layers": [p.first.name, p.second.name], "d_out": d_out, "d_in": d_in}
                for p, (d_out, d_in) in zip(self.pairs, self._widths)
            ],
            "replicated_layers": [la.name for la in self._replicated],
        }
