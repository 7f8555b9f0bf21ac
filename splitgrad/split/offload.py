"""#10 The optimizer step at another place (ZeRO-Offload, Ren et al. 2021).

Forward and backward run at one place ("compute", place 0; in ZeRO-Offload the GPU), while the
update and the optimizer state live at another ("update", place 1; the CPU's memory). Each
step the gradient goes out (P values) and the updated weights come back (P): 2P per step. The
update place runs the model's optimizer over one flat vector of all the weights; every update
rule in optim/ is elementwise, so the remote step is the local step bit for bit, and the
compute place continues the driver's random stream (Dropout): an offloaded run is the
one-place run, bitwise.

`OffloadDelayed` is ZeRO-Offload's one-step delayed parameter update: the update of step t runs
while step t+1's forward and backward do, so on Ray the two places work at the same time. The
price: each gradient is computed at weights one step stale, w_{t+1} = w_t − η·u(∇L(w_{t−1})),
so it is not the one-place run. The delay restarts each epoch, when the driver takes the
weights home.

The helpers that run an optimizer on a flat vector, or on a piece of one, live here too:
zero.py (#9) cuts the same flat optimizer state into N pieces.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np

from .. import random as sg_random
from ..layers.layer import generators
from ..tensor import Tensor
from . import host as host_ops
from . import replicas
from .base import Way


# ----- flat vectors cut by ranges ---------------------------------------------------------------
def take(vec, ranges) -> np.ndarray:
    """The values of `vec` in `ranges` ([(lo, hi)]), one after another (a fresh array)."""
    return np.concatenate([vec[a:b] for a, b in ranges]) if ranges else vec[:0].copy()


def put(vec, ranges, values):
    """The inverse of `take`: write `values` back into `ranges` of `vec`."""
    at = 0
    for a, b in ranges:
        vec[a:b] = values[at : at + b - a]
        at += b - a


# ----- the optimizer state as flat vectors, cut into pieces (zero.py shares these) -------------
def flat_state(model) -> dict:
    """The model's optimizer state as flat vectors: {"step", "t", "arrays": {name: vector}}."""
    opt = model.optimizer
    if opt.clipnorm is not None or opt.global_clipnorm is not None:
        raise ValueError(
            f"{type(opt).__name__}(clipnorm={opt.clipnorm}, global_clipnorm="
            f"{opt.global_clipnorm}): clipping by a norm (each variable's, or the global norm) "
            "needs whole variables or the whole gradient in one place; use clipvalue "
            "(elementwise) with a sharded or offloaded optimizer, or train with data-parallel"
        )
    if len(opt.param_groups) > 1:
        raise ValueError(
            f"{type(opt).__name__} with {len(opt.param_groups)} parameter groups: a sharded or "
            "offloaded optimizer runs one setting over the flat vector; use one group, or "
            "train with data-parallel"
        )
    sd, names = opt.state_dict(), opt.state_names()
    if len(set(sd["param_steps"])) > 1:
        raise ValueError(
            f"{type(opt).__name__}: its parameters have taken different numbers of steps "
            f"({sorted(set(sd['param_steps']))}); a sharded optimizer needs one step count"
        )
    rows = state_rows(sd, len(sd["param_steps"]), names)
    arrays = {
        s: np.concatenate([np.ravel(sd["state"][row[j]]) for row in rows])
        if rows
        else np.zeros(0, replicas.flat_dtype(model))
        for j, s in enumerate(names)
    }
    t = sd["param_steps"][0] if sd["param_steps"] else 0
    return {"step": sd["step"], "t": t, "arrays": arrays}


def state_rows(sd, n_params, names) -> list:
    """The state_dict keys of each parameter, in state-name order (state_dict's own order)."""
    keys = list(sd["state"])
    if len(keys) != n_params * len(names):
        raise ValueError(f"optimizer state has {len(keys)} arrays, expected {n_params}×{names}")
    return [keys[i * len(names) : (i + 1) * len(names)] for i in range(n_params)]


def cut_state(state: dict, ranges) -> dict:
    """The piece `ranges` of a `flat_state`."""
    return {**state, "arrays": {s: take(a, ranges) for s, a in state["arrays"].items()}}


def load_flat_state(model, pieces, ranges):
    """Put the optimizer-state pieces (`flat_state` pieces, one per `ranges` entry) together
    into the model's optimizer."""
    opt = model.optimizer
    sd, names, params = opt.state_dict(), opt.state_names(), model.parameters()
    total = replicas.count(model)
    for j, s in enumerate(names):
        flat = np.empty(total, replicas.flat_dtype(model))
        for piece, mine in zip(pieces, ranges):
            put(flat, mine, piece["arrays"][s])
        for row, part in zip(state_rows(sd, len(params), names), replicas.split_flat(model, flat)):
            sd["state"][row[j]] = part.copy()
    sd["step"], sd["param_steps"] = pieces[0]["step"], [pieces[0]["t"]] * len(params)
    opt.load_state_dict(sd)


def piece_optimizer(spec: dict, values, state=None):
    """(master, optimizer): the spec's optimizer class and settings over ONE flat tensor
    holding `values`, with `state` (a `cut_state` piece) loaded; elementwise rules make its
    step on the piece the whole optimizer's step on those values."""
    master = Tensor(np.array(values), requires_grad=True)
    opt = spec["opt_cls"].from_config(copy.deepcopy(spec["opt_config"]))
    opt.build([master])
    if state is not None:
        sd = opt.state_dict()
        sd["state"] = {
            k: np.array(state["arrays"][s]) for k, s in zip(sd["state"], opt.state_names())
        }
        sd["step"], sd["param_steps"] = state["step"], [state["t"]]
        opt.load_state_dict(sd)
    return master, opt


def export_piece(master, opt) -> dict:
    """A piece's master values and optimizer state (`cut_state` form)."""
    sd = opt.state_dict()
    arrays = {s: sd["state"][k] for k, s in zip(sd["state"], opt.state_names())}
    return {"master": master.data.copy(), "step": sd["step"], "t": sd["param_steps"][0],
            "arrays": arrays}  # fmt: skip


def step_piece(master, opt, grad):
    """One optimizer step of the piece with gradient `grad` (through its flat fast path)."""
    buf = opt.grad_buffers()[master]
    np.copyto(buf, grad)
    master.grad = buf
    opt.step()


def backward_only(model, x, y) -> float:
    """∇loss(x, y) into the parameters' .grad (no optimizer here); returns the loss."""
    for p in model.parameters():
        p.grad = None
    if not model.training:
        model.train()
    with model.threads():
        loss = model.compute_loss(x, y)
        value = float(loss.data)
        loss.backward()
    return value


# ----- place side ------------------------------------------------------------------------------
def setup_compute(host, key, spec, x, y, stream):
    """Place op: the model without an optimizer, the data, and the driver's random stream."""
    host_ops.setup(host, key, spec, x, y, None, stream)
    host.slots[key].model.optimizer = None  # the optimizer lives at the update place


def setup_update(host, key, spec, weights, state):
    """Place op: the optimizer over one flat vector of the weights, with its state."""
    slot = host_ops.Slot(None, None, None)
    slot.state["master"], slot.state["opt"] = piece_optimizer(spec, weights, state)
    host.slots[key] = slot


def gradient(host, key, index, weights):
    """Place op: take the weights the update place sent (None: it has them), compute the
    gradient of the batch; outputs the gradient for the update place."""
    slot = host.slots[key]
    if weights is not None:
        replicas.set_flat(slot.model, weights)
    # A call with separate outputs runs outside the host's stream handling: keep it here.
    with replicas.rng_scope(slot.stream) as box:
        loss = backward_only(slot.model, slot.x[index], slot.y[index])
    slot.stream = box["state"]
    grad = replicas.get_flat_grad(slot.model)
    return {"loss": loss, "sent": grad.nbytes}, [grad]


def update(host, key, grad):
    """Place op: one optimizer step with the gradient; outputs the updated weights."""
    z = host.slots[key].state
    step_piece(z["master"], z["opt"], grad)
    weights = z["master"].data.copy()
    return {"sent": weights.nbytes}, [weights]


def set_weights(host, key, weights):
    replicas.set_flat(host.slots[key].model, weights)


def export_update(host, key):
    z = host.slots[key].state
    return export_piece(z["master"], z["opt"])


def export_compute(host, key):
    """Place op: what the driver takes from the compute place: the untrained weights
    (normalisation statistics), the layer generators and the random stream."""
    slot = host.slots[key]
    return {
        "frozen": [p.data.copy() for p in slot.model.weights if not p.requires_grad],
        "layer_rngs": {k: g.bit_generator.state for k, g in generators(slot.model).items()},
        "stream": slot.stream,
    }


# ----- driver side -----------------------------------------------------------------------------
class Offload(Way):
    """Forward/backward at place 0, the optimizer at place 1: 2P per step; bitwise one place."""

    name = "offload"
    number, cut, crosses = 10, "forward/backward vs update", "gradients out, weights back"
    formula = "2P per step"
    checks = "remote step = local step (bitwise)"
    options: ClassVar[dict] = {}
    equivalent = True
    note = "the optimizer steps at another place on the same gradient: the one-place run, bitwise"
    delay = 0  # steps by which the weights a gradient is computed at lag the latest

    @classmethod
    def from_options(cls, n, options, places=None):
        return cls(places=places, **cls.with_defaults(options))  # two places, whatever N

    def setup(self, run):
        model = run.model
        spec = self.places.put({**run.spec(), "opt_state": None})
        self._at = (self.places.host_of(0), self.places.host_of(1))
        state = cut_state(flat_state(model), [(0, run.n_params)])
        x_ref, y_ref = run.data_refs()
        stream = sg_random.get_state()  # the compute place continues the driver's stream
        a, b = self._at
        run.gather(
            [
                self.places.submit(a, setup_compute, "compute", spec, x_ref, y_ref, stream),
                self.places.submit(
                    b, setup_update, "update", spec, replicas.get_flat(model), state
                ),
            ],
            ["compute", "update"],
        )
        self._restart()

    def _restart(self):
        self._weights = {0: None}  # weights after s updates (0: the compute place has them)
        self._held, self._updates, self._pending = 0, 0, []

    def step(self, run, step, index):
        a, b = self._at
        use = max(self._updates - self.delay, 0)
        weights = None if use == self._held else self._weights[use]
        self._held = use
        grad = self.places.submit_multi(a, gradient, 1, "compute", index, weights)
        upd = self.places.submit_multi(b, update, 1, "update", grad.outs[0])
        self._updates += 1
        self._weights[self._updates] = upd.outs[0]
        for s in [s for s in self._weights if s < self._updates - self.delay]:
            del self._weights[s]  # never read again
        self._pending.append(upd)
        # The delayed variant leaves this step's update running; it is waited for next step.
        waiting = self._pending[: len(self._pending) - self.delay]
        self._pending = self._pending[len(waiting) :]
        return self._wait(run, grad, waiting)

    def _wait(self, run, grad, updates):
        """Wait for a gradient call (or None) and update calls; account them; the loss."""
        pendings = ([grad] if grad is not None else []) + updates
        loss = None
        for p, head, busy in zip(
            pendings, self.places.gather(pendings), self.places.busy(pendings)
        ):
            if p is grad:
                run.traffic.busy("compute", busy)
                run.traffic.record("gradients", "compute", "update", size=head["sent"])
                loss = head["loss"]
            else:  # the weights go back as soon as they are updated
                run.traffic.busy("update", busy)
                run.traffic.record("weights", "update", "compute", size=head["sent"])
        return loss

    def finish(self, run):
        a, b = self._at
        self._wait(run, None, self._pending)
        latest = self._weights[self._updates]
        ops = [self.places.submit(b, export_update, "update")]
        ops.append(self.places.submit(a, export_compute, "compute"))
        if latest is not None and self._held != self._updates:
            ops.append(self.places.submit(a, set_weights, "compute", latest))  # counted above
        piece, other = self.places.gather(ops)[:2]
        model = run.model
        replicas.set_flat(model, piece["master"])
        for p, v in zip([p for p in model.weights if not p.requires_grad], other["frozen"]):
            p.data[...] = v
        for key, gen in generators(model).items():
            gen.bit_generator.state = other["layer_rngs"][key]
        load_flat_state(model, [piece], [[(0, run.n_params)]])
        sg_random.set_state(other["stream"])
        self._restart()

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return 2 * n_params * itemsize * steps

    def report(self, run):
        return {"delay": self.delay, "compute_place": self._at[0], "update_place": self._at[1]}


class OffloadDelayed(Offload):
    """Offload whose update of step t overlaps step t+1 (gradients at weights one step old)."""

    name = "offload-delayed"
    note = (
        "one-step delayed update: each gradient is computed at the weights before the last "
        "update (one step stale), so it differs from the one-place run"
    )
    equivalent = False
    delay = 1
