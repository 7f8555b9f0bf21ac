"""The `Way` base class, and `Run`: a way's step function for the one training loop.

A way decides which steps of training run at which place. `model.fit(x, y, way=w)` runs the
same loop as any fit (splitgrad/training.py): callbacks, History, progress bar, validation.
What changes is the step function: `w.step_function(model, source)` returns a `Run`, which
hands each batch (its row indices) to the way, and the way runs the step at its places.

A way subclass declares, as class attributes, its catalogue entry (docs/split-training.md:
`number`, `cut`, `crosses`, `formula`, `checks`), its command-line options (`options`: name →
default, read by `from_options`), and what `compare` should expect of it (`equivalent`,
`note`). It implements, next to its place ops (host.py):

    setup(run)                   install replicas on the places
    step(run, step, batch)       one global step; returns the batch's loss
    finish(run)                  bring the trained state home (end of each epoch)
    recover(run, hosts, step)    optional: restore dead places, True if `step` had finished
    rate_receivers(run, slots)   optional: who a rate changed by a callback is counted as sent to
    report(run), textbook_bytes  optional: extra figures, and the formula for the bytes

and optionally `batches(run, epoch)` when an epoch is not "every batch of the data" (federated
learning: one round per epoch). Adding a way = one module + one line in registry.py.
"""

from __future__ import annotations

from typing import ClassVar

from ..training import StepFunction
from . import host as host_ops
from . import replicas
from .accounting import Traffic
from .places import Inline, PlaceFailure


class NotApplicable(ValueError):
    """This way cannot train this model (tensor parallel needs a pair of layers it can shard,
    for instance); `compare` lists it as not applicable and goes on with the other ways."""


class Way:
    """Base of every way; `model.fit(x, y, way=...)` trains with it."""

    name = "way"  # the command-line name (splitgrad train --way NAME)
    # Its row of the catalogue (docs/split-training.md).
    number = None
    cut = crosses = formula = checks = ""
    options: ClassVar[dict] = {}  # --way-option KEY=VALUE keys this way reads, with their defaults
    equivalent = False  # does compare's run match the one-place run (allclose)?
    note = ""  # why it matches the one-place run, or why not
    keep_payloads = False  # keep every message's payload in the traffic log (for tests)
    max_recoveries = 3
    unit = "step"  # what one call of `step` is, in reports ("round" for federated learning)
    trains_on = "arrays"  # "experience": a way for agents acting in an environment (acting.py)

    def __init__(self, places=None):
        self.places = places if places is not None else Inline()

    @classmethod
    def from_options(cls, n: int, options: dict, places=None):
        """The way for `--way NAME --places N --way-option K=V ...`: by default `cls(N, **opts)`
        over the defaults in `cls.options`."""
        return cls(n, places=places, **cls.with_defaults(options))

    @classmethod
    def with_defaults(cls, options: dict) -> dict:
        """`options` over the defaults in `cls.options`; a key the way does not read is an
        error naming the accepted ones (a misspelt option must not be silently ignored)."""
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            accepted = ", ".join(cls.options) or "none"
            raise ValueError(
                f"way {cls.name!r} has no option {unknown[0]!r}; its options: {accepted}"
            )
        return {**cls.options, **{k: _typed(cls, k, v) for k, v in options.items()}}

    def expectation(self, model) -> tuple[bool, str]:
        """(should `compare`'s run match the one-place run, the note that says why or why not)."""
        return self.equivalent, self.note

    def step_function(self, model, source) -> Run:
        """The step function `Model.fit` runs: see `Run`."""
        return Run(self, model, source)

    def slots(self):
        """(place, slot key) of each of `self.workers` replicas, spread over the places."""
        return [(self.places.host_of(r), f"w{r}") for r in range(self.workers)]

    def install_replicas(self, run, op=None):
        """One replica of the driver's model in each of `self.workers` slots, each with the
        whole training data (the shards are picked by index); `op` is the place op that
        installs one (host.setup unless the way keeps more per slot)."""
        spec = self.places.put(run.spec())
        x_ref, y_ref = run.data_refs()
        op = op or host_ops.setup
        run.gather(
            [self.places.submit(h, op, key, spec, x_ref, y_ref) for h, key in self.slots()],
            [f"worker{r}" for r in range(self.workers)],
        )

    def members(self):
        """{place: [(rank, slot key)]} in rank order (who sits where, for an all-reduce)."""
        out = {}
        for rank, (h, key) in enumerate(self.slots()):
            out.setdefault(h, []).append((rank, key))
        return out

    # ----- what subclasses provide ------------------------------------------------------------
    def setup(self, run):
        raise NotImplementedError

    def batches(self, run, epoch) -> list:
        """What one epoch feeds to `step`: by default the index arrays of its batches."""
        return run.source.indices(epoch)

    def step(self, run, step: int, batch) -> float:
        raise NotImplementedError

    def examples(self, batch) -> int:
        """How many examples a batch from `batches` holds (for the epoch's mean loss)."""
        return len(batch)

    def recover(self, run, hosts, step) -> bool:
        """Restore dead places; return True when `step` had already completed everywhere."""
        raise PlaceFailure(hosts, "this way cannot recover from a dead place")

    def finish(self, run):
        """Copy the trained state back into the driver's model (end of each epoch)."""

    def epoch_logs(self, run) -> dict:
        """Extra values for this epoch's logs (e.g. clients that took part in a round)."""
        return {}

    def rate_receivers(self, run, slots) -> list:
        """Who a changed learning rate is counted as sent to (8 bytes each): by default the
        slots holding an optimizer. A way whose places are made afresh for each step can
        count it with each step's message instead (federated clients) and return []."""
        return slots

    def report(self, run) -> dict:
        return {}

    def textbook_bytes(self, n_params: int, steps: int, itemsize: int = 4):
        return None

    def describe(self) -> str:
        return f"{self.name} on {self.places.describe()}"


class Run(StepFunction):
    """One `fit` with a way: the model, the data, the places, the traffic and the step counter.

    It is the step function of the training loop: each batch goes to `way.step`, guarded so
    that a dead place is restored (`way.recover`) and the step retried.
    """

    def __init__(self, way, model, source):
        if not hasattr(source, "indices"):
            raise ValueError(
                f"way {way.name!r} needs arrays x and y (it ships them to its places once and "
                "then sends row indices), not a batch source such as random text windows; "
                "train a recipe with a fixed dataset (digits-mlp, fashion-cnn) with it"
            )
        self.way, self.model, self.places, self.source = way, model, way.places, source
        self.label = way.unit.capitalize() if way.unit != "step" else "Epoch"
        self.x, self.y = source.x, source.y
        self.batch_size, self.seed = source.batch_size, source.seed
        self.traffic = Traffic(way.name, keep_payloads=way.keep_payloads)
        self.step = 0  # completed global steps
        self.n_params = replicas.count(model)
        self.itemsize = replicas.flat_dtype(model).itemsize
        self._x_ref = self._y_ref = None

    @property
    def noise_seed(self) -> int:
        """Seeds the replicas' dropout streams (`replicas.noise_key`): the run's seed."""
        return int(self.seed)

    def spec(self, model=None) -> dict:
        """The driver's model (or `model`) as a replica spec (replicas.pack)."""
        return replicas.pack(model or self.model, self.x[:1])

    def data_refs(self):
        """The training arrays as place-shareable objects (one Ray object each, put once)."""
        if self._x_ref is None:
            self._x_ref, self._y_ref = self.places.put(self.x), self.places.put(self.y)
        return self._x_ref, self._y_ref

    def gather(self, pendings, names):
        """Values of pendings; busy seconds go to the named places."""
        values = self.places.gather(pendings)
        for name, busy in zip(names, self.places.busy(pendings)):
            self.traffic.busy(name, busy)
        return values

    # ----- the step function --------------------------------------------------------------
    def begin(self, epochs):
        self.epochs = epochs
        # A place that died before the run is replaced (or retired) now, not mid-step.
        for event in self.places.ensure_alive():
            self.traffic.extra.setdefault("elastic", []).append({**event, self.way.unit: 0})
        self.places.reset()
        self.way.setup(self)
        # The rate the replicas were built with; a way may rebuild a place from what it kept
        # at setup (recovery), which holds this rate, not a later one.
        self._rate = self._built_rate = _plain_rate(self.model)

    def batches(self, source, epoch):
        return self.way.batches(self, epoch)

    def __call__(self, batch):
        loss = self._guarded(batch)
        if loss is None:  # the way took no step (CheckpointResume stopping after its save)
            return 0, 0.0
        self.step += 1
        return self.way.examples(batch), loss

    def _follow_learning_rate(self):
        """A callback (LearningRateScheduler, ReduceLROnPlateau) sets the learning rate of the
        driver's model between steps; the places' optimizers must take it too. A schedule
        needs nothing: every optimizer evaluates it at its own step count."""
        rate = _plain_rate(self.model)
        if rate is None or rate == self._rate:
            return
        # One round trip to the live places; it reaches every optimizer a place holds, live
        # or kept to be rebuilt from (host.set_learning_rate). Only on a change: a step whose
        # rate is unchanged pays one comparison.
        hosts = self.places.live()
        reached = self.places.gather(
            [self.places.submit(h, host_ops.set_learning_rate, rate) for h in hosts]
        )
        # Counted per logical place (slot), so Inline and Ray report the same traffic.
        for name in self.way.rate_receivers(self, sorted({k for keys in reached for k in keys})):
            self.traffic.record("state", "driver", name, size=8)
        self._rate = rate

    @property
    def rate_changed(self) -> bool:
        """Does the driver's learning rate differ from the one the places were set up with?"""
        return _plain_rate(self.model) != self._built_rate

    def _guarded(self, batch):
        way = self.way
        for attempt in range(way.max_recoveries + 1):
            try:
                self._follow_learning_rate()  # guarded too: a place may die as it is sent
                return way.step(self, self.step, batch)
            except PlaceFailure as failure:
                if attempt == way.max_recoveries:
                    raise
                done = way.recover(self, failure.hosts, self.step)
                self.traffic.extra.setdefault("recoveries", []).append(
                    {way.unit: self.step, "places": failure.hosts, "already_done": done}
                )
                if self._rate != self._built_rate:
                    # A restored place may hold the rate of setup's spec: send today's again
                    # before the retry (or the next step).
                    self._rate = None
                if done:
                    return float("nan")
        raise AssertionError("unreachable")

    def end_epoch(self, epoch):
        self.way.finish(self)
        return self.way.epoch_logs(self)

    def end(self, history):
        way, traffic = self.way, self.traffic
        traffic.textbook = way.textbook_bytes(self.n_params, self.step, self.itemsize)
        traffic.extra["steps"] = self.step
        traffic.extra.update(way.report(self))
        traffic.stop()
        history.traffic = traffic.report()
        history.traffic_log = traffic


def _plain_rate(model):
    """The learning rate of the driver's optimizer when it is a plain number (not a schedule)."""
    opt = getattr(model, "optimizer", None)
    if opt is None or callable(getattr(opt, "_lr", None)):
        return None
    return float(opt.learning_rate)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _typed(way, key, value):
    """An option whose default is a bool takes only a yes/no value (`--way-option
    secure_aggregation=false` must not switch it on because the string is not empty)."""
    if not isinstance(way.options.get(key), bool) or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(
        f"way {way.name!r}: option {key!r} is yes or no (1/0, true/false), got {value!r}"
    )
