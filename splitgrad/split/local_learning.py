"""#12 Local (decoupled) learning: greedy block-wise training and synthetic gradients.

The model is cut into S consecutive blocks (`blocks.cut`, balanced by parameter count), block
b at place b. Activations go up from block to block (B×d per cut per batch), and no block
waits for a gradient from the block above.

Greedy (Belilovsky et al. 2019; Nøkland & Eidnes 2019): every block but the last trains with
a small auxiliary head of its own (Flatten → Dense(C) with the model's output activation) on
the model's loss and the labels. The activation a block sends up is a constant there, so no
gradient crosses a block boundary. The last block ends in the model's own layers and loss.
With one block this is plain backprop.

Synthetic gradients (Jaderberg et al. 2017, decoupled neural interfaces): at each cut a linear
model M_b, zero at the start, predicts from a block's output h and the labels (one-hot; the
paper's conditional DNI, without which a third block stalled at chance on digits-cnn) the
gradient of the loss with respect to h, and block b steps at once on that prediction. Block
b+1 backpropagates to its input on the same batch and sends that gradient back; M_b regresses
onto it at block b's next call. So gradients cross a cut only as M_b's training targets, a
batch late: block b never waits for block b+1. M_b predicts B·∂L/∂h (per-example scale,
targets near 1), used as M_b(h)/B. Labels: every block place holds them (provisioned, like
the data in #1).
"""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np

from ..layers.core import Dense, Flatten
from ..model import Sequential
from ..tensor import Tensor, no_grad
from . import host as host_ops
from . import replicas
from .base import Way
from .blocks import cut, given_or_balanced, layers_of
from .split_learning import (
    adopt_part,
    block_inputs,
    parse_cuts,
    part_spec,
    parts_of,
    penalty,
    take_over,
)

HELPER_TAG = 0xA0C5  # seeds the auxiliary heads' and synthesizers' initial weights


# ----- place side ------------------------------------------------------------------------------
def setup_block(host, key, spec, x, y, helper):
    """Place op: block `key` (a part spec), the labels (and, for the first block, the inputs),
    and its helper model: an auxiliary head (greedy) or a gradient synthesizer."""
    host.slots[key] = host_ops.Slot(None, x, y)
    take_over(host, key, [spec])
    if helper is not None:
        host.slots[key].state["helper"] = _helper(spec, helper)
        host.slots[key].state["classes"] = helper["classes"]


def _helper(spec, h) -> Sequential:
    """The auxiliary head (kind "aux") or synthesizer ("synth") for a block's output sample."""
    dtype, out = spec["sample"].dtype, h["sample"]
    if h["kind"] == "aux":
        layers = [
            Flatten(dtype=dtype),
            Dense(h["classes"], activation=h["activation"], dtype=dtype),
        ]
        loss = copy.deepcopy(spec["loss"])
        sample = out
    else:
        width = int(np.prod(out.shape[1:]))
        layers = [Dense(width, kernel_initializer="zeros", bias_initializer="zeros", dtype=dtype)]
        loss, sample = "mse", _condition(out.reshape(1, -1), h["label_sample"], h["classes"])
    model = Sequential(layers, dtype=dtype)
    model.compile(spec["opt_cls"].from_config(copy.deepcopy(spec["opt_config"])), loss)
    with replicas.rng_scope(replicas.key_state(h["seed"])):
        model.build_from_sample(sample)
    return model


def _condition(flat, y, classes):
    """A synthesizer's input: the block's output and the labels (one-hot for class ids), as
    in conditional DNI (the labels say which way the loss pulls)."""
    y = np.asarray(y)
    if y.dtype.kind in "iub" and y.ndim == 1:
        y = np.eye(classes, dtype=flat.dtype)[y]
    return np.concatenate([flat, y.reshape(len(flat), -1).astype(flat.dtype)], axis=1)


def _loss(part, h, y):
    """The model's loss on this (last) block's output, with its penalties, as compute_loss."""
    loss = part.loss(y, h)
    for p in part.regularization_losses():
        loss = loss + p
    return loss


def greedy_step(host, key, act, index, noise):
    """Place op (greedy): this block on its input (the rows `index`, or the activation from
    below: a constant, no gradient goes back), its auxiliary head's loss or, at the top, the
    model's; one step. Outputs the block's activation for the block above."""
    slot = host.slots[key]
    part, aux = slot.state["parts"][0], slot.state.get("helper")
    models = [part] if aux is None else [part, aux]
    buffers = {}
    for m in models:
        m.optimizer.zero_grad()
        m.train()
        buffers.update(m.optimizer.grad_buffers())
    inp = slot.x[index] if act is None else np.array(act)
    with replicas.rng_scope(replicas.key_state(noise)), part.threads():
        h = part(inp)
        if aux is None:
            loss = _loss(part, h, slot.y[index])
        else:
            loss = aux.compute_loss(h, slot.y[index])
            extra = penalty(part)
            loss = loss if extra is None else loss + extra
        loss.backward(into=buffers)
    for m in models:
        m.optimizer.step()
    outs = [] if aux is None else [h.data.copy()]
    return {"loss": float(loss.data), "sent": [o.nbytes for o in outs]}, outs


def synthetic_step(host, key, act, target, index, noise):
    """Place op (synthetic gradients): first the synthesizer learns the gradient the block
    above sent for the previous batch, then this block runs on its input and steps on the
    synthesizer's prediction (or, at the top, on the loss). Outputs the block's activation
    (not at the top) and the gradient at its input (not at the bottom), for its neighbours."""
    slot = host.slots[key]
    z = slot.state
    part, synth = z["parts"][0], z.get("helper")
    if target is not None and "prev" in z:
        prev = z.pop("prev")
        replicas.train_step(synth, prev, np.asarray(target).reshape(len(prev), -1) * len(prev))
    classes = z.get("classes")
    part.optimizer.zero_grad()
    part.train()
    buffers = part.optimizer.grad_buffers()
    inp = slot.x[index] if act is None else Tensor(np.array(act), requires_grad=True)
    value = None
    with replicas.rng_scope(replicas.key_state(noise)), part.threads():
        h = part(inp)
        if synth is None:
            loss = _loss(part, h, slot.y[index])
            value = float(loss.data)
            loss.backward(into=buffers)
        else:
            flat = h.data.reshape(len(h.data), -1)
            z["prev"] = feats = _condition(flat, slot.y[index], classes)
            with no_grad():
                guess = synth(feats).data.reshape(h.shape) / len(flat)
            h.backward(guess, into=buffers)
            extra = penalty(part)
            if extra is not None:
                extra.backward(into=buffers)
    part.optimizer.step()
    outs = [] if synth is None else [h.data.copy()]
    if act is not None:
        outs.append(inp.grad)
    return {"loss": value, "sent": [o.nbytes for o in outs]}, outs


# ----- driver side -----------------------------------------------------------------------------
class LocalLearning(Way):
    """S blocks at S places, each trained on its own auxiliary loss; B·d per cut per batch."""

    name = "local-learning"
    number, cut, crosses = 12, "the backward pass", "activations forward only"
    formula = "Bd per batch per cut"
    checks = "a single block = backprop; greedy: no gradient crosses a block boundary"
    options: ClassVar[dict] = {"blocks": None, "cuts": None, "seed": 0}
    note = "each block learns from its own auxiliary head's loss, not end-to-end backprop"
    synthetic = False

    def __init__(self, blocks: int | None = None, cuts=None, seed: int = 0, places=None):
        super().__init__(places)
        who = type(self).__name__
        self.cuts, self.seed = parse_cuts(cuts, who), int(seed)
        made = None if self.cuts is None else len(self.cuts) + 1
        blocks = int(blocks or made or 2)
        if blocks < 1 or made not in (None, blocks):
            raise ValueError(
                f"{who}: blocks must be >= 1 and agree with cuts (cuts={cuts!r} make {made} "
                f"blocks), got blocks={blocks}"
            )
        self.blocks = blocks

    @classmethod
    def from_options(cls, n, options, places=None):
        o = cls.with_defaults(options)
        if o["blocks"] is None and o["cuts"] is None:
            o["blocks"] = n  # one block per place
        return cls(places=places, **o)

    def expectation(self, model):
        if self.blocks == 1 and not replicas.has_dropout(model):
            return True, "a single block is plain backprop, bit for bit"
        return super().expectation(model)

    def bounds(self, model) -> list:
        """The blocks' boundaries: `cuts` (e.g. "2,4" or [2, 4]) or balanced by parameters."""
        return given_or_balanced(model, self.cuts, self.blocks)

    def setup(self, run):
        model = run.model
        self._bounds = self.bounds(model)
        self._blocks = cut(model, self._bounds)
        samples = block_inputs(model, self._blocks, run.x)
        last = layers_of(model)[-1]
        x_ref, y_ref = run.data_refs()
        ops = []
        for b, block in enumerate(self._blocks):
            helper = None
            if b < len(self._blocks) - 1:
                helper = {
                    "kind": "synth" if self.synthetic else "aux",
                    "sample": samples[b + 1],
                    "classes": int(samples[-1].shape[-1]),
                    "activation": last.get_config().get("activation"),
                    "seed": [self.seed, HELPER_TAG, b],
                    "label_sample": run.y[:1],
                }
            spec = part_spec(model, block, samples[b])
            ops.append(
                self.places.submit(
                    self.places.host_of(b), setup_block, f"b{b}", spec,
                    x_ref if b == 0 else None, y_ref, helper,
                )
            )  # fmt: skip
        self.places.gather(ops)
        self._widths = [int(np.prod(s.shape[1:])) for s in samples[1:-1]]
        self._targets, self._book = {}, 0

    def step(self, run, step, index):
        n, calls, act, targets = len(self._blocks), [], None, {}
        for b in range(n):
            noise = replicas.noise_key(run.noise_seed, b, step)
            outs = int(b < n - 1)
            if self.synthetic:
                args = (synthetic_step, outs + int(b > 0), f"b{b}", act, self._targets.get(b))
            else:
                args = (greedy_step, outs, f"b{b}", act)
            call = self.places.submit_multi(self.places.host_of(b), *args, index, noise)
            calls.append(call)
            act = call.outs[0] if b < n - 1 else None
            if self.synthetic and b > 0:
                targets[b - 1] = call.outs[-1]  # the gradient at block b's input, for M_{b−1}
        self._targets = targets
        heads = run.gather(calls, [f"block{b}" for b in range(n)])
        for b, head in enumerate(heads):
            sent = list(head["sent"])
            if b < n - 1:
                run.traffic.record("activations", f"block{b}", f"block{b + 1}", size=sent.pop(0))
            if sent:
                run.traffic.record("gradients", f"block{b}", f"block{b - 1}", size=sent.pop(0))
        per_cut = (2 if self.synthetic else 1) * len(index) * run.itemsize
        self._book += per_cut * sum(self._widths)
        return heads[-1]["loss"]

    def finish(self, run):
        specs = self.places.gather(
            [
                self.places.submit(self.places.host_of(b), parts_of, f"b{b}")
                for b in range(len(self._blocks))
            ]
        )
        for block, spec in zip(self._blocks, specs):
            adopt_part(run.model, block, spec[0])

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return self._book

    def report(self, run):
        return {
            "blocks": len(self._blocks),
            "bounds": self._bounds,
            "synthetic_gradients": self.synthetic,
            "cut_widths": self._widths,
        }


class SyntheticGradients(LocalLearning):
    """Blocks that step on predicted gradients (decoupled neural interfaces); 2·B·d per cut
    per batch (activations up, the synthesizers' targets down, a batch late)."""

    name = "synthetic-gradients"
    crosses = "activations up; gradient targets down, a batch late"
    formula = "2Bd per batch per cut"
    note = (
        "each block steps on a learned prediction of its gradient (zero at first), not the true one"
    )
    synthetic = True
