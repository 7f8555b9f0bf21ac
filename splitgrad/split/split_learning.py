"""#11 Split learning (Gupta & Raskar 2018; Vepakomma et al. 2018): vanilla and U-shaped.

The model is cut between its layers (`blocks.cut`: at `cuts`, or where `blocks.balance` splits
the parameters evenly). Vanilla: the client holds the first layers and the data; each batch it
sends the cut activations (B×d) and the labels to the server, which holds the rest of the
model, computes the loss, steps its layers and sends back the gradient at the cut (B×d); the
client backpropagates it through its layers and steps.
U-shaped: the client also holds the last layers (the head) and the labels; the server holds
only the middle. Activations go client → server → client, gradients back the same way, and no
message to the server holds labels or raw inputs. Each part keeps its own optimizer (its share
of the model's optimizer state), so client part ∘ server part is the centralized model's loss
and gradients and, with one client and no dropout, its training bit for bit.

Several clients (`clients` = K, each owning 1/K of the rows, `federated.partition`) take turns:
client k trains on its own rows, then relays the client-side weights and optimizer state to
client k+1 (kind "weights" / "state"). One epoch = every client's turn once.

The helpers `part_spec` and `adopt_part` (a run of layers as a replica with its share of the
optimizer state, and back) are shared with local_learning.py.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np

from .. import random as sg_random
from ..data import batch_order
from ..layers.layer import generators
from ..model import Sequential
from ..tensor import Tensor, no_grad
from . import host as host_ops
from . import replicas
from .accounting import nbytes
from .base import Way
from .blocks import cut, given_or_balanced
from .federated import partition
from .offload import state_rows
from .places import Pending


# ----- a run of layers as a replica of its own ---------------------------------------------------
def block_inputs(model, blocks, x) -> list:
    """One input row of each block, then one output row of the last (the model run in
    inference mode, so nothing is drawn)."""
    was, out = model.training, []
    model.eval()
    try:
        with no_grad():
            h = x[:1]
            for block in blocks:
                out.append(np.array(h.data if isinstance(h, Tensor) else h))
                h = block(h)
            out.append(np.array(h.data))
    finally:
        model.train(was)
    return out


def part_spec(model, block, sample) -> dict:
    """A replica spec (replicas.pack) of `block`, consecutive layers of the compiled `model`:
    a copy of its layers, the model's optimizer settings with the block's share of the
    optimizer state, the model's loss."""
    state = copy.deepcopy(sg_random.get_state())  # building draws initial weights: put back
    part = Sequential.from_config(block.get_config())
    part.build_from_sample(sample)
    sg_random.set_state(state)
    part.set_weights(block.get_weights())
    opt = model.optimizer
    # compile builds the optimizer (the part is built), with zero state; then the block's share.
    part.compile(type(opt).from_config(copy.deepcopy(opt.get_config())), copy.deepcopy(model.loss))
    full, sd = opt.state_dict(), part.optimizer.state_dict()
    names, index = opt.state_names(), _indices(model, block)
    full_rows = state_rows(full, len(full["param_steps"]), names)
    for row, i in zip(state_rows(sd, len(index), names), index):
        for key, src in zip(row, full_rows[i]):
            sd["state"][key] = full["state"][src]
    sd["step"], sd["param_steps"] = full["step"], [full["param_steps"][i] for i in index]
    part.optimizer.load_state_dict(sd)
    for (_, gen), (_, src) in zip(generators(part).items(), generators(block).items()):
        gen.bit_generator.state = src.bit_generator.state
    return replicas.pack(part, sample)


def _indices(model, block) -> list:
    where = {id(p): i for i, p in enumerate(model.parameters())}
    return [where[id(p)] for p in block.parameters()]


def adopt_part(model, block, spec):
    """The reverse of `part_spec`: a trained part's weights, optimizer state and generators
    into the model (`block` shares the model's layers, so its weights are the model's)."""
    block.set_weights(spec["weights"])
    opt = model.optimizer
    full, names, index = opt.state_dict(), opt.state_names(), _indices(model, block)
    part = spec["opt_state"]
    rows = state_rows(full, len(full["param_steps"]), names)
    for j, (row, i) in enumerate(zip(state_rows(part, len(index), names), index)):
        for key, dst in zip(row, rows[i]):
            full["state"][dst] = part["state"][key]
        full["param_steps"][i] = part["param_steps"][j]
    full["step"] = part["step"]
    opt.load_state_dict(full)
    for (_, gen), state in zip(generators(block).items(), spec["layer_rngs"].values()):
        gen.bit_generator.state = state


def parse_cuts(cuts, who) -> list | None:
    """`cuts` (the layer indices where the next part starts) as ints: an int, a list, or the
    command line's "2,5" (as the pipeline's cuts; "2:5" reads too); None stays None."""
    if cuts is None:
        return None
    text = str(cuts).replace(":", ",")
    items = list(cuts) if isinstance(cuts, (list, tuple)) else text.split(",")
    try:
        return [int(a) for a in items]
    except ValueError:
        raise ValueError(
            f"{who}: cuts={cuts!r} are not layer indices like 3 or 2,5 (where a part starts)"
        ) from None


def penalty(part):
    """The sum of a part's regularization penalties (a Tensor), or None."""
    total = None
    for p in part.regularization_losses():
        total = p if total is None else total + p
    return total


# ----- place side ------------------------------------------------------------------------------
def setup_client(host, key, x, y, rows, specs):
    """Place op: a client owning rows `rows` of (x, y) (None: all), and the client-side parts
    if it is the first to hold them."""
    if rows is not None:
        x, y = np.array(x[rows]), np.array(y[rows])
    host.slots[key] = host_ops.Slot(None, x, y)
    if specs is not None:
        take_over(host, key, specs)


def setup_server(host, key, specs):
    host.slots[key] = host_ops.Slot(None, None, None)
    take_over(host, key, specs)


def _run(part, x, noise):
    """part(x) in training mode with Dropout drawing from the stream seeded by `noise`."""
    part.optimizer.zero_grad()
    if not part.training:
        part.train()
    with replicas.rng_scope(replicas.key_state(noise)), part.threads():
        return part(x)


def client_forward(host, key, index, noise):
    """Place op: the client's first layers on its rows `index`; outputs the cut activations
    (vanilla: and the labels)."""
    slot = host.slots[key]
    parts = slot.state["parts"]
    out = _run(parts[0], slot.x[index], noise)
    slot.state["out"] = out
    outs = [out.data.copy()] + ([np.array(slot.y[index])] if len(parts) == 1 else [])
    return {"sent": [o.nbytes for o in outs]}, outs


def server_step(host, key, act, labels, noise):
    """Place op (vanilla): the rest of the model, the loss, its step; outputs the gradient at
    the cut."""
    part = host.slots[key].state["parts"][0]
    a = Tensor(np.array(act), requires_grad=True)
    part.optimizer.zero_grad()
    if not part.training:
        part.train()
    with replicas.rng_scope(replicas.key_state(noise)), part.threads():
        loss = part.compute_loss(a, np.asarray(labels))
        loss.backward(into=part.optimizer.grad_buffers())
    part.optimizer.step()
    return {"loss": float(loss.data), "sent": [a.grad.nbytes]}, [a.grad]


def server_forward(host, key, act, noise):
    """Place op (U-shaped): the middle layers; outputs their activations for the head."""
    slot = host.slots[key]
    a = Tensor(np.array(act), requires_grad=True)
    out = _run(slot.state["parts"][0], a, noise)
    slot.state["in"], slot.state["out"] = a, out
    return {"sent": [out.data.nbytes]}, [out.data.copy()]


def client_head(host, key, act, index, noise):
    """Place op (U-shaped): the head and the loss on the client's own labels, its step;
    outputs the gradient at the second cut."""
    slot = host.slots[key]
    head = slot.state["parts"][1]
    t = Tensor(np.array(act), requires_grad=True)
    head.optimizer.zero_grad()
    if not head.training:
        head.train()
    with replicas.rng_scope(replicas.key_state(noise)), head.threads():
        loss = head.compute_loss(t, slot.y[index])
        loss.backward(into=head.optimizer.grad_buffers())
    head.optimizer.step()
    return {"loss": float(loss.data), "sent": [t.grad.nbytes]}, [t.grad]


def _backward_part(part, out, grad) -> float:
    """Backpropagate `grad` from `out` (and the part's penalties) into the part; its step.
    Returns the penalties' value."""
    buffers, value = part.optimizer.grad_buffers(), 0.0
    with part.threads():
        if out.requires_grad:
            out.backward(np.array(grad), into=buffers)
        extra = penalty(part)
        if extra is not None:
            value = float(extra.data)
            extra.backward(into=buffers)
    part.optimizer.step()
    return value


def server_backward(host, key, grad):
    """Place op (U-shaped): backpropagate the head's gradient through the middle, its step;
    outputs the gradient at the first cut."""
    slot = host.slots[key]
    a, out = slot.state.pop("in"), slot.state.pop("out")
    value = _backward_part(slot.state["parts"][0], out, grad)
    return {"penalty": value, "sent": [a.grad.nbytes]}, [a.grad]


def client_backward(host, key, grad):
    """Place op: backpropagate the server's gradient through the client's first layers."""
    slot = host.slots[key]
    value = _backward_part(slot.state["parts"][0], slot.state.pop("out"), grad)
    return {"penalty": value, "sent": []}, []


def hand_over(host, key):
    """Place op: give up the client-side parts (weights and optimizer state) for the next
    client; outputs them as specs."""
    specs = parts_of(host, key)
    del host.slots[key].state["parts"]
    weights = sum(nbytes(s["weights"]) for s in specs)
    state = sum(nbytes(s["opt_state"]["state"]) for s in specs)
    return {"weights": weights, "state": state}, [specs]


def take_over(host, key, specs):
    """Place op: hold these parts (specs) from now on."""
    slot = host.slots[key]
    slot.state["parts"] = [replicas.unpack(s) for s in specs]
    slot.state["samples"] = [s["sample"] for s in specs]


def parts_of(host, key):
    """Place op: the slot's parts as specs."""
    z = host.slots[key].state
    return [replicas.pack(p, s) for p, s in zip(z["parts"], z["samples"])]


# ----- driver side -----------------------------------------------------------------------------
class SplitLearning(Way):
    """Client layers | server layers: 2·B·d·itemsize per batch at the cut, plus the labels;
    client part ∘ server part = the centralized model."""

    name = "split-learning"
    number, cut, crosses = 11, "the layers and data ownership", "cut activations up, grads down"
    formula = "2Bd per batch (+labels)"
    checks = "client o server = centralized loss and gradients; U-shaped: no labels reach server"
    options: ClassVar[dict] = {"clients": None, "cuts": None, "seed": 0}
    equivalent = True
    note = "one client: client part o server part is the centralized model, bit for bit"
    u_shaped = False

    def __init__(self, clients: int = 1, cuts=None, seed: int = 0, places=None):
        super().__init__(places)
        if int(clients) < 1:
            raise ValueError(f"{type(self).__name__}: clients must be >= 1, got {clients}")
        self.clients, self.seed = int(clients), int(seed)
        self.cuts, parts = parse_cuts(cuts, type(self).__name__), 3 if self.u_shaped else 2
        if self.cuts is not None and len(self.cuts) != parts - 1:
            raise ValueError(
                f"{type(self).__name__}: cuts={cuts!r} gives {len(self.cuts)} cut(s), this way "
                f"needs {parts - 1}: "
                + ("two, like cuts=2,5" if self.u_shaped else "one, like cuts=3")
            )

    @classmethod
    def from_options(cls, n, options, places=None):
        o = cls.with_defaults(options)
        clients = o.pop("clients")
        return cls(max(1, n - 1) if clients is None else clients, places=places, **o)

    def expectation(self, model):
        if self.clients > 1:
            return False, (
                f"{self.clients} clients take turns, each on its own rows (relaying the client "
                "layers): another batch order than the one-place run"
            )
        if replicas.has_dropout(model):
            return False, "each part draws its own dropout masks (same distribution)"
        return super().expectation(model)

    def bounds(self, model) -> list:
        """Where the model is cut: `cuts` (U-shaped: two), or balanced by parameter count
        (`blocks.balance`)."""
        return given_or_balanced(model, self.cuts, 3 if self.u_shaped else 2)

    def setup(self, run):
        model = run.model
        self._bounds = self.bounds(model)
        self._blocks = cut(model, self._bounds)
        samples = block_inputs(model, self._blocks, run.x)
        specs = [part_spec(model, b, s) for b, s in zip(self._blocks, samples)]
        mine = [specs[0], specs[2]] if self.u_shaped else [specs[0]]
        self._widths = [int(np.prod(s.shape[1:])) for s in samples[1:-1]]
        self.state_rows = None
        if self.clients > 1:
            self.state_rows = partition(run.y, self.clients, "iid", seed=self.seed)
        self._server = self.places.host_of(self.clients)
        x_ref, y_ref = run.data_refs()
        rows = self.state_rows or [None]
        # Provisioning (each client already owns its rows); not a message of the protocol.
        ops = [
            self.places.submit(
                self.places.host_of(k), setup_client, f"c{k}", x_ref, y_ref, rows[k],
                mine if k == 0 else None,
            )
            for k in range(self.clients)
        ]  # fmt: skip
        ops.append(self.places.submit(self._server, setup_server, "server", [specs[1]]))
        self.places.gather(ops)
        self._holder, self._relays, self._book = 0, 0, 0
        self._client_values = sum(
            p.size for i in (0, 2)[: len(mine)] for p in self._blocks[i].parameters()
        )
        self._state_arrays = len(model.optimizer.state_names())
        self._label_bytes = run.y.dtype.itemsize * int(np.prod(run.y.shape[1:]))

    def batches(self, run, epoch):
        if self.state_rows is None:
            return [(0, idx) for idx in run.source.indices(epoch)]
        src = run.source
        return [
            (k, idx)
            for k, rows in enumerate(self.state_rows)
            for idx in batch_order(
                len(rows), src.batch_size, src.shuffle, [int(src.seed), k], epoch
            )
        ]

    def examples(self, batch):
        return len(batch[1])

    def step(self, run, step, batch):
        k, index = batch
        if k != self._holder:
            self._relay(run, k)
        key, c, s = f"c{k}", self.places.host_of(k), self._server
        client, noise = (
            f"client{k}",
            [replicas.noise_key(run.noise_seed, p, step) for p in range(3)],
        )
        sub = self.places.submit_multi
        fwd = sub(c, client_forward, 1 if self.u_shaped else 2, key, index, noise[0])
        if self.u_shaped:
            mid = sub(s, server_forward, 1, "server", fwd.outs[0], noise[1])
            head = sub(c, client_head, 1, key, mid.outs[0], index, noise[2])
            back = sub(s, server_backward, 1, "server", head.outs[0])
            calls = [
                (fwd, client, "server", ["activations"]),
                (mid, "server", client, ["activations"]),
                (head, client, "server", ["gradients"]),
                (back, "server", client, ["gradients"]),
            ]
        else:
            srv = sub(s, server_step, 1, "server", fwd.outs[0], fwd.outs[1], noise[1])
            back = srv
            calls = [(fwd, client, "server", ["activations", "labels"])]
            calls.append((srv, "server", client, ["gradients"]))
        calls.append((sub(c, client_backward, 0, key, back.outs[0]), client, None, []))
        heads = run.gather([p for p, *_ in calls], [src for _, src, *_ in calls])
        loss = 0.0
        for (p, src, dst, kinds), head in zip(calls, heads):
            for i, kind in enumerate(kinds):
                payload = self._fetch(p.outs[i]) if self.keep_payloads else None
                run.traffic.record(kind, src, dst, payload=payload, size=head["sent"][i])
            loss += head.get("loss", 0.0) + head.get("penalty", 0.0)
        book = 2 * len(index) * sum(self._widths) * run.itemsize
        self._book += book + (0 if self.u_shaped else len(index) * self._label_bytes)
        return loss

    def _fetch(self, ref):
        """A message's payload at the driver (only when the log keeps payloads, for tests)."""
        return self.places.gather([Pending(0, ref, 0.0)])[0]

    def _relay(self, run, k):
        """Client `self._holder` hands the client-side parts to client k."""
        j = self._holder
        out = self.places.submit_multi(self.places.host_of(j), hand_over, 1, f"c{j}")
        took = self.places.submit(self.places.host_of(k), take_over, f"c{k}", out.outs[0])
        head = run.gather([out, took], [f"client{j}", f"client{k}"])[0]
        run.traffic.record("weights", f"client{j}", f"client{k}", size=head["weights"])
        run.traffic.record("state", f"client{j}", f"client{k}", size=head["state"])
        self._book += (1 + self._state_arrays) * self._client_values * run.itemsize
        self._holder, self._relays = k, self._relays + 1

    def finish(self, run):
        h = self.places.host_of(self._holder)
        client, server = self.places.gather(
            [
                self.places.submit(h, parts_of, f"c{self._holder}"),
                self.places.submit(self._server, parts_of, "server"),
            ]
        )
        specs = [client[0], server[0], *client[1:]]
        for block, spec in zip(self._blocks, specs):
            adopt_part(run.model, block, spec)

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return self._book

    def report(self, run):
        return {
            "clients": self.clients,
            "bounds": self._bounds,
            "u_shaped": self.u_shaped,
            "cut_widths": self._widths,
            "relays": self._relays,
        }


class USplitLearning(SplitLearning):
    """U-shaped split learning: the client keeps the first layers, the head and the labels;
    2·B·(d1 + d2)·itemsize per batch, and nothing the server receives holds labels or inputs."""

    name = "split-learning-u"
    formula = "2B(d1+d2) per batch"
    note = "U-shaped, one client: front o middle o head is the centralized model, bit for bit"
    u_shaped = True
