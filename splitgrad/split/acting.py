"""#18 Acting vs learning (actor–learner reinforcement learning, IMPALA / Ape-X style).

N actors, each at a place with its own copy of the policy and its own environment, play; one
learner (this driver) updates. Each unit of acting that a batch source of experience plans
(splitgrad/rl/sources.py: a batch's episodes, or a DQN's `train_freq` steps) is cut into one
part per actor (`source.split`); each actor plays its part and sends the trajectories up; the
learner puts them back in order (`source.merge`), makes the training batch (`source.learn`)
and runs `agent.train_step` on it, and before an actor's next part it sends the new weights
down (P values, once per new version of the weights).

With `lag` L the actors act with weights L updates old, as IMPALA's actors do: the learner
submits unit j+L before it learns from unit j, so on Ray the actors play while the learner
updates. With 1 actor and lag 0 the actor plays the very episodes of the single-process run
with the very same weights: the weights after k updates are the single-process run's (bitwise
on one machine).
"""

from __future__ import annotations

import time
from collections import deque
from typing import ClassVar

import numpy as np

from ..training import StepFunction
from . import replicas
from .accounting import Traffic, nbytes
from .base import Way
from .host import Slot

PROTOCOL = ("plan", "split", "actor_spec", "merge", "learn", "counts", "experience_bytes")


# ----- place side ------------------------------------------------------------------------------
def start_actor(host, key, spec, collector_cls, kwargs):
    """Place op: a policy replica built from `spec` and a collector `collector_cls(**kwargs)`
    (its environment) in slot `key`."""
    slot = Slot(replicas.unpack(spec), None, None)
    slot.state["collector"] = collector_cls(**kwargs)
    host.slots[key] = slot
    return replicas.count(slot.model)


def act(host, key, weights, part):
    """Place op: take the new `weights` (None: keep the ones held), play `part` of a unit of
    acting, return the experience (plain arrays)."""
    slot = host.slots[key]
    if weights is not None:
        replicas.set_flat(slot.model, weights)
    return slot.state["collector"].collect(slot.model, part)


# ----- driver side -----------------------------------------------------------------------------
class Acting(Way):
    """N actors play with the learner's weights (L updates old); one learner updates."""

    name = "acting"
    number, cut = 18, "collecting experience vs updating"
    crosses = "trajectories up, weights down"
    formula = "P per actor per new weights + the experience (T(4d+16) B per T steps, REINFORCE)"
    checks = "1 actor, no lag = the on-policy single-process run"
    options: ClassVar[dict] = {"lag": 0}
    note = "more actors play other episodes at once, and lag acts on older weights"
    # What `fit` must be given: a batch source of experience (splitgrad/rl/sources.py), not
    # arrays; `compare` over a supervised recipe has nothing for this way to act in.
    trains_on = "experience"

    def __init__(self, actors: int = 2, lag: int = 0, places=None):
        super().__init__(places)
        if int(actors) < 1 or int(lag) < 0:
            raise ValueError(
                f"Acting: need actors >= 1 and lag >= 0, got actors={actors}, lag={lag}"
            )
        self.actors = self.workers = int(actors)  # `workers`: the slots of Way.slots()
        self.lag = int(lag)

    def expectation(self, model):
        if self.actors == 1 and self.lag == 0:
            return True, "one actor without lag plays the single-process run's episodes"
        return False, self.note

    def step_function(self, model, source):
        missing = [name for name in PROTOCOL if not hasattr(source, name)]
        if missing:
            raise ValueError(
                f"way {self.name!r} needs a batch source of experience (a reinforcement-learning "
                "recipe such as cartpole-pg or cartpole-dqn, or splitgrad.rl.EpisodeBatches / "
                f"ReplayBatches), not {type(source).__name__} (it has no {missing[0]}())"
            )
        return ActingRun(self, model, source)

    def describe(self) -> str:
        return f"{self.name} ({self.actors} actors, lag {self.lag}) on {self.places.describe()}"


class ActingRun(StepFunction):
    """The step function of one `fit` with `Acting`: actors fed units of acting in order, at
    most `lag` units ahead of the learner; the learner trains on each unit's experience."""

    def __init__(self, way, model, source):
        self.way, self.model, self.source, self.places = way, model, source, way.places
        self.traffic = Traffic(way.name, keep_payloads=way.keep_payloads)
        self.version = 0  # updates the learner has made: the version of its weights
        self.pending = deque()  # the actors' pendings of each submitted unit, oldest first
        self.stream = None  # the units still to submit, over all epochs of the run
        self.counted = {"steps": 0, "episodes": 0, "broadcasts": 0, "installed": 0}

    # ----- the step function --------------------------------------------------------------
    def begin(self, epochs):
        self.epochs = epochs
        self.places.reset()
        spec = replicas.pack(
            self.model, np.zeros(self.model.input_shape[1:], self.model.dtype)[None]
        )
        spec["opt_state"] = None  # actors never update: they need the weights, not Adam's moments
        ref = self.places.put(spec)
        starting = []
        for rank, (h, key) in enumerate(self.way.slots()):
            collector_cls, kwargs = self.source.actor_spec(rank)
            starting.append(self.places.submit(h, start_actor, key, ref, collector_cls, kwargs))
            self.traffic.record("weights", "learner", f"actor{rank}", payload=spec["weights"])
        self.counted["installed"] = nbytes(spec["weights"])
        self.places.gather(starting)
        self.held = [0] * self.way.actors  # the weights version each actor holds

    def batches(self, source, epoch):
        for m in self.model.metrics:
            m.reset()
        if self.stream is None:
            self.stream = (u for e in range(epoch, self.epochs) for u in self.source.plan(e))
        return self.source.plan(epoch)

    def __call__(self, unit):
        # The loop hands the units in plan order; the stream gives the same ones, `lag` ahead.
        while len(self.pending) <= self.way.lag:
            upcoming = next(self.stream, None)
            if upcoming is None:
                break
            self.pending.append(self._submit(upcoming))
        experience = self._gather(self.pending.popleft())
        batch = self.source.learn(experience)
        if batch is None:  # e.g. DQN filling its replay buffer before learning starts
            return 0, 0.0
        start = time.perf_counter()
        logs = self.model.train_step(*batch)
        self.traffic.busy("learner", time.perf_counter() - start)
        self.version += 1
        return len(batch[0]), logs["loss"]

    def logs(self):
        return {m.name: m.result() for m in self.model.metrics}

    def end(self, history):
        traffic, c = self.traffic, self.counted
        per_version = replicas.count(self.model) * replicas.flat_dtype(self.model).itemsize
        traffic.textbook = self.way.actors * (
            c["installed"] + c["broadcasts"] * per_version
        ) + self.source.experience_bytes(c["steps"], c["episodes"])
        traffic.extra.update(
            {
                "actors": self.way.actors,
                "lag": self.way.lag,
                "updates": self.version,
                "steps": c["steps"],
                "episodes": c["episodes"],
            }
        )
        traffic.stop()
        history.traffic = traffic.report()
        history.traffic_log = traffic

    # ----- actors -------------------------------------------------------------------------
    def _submit(self, unit):
        """Send each actor its part of `unit`, with the current weights if it lacks them."""
        parts = self.source.split(unit, self.way.actors)
        flat = ref = None
        pendings = []
        for rank, ((h, key), part) in enumerate(zip(self.way.slots(), parts)):
            weights = None
            if self.held[rank] != self.version:
                if ref is None:
                    flat = replicas.get_flat(self.model)
                    ref = self.places.put(flat)
                    self.counted["broadcasts"] += 1
                weights, self.held[rank] = ref, self.version
                self.traffic.record("weights", "learner", f"actor{rank}", payload=flat)
            pendings.append(self.places.submit(h, act, key, weights, part))
        return pendings

    def _gather(self, pendings) -> dict:
        parts = self.places.gather(pendings)
        for rank, (part, busy) in enumerate(zip(parts, self.places.busy(pendings))):
            self.traffic.busy(f"actor{rank}", busy)
            self.traffic.record("trajectories", f"actor{rank}", "learner", payload=part)
            steps, episodes = self.source.counts(part)
            self.counted["steps"] += steps
            self.counted["episodes"] += episodes
        return self.source.merge(parts)
