"""#16 Distillation (Hinton, Vinyals & Dean 2015): a teacher at one place, its student at another.

Each batch the teacher (place 0) runs in inference mode and sends its soft targets
p_T = softmax(z_T / T), B×C values, to the student (place 1), which trains on

    L = α·T²·KL(p_T ‖ softmax(z_S / T)) + (1 − α)·L_labels(z_S, y)   (+ its penalties)

T² keeps the soft term's gradients on the scale of the label loss's as the temperature T
grows (they shrink as 1/T²). With α = 0 the student's step is the plain step, and since the
student continues the driver's random stream (Dropout), the run is the one-place run bit for
bit. The student needs logits: a model ending in a softmax gives them (`.logits`), one with
a from_logits loss emits them.

The teacher is a trained Model, a saved model folder (`teacher="runs/x"`, loaded at the
teacher's place), or by default a copy of the student trained at the teacher's place for
`teacher_epochs` epochs on the same data, inside setup, so that `splitgrad compare` and
`--way distillation` run with nothing else at hand. That default teacher knows no more than a
student trained as long; pass a trained teacher for a real distillation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar

import numpy as np

from .. import random as sg_random
from ..losses import CategoricalCrossentropy
from ..ops import Probabilities
from ..tensor import no_grad
from . import host as host_ops
from . import replicas
from .base import Way

TEACHER_TAG = 0x7EAC  # seeds the default teacher's training stream


# ----- place side ------------------------------------------------------------------------------
def setup_teacher(host, key, source, x, y):
    """Place op: the teacher, from a model ("model"), a saved folder ("path") or trained here
    from the student's spec ("train"); it holds the data it must answer about."""
    if "path" in source:
        from ..checkpoint import load_model

        model = load_model(source["path"], compile=False, restore_rng=False)
    elif "train" in source:
        model = replicas.unpack(source["train"])
        with replicas.rng_scope(replicas.key_state(source["seed"])):
            model.fit(x, y, source["batch_size"], source["epochs"], verbose=0, seed=source["seed"])
    else:
        spec = source["model"]
        state = copy.deepcopy(sg_random.get_state())  # building draws weights: put back
        model = spec["cls"].from_config(copy.deepcopy(spec["config"]))
        model.build_from_sample(spec["sample"])
        sg_random.set_state(state)
        model.set_weights(spec["weights"])
    host.slots[key] = host_ops.Slot(model, x, y)


def _logits(out, who):
    if isinstance(out, Probabilities):
        if out.kind != "softmax":
            raise ValueError(f"distillation: the {who} ends in a {out.kind}; it needs a softmax")
        return out.logits
    return out


def teach(host, key, index, temperature, dtype):
    """Place op: the teacher's soft targets softmax(z_T / T) for the rows `index`."""
    slot = host.slots[key]
    model = slot.model
    was = model.training
    model.eval()
    try:
        with no_grad(), model.threads():
            z = _logits(model(slot.x[index]), "teacher").data / temperature
    finally:
        model.train(was)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    soft = (z / z.sum(axis=-1, keepdims=True)).astype(dtype)
    return {"sent": soft.nbytes}, [soft]


def learn(host, key, index, soft, temperature, alpha):
    """Place op: one step of the student on α·T²·KL(soft ‖ its own at T) + (1−α)·label loss."""
    slot = host.slots[key]
    model, opt = slot.model, slot.model.optimizer
    x, y = slot.x[index], slot.y[index]
    opt.zero_grad()
    if not model.training:
        model.train()
    with model.threads():
        if alpha == 0:
            loss = model.compute_loss(x, y)  # the plain step, exactly
        else:
            soft = np.asarray(soft)
            y_pred = model(x)
            z = _logits(y_pred, "student")
            if z.shape != soft.shape:
                raise ValueError(
                    f"distillation: the teacher gives {soft.shape[-1]} classes, the student "
                    f"{z.shape[-1]}; use a teacher for the same classes"
                )
            dt = z.dtype.type
            cross = CategoricalCrossentropy(from_logits=True)(soft, z * dt(1 / temperature))
            entropy = -np.sum(soft * np.log(np.where(soft > 0, soft, 1)), axis=-1).mean()
            kl = cross - dt(entropy)  # KL = cross-entropy − H(p_T): same gradient, honest value
            loss = model.loss(y, y_pred) * dt(1 - alpha) + kl * dt(alpha * temperature**2)
            for p in model.regularization_losses():
                loss = loss + p
        loss.backward(into=opt.grad_buffers())
    opt.step()
    return float(loss.data)


# ----- driver side -----------------------------------------------------------------------------
class Distillation(Way):
    """Teacher's soft targets (B×C per batch) to the student; α = 0 is plain training."""

    name = "distillation"
    number, cut, crosses = 16, "the model", "teacher outputs (soft targets)"
    formula = "B*C per batch"
    checks = "distillation weight 0 = plain training (bitwise)"
    options: ClassVar[dict] = {
        "teacher": None,
        "temperature": 2.0,
        "alpha": 0.5,
        "teacher_epochs": 2,
    }
    note = (
        "the student also learns the teacher's soft targets (alpha 0.5, T 2; the default "
        "teacher is a copy of the student trained for 2 epochs first)"
    )

    def __init__(
        self,
        teacher=None,
        temperature: float = 2.0,
        alpha: float = 0.5,
        teacher_epochs: int = 2,
        places=None,
    ):
        super().__init__(places)
        if not float(temperature) > 0 or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(
                "Distillation: temperature must be > 0 and alpha in [0, 1], got "
                f"temperature={temperature}, alpha={alpha}"
            )
        model_given = teacher is not None and not isinstance(teacher, (str, Path))
        if model_given and not getattr(teacher, "built", False):
            raise ValueError(
                "Distillation: the teacher model is not built; train it (or call it on "
                "data) first, or pass the folder of a saved run"
            )
        self.teacher, self.teacher_epochs = teacher, int(teacher_epochs)
        self.temperature, self.alpha = float(temperature), float(alpha)

    @classmethod
    def from_options(cls, n, options, places=None):
        return cls(places=places, **cls.with_defaults(options))  # teacher and student: 2 places

    def expectation(self, model):
        if self.alpha == 0:
            return True, "distillation weight 0: the student's step is the plain step, bitwise"
        return super().expectation(model)

    def _source(self, run) -> dict:
        teacher = self.teacher
        if teacher is None:
            seed = [int(run.seed), TEACHER_TAG]
            return {"train": run.spec(), "epochs": self.teacher_epochs, "seed": seed,
                    "batch_size": run.batch_size}  # fmt: skip
        if isinstance(teacher, (str, Path)):
            return {"path": str(teacher)}
        spec = {"cls": type(teacher), "config": teacher.get_config()}
        sample = np.zeros((1, *teacher.input_shape[1:]), teacher.dtype)
        return {"model": {**spec, "sample": sample, "weights": teacher.get_weights()}}

    def setup(self, run):
        self._at = (self.places.host_of(0), self.places.host_of(1))
        x_ref, y_ref = run.data_refs()
        source = self._source(run)
        stream = sg_random.get_state()  # the student continues the driver's random stream
        spec = self.places.put(run.spec())
        teacher, student = self._at
        run.gather(
            [
                self.places.submit(teacher, setup_teacher, "teacher", source, x_ref, y_ref),
                self.places.submit(
                    student, host_ops.setup, "student", spec, x_ref, y_ref, None, stream
                ),
            ],
            ["teacher", "student"],
        )
        self._book, self._classes = 0, int(run.model.predict(run.x[:1]).shape[-1])

    def step(self, run, step, index):
        teacher, student = self._at
        dtype = replicas.flat_dtype(run.model)
        soft = self.places.submit_multi(
            teacher, teach, 1, "teacher", index, self.temperature, dtype
        )
        learned = self.places.submit(
            student, learn, "student", index, soft.outs[0], self.temperature, self.alpha
        )
        head, loss = run.gather([soft, learned], ["teacher", "student"])
        run.traffic.record("activations", "teacher", "student", size=head["sent"])
        self._book += len(index) * self._classes * dtype.itemsize
        return loss

    def finish(self, run):
        _, student = self._at
        spec = self.places.gather([self.places.submit(student, host_ops.get_model, "student")])
        replicas.adopt(run.model, spec[0])

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return self._book

    def report(self, run):
        return {"temperature": self.temperature, "alpha": self.alpha}
