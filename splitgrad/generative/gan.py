"""GAN: a generator and a discriminator trained in turns (Goodfellow et al. 2014), DCGAN-style.

    gan = GAN(latent_dim=64)                   # DCGAN generator and discriminator for x's shape
    gan.compile()                              # two Adams, lr 2e-4, beta_1 0.5 (DCGAN)
    gan.fit(x, x, batch_size=64, epochs=10)    # y is not used; labels are fine too
    images = gan.sample(16)

Called on images, the model gives the discriminator's logits (so it builds from the data, as
every Model does); `generate(z)` and `sample(n)` give images. `fit` runs the one training loop
with this class's `train_step`: one discriminator update, then one generator update, per batch.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import losses, optim
from .. import validate as check
from ..layers.layer import register
from ..tensor import Tensor, no_grad
from . import _blocks
from ._base import GenerativeModel
from .objectives import discriminator_loss, generator_loss, standard_normal


def _dcgan_adam(learning_rate=2e-4):
    return optim.Adam(learning_rate=learning_rate, beta_1=0.5)


@register
class GAN(GenerativeModel):
    """Generator G: z ~ N(0, I) → image in [0, 1]; discriminator D: image → logit. Per batch x:

    1. D step: minimise BCE(D(x), 1 − s) + BCE(D(G(z)), 0) over D's weights (s: one-sided
       `label_smoothing`), with `d_optimizer`;
    2. G step: minimise BCE(D(G(z)), 1) = −mean log σ(D(G(z))), the non-saturating loss, over
       G's weights through the just-updated D, with `optimizer` (the same z: PyTorch's DCGAN
       tutorial).

    History: loss (D's loss), g_loss, d_real = mean σ(D(x)) and d_fake = mean σ(D(G(z))) (before
    D's update). kind "conv" is DCGAN (4×4 stride-2 convolutions, BatchNorm in G, leaky ReLU
    in D; `filters` are D's channels, G mirrors them); "dense" uses `hidden` layers.

    A checkpoint holds both optimizers' states: the generator's as the model's optimizer, the
    discriminator's as the extra optimizer "discriminator" (`extra_optimizers`), so training
    resumed from it continues the same run. Its settings also ride with the architecture
    (get_config), so `compile()` on a loaded GAN recreates it.
    """

    TRACKED = ("g_loss", "d_real", "d_fake")

    def __init__(
        self,
        latent_dim=64,
        kind="conv",
        hidden=(256,),
        filters=(64, 128),
        label_smoothing=0.0,
        generator=None,
        discriminator=None,
        name=None,
        dtype="float32",
    ):
        super().__init__(name=name, dtype=dtype)
        who = self._set_architecture(latent_dim, kind, hidden, filters)
        if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing < 1.0):
            raise ValueError(f"{who}: label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        generator = _blocks.from_spec(generator, who, "generator")
        discriminator = _blocks.from_spec(discriminator, who, "discriminator")
        self.given = {
            "generator": generator is not None,
            "discriminator": discriminator is not None,
        }
        if discriminator is None:
            discriminator = _blocks.discriminator(self.kind, self.hidden, self.filters, self.dtype)
        self.discriminator = discriminator
        self.generator = generator  # the default one is made in build, from the images' shape
        self.d_optimizer = None
        self.saved_d_optimizer = None  # its settings, from a saved config

    # ----- setup ------------------------------------------------------------------------
    def compile(self, optimizer=None, loss=None, metrics=None, d_optimizer=None):
        """`optimizer` trains the generator and `d_optimizer` the discriminator (each Adam with
        lr 2e-4 and beta_1 0.5 by default, DCGAN's settings). `loss` is kept for checkpoints:
        both players' losses are binary cross-entropy on logits (objectives.py)."""
        if metrics:
            raise ValueError(
                "GAN.compile: metrics are not used; the GAN reports g_loss, d_real and d_fake "
                "itself"
            )
        self.optimizer = optim.get(optimizer) if optimizer is not None else _dcgan_adam()
        if d_optimizer is None and self.saved_d_optimizer is not None:
            d_optimizer = self.saved_d_optimizer
        self.d_optimizer = optim.get(d_optimizer) if d_optimizer is not None else _dcgan_adam()
        if self.d_optimizer is self.optimizer:
            raise ValueError("GAN.compile: give the generator and the discriminator two optimizers")
        self.loss = (
            losses.get(loss) if loss is not None else losses.BinaryCrossentropy(from_logits=True)
        )
        if not (isinstance(self.loss, losses.BinaryCrossentropy) and self.loss.from_logits):
            raise ValueError(
                "GAN.compile: the GAN's updates use binary cross-entropy on the discriminator's "
                f"logits; leave loss out or pass BinaryCrossentropy(from_logits=True), got "
                f"{self.loss!r}"
            )
        self.metric_specs, self.metrics = [], []
        self._add_trackers()
        if self.built:
            self._build_optimizers()

    def build(self, input_shape):
        shape = tuple(input_shape[1:])
        if self.generator is None:
            self.generator = _blocks.generator(
                self.kind, shape, self.hidden, self.filters, self.dtype
            )
            self.generator.train(self.training)
        was_g, was_d = self.generator.training, self.discriminator.training
        self.generator.eval()  # no BatchNorm statistics from this zero batch
        self.discriminator.eval()
        with no_grad():
            out = self.generator(np.zeros((1, self.latent_dim), self.dtype))
            self.discriminator(np.zeros((1,) + shape, self.dtype))
        self.generator.train(was_g)
        self.discriminator.train(was_d)
        if tuple(out.shape[1:]) != shape:
            raise ValueError(
                f"GAN {self.name!r}: the generator makes images of shape {tuple(out.shape[1:])} "
                f"but the data's are {shape}; change the generator's last layers"
            )
        if self.optimizer is not None and self.d_optimizer is not None:
            # Compiled, then built by a plain call: each optimizer takes its own network now
            # (a checkpoint saves both, and Model's fallback would give one every weight).
            self._build_optimizers()

    def build_from_sample(self, x):
        """Build both networks from one batch, then each optimizer on its own network's weights
        (Model's version would give one optimizer every weight)."""
        if not self.built:
            was = self.training
            self.eval()
            with no_grad():
                self(x[:1])
            self.train(was)
        if self.optimizer is not None:
            self._build_optimizers()

    def extra_optimizers(self) -> dict:
        """The optimizers besides `optimizer` that checkpoints save and load: the
        discriminator's, once compiled."""
        return {} if self.d_optimizer is None else {"discriminator": self.d_optimizer}

    def _build_optimizers(self):
        try:
            self.optimizer.build(self.generator)
            self.d_optimizer.build(self.discriminator)
        except ValueError as exc:
            raise ValueError(
                f"GAN {self.name!r}: its networks changed after compile; call compile again "
                f"with new optimizers. ({exc})"
            ) from None

    # ----- training ---------------------------------------------------------------------
    def call(self, x):
        return self.discriminator(x)

    def noise(self, n, rng=None) -> np.ndarray:
        """z ~ N(0, I) of shape (n, latent_dim), from `rng` (splitgrad's generator by default)."""
        return standard_normal((n, self.latent_dim), self.dtype, rng)

    def train_step(self, x, y=None) -> dict:
        """One discriminator update, then one generator update, on the batch x (y unused)."""
        if not self.training:
            self.train()
        g_opt, d_opt = self.optimizer, self.d_optimizer
        n = len(x)
        with self.threads():
            fake = self.generator(self.noise(n))  # its graph is kept for the G step
            d_opt.zero_grad()
            real_logits = self.discriminator(x)
            fake_logits = self.discriminator(fake.detach())  # D's step leaves G alone
            d_loss = self._penalised(
                discriminator_loss(real_logits, fake_logits, self.label_smoothing),
                self.discriminator,
            )
            d_loss.backward(into=d_opt.grad_buffers())
            d_opt.step()
            g_opt.zero_grad()
            with _frozen(self.discriminator):  # no weight gradients for D in G's step
                g_loss = generator_loss(self.discriminator(fake))
            g_loss = self._penalised(g_loss, self.generator)
            g_loss.backward(into=g_opt.grad_buffers())
            g_opt.step()
        self.record(
            n,
            g_loss=g_loss.data,
            d_real=_probability(real_logits.data).mean(),
            d_fake=_probability(fake_logits.data).mean(),
        )
        return {"loss": float(d_loss.data), **{m.name: m.result() for m in self.metrics}}

    @staticmethod
    def _penalised(loss, network):
        for penalty in network.regularization_losses():
            loss = loss + penalty
        return loss

    def compute_loss(self, x, y=None):
        """D's loss on x and fresh fakes (what `evaluate` and validation report as loss); G's
        loss and the two mean probabilities go to the trackers."""
        real_logits = self.discriminator(x)
        fake_logits = self.discriminator(self.generator(self.noise(len(real_logits.data))))
        d_loss = discriminator_loss(real_logits, fake_logits, self.label_smoothing)
        self.record(
            len(real_logits.data),
            g_loss=generator_loss(fake_logits).data,
            d_real=_probability(real_logits.data).mean(),
            d_fake=_probability(fake_logits.data).mean(),
        )
        self._last_pred = real_logits
        return d_loss

    def fit(self, *args, way=None, **kwargs):
        """Model.fit; the GAN trains at one place (its two-optimizer step is not a way's)."""
        if way is not None:
            raise ValueError(
                "GAN.fit: the ways of splitting training run one optimizer's step at their "
                "places, and a GAN takes two in turns; train it without --way/way="
            )
        return super().fit(*args, **kwargs)

    # ----- using a trained model --------------------------------------------------------
    def generate(self, z, batch_size=256) -> np.ndarray:
        """The images G makes from codes z (inference mode: BatchNorm's moving statistics)."""
        return self.infer(self.generator, z, batch_size)

    def sample(self, n, rng=None) -> np.ndarray:
        """n new images from z ~ N(0, I) drawn with `rng` (splitgrad's generator by default)."""
        return self.generate(self.noise(check.positive_int(n, "GAN.sample: n"), rng))

    def interpolate(self, a=None, b=None, steps=8, rng=None) -> np.ndarray:
        """`steps` images along the straight line between codes a and b (drawn from the prior
        with `rng` when not given)."""
        steps = check.positive_int(steps, "GAN.interpolate: steps")
        a = self.noise(1, rng)[0] if a is None else np.asarray(a, self.dtype)
        b = self.noise(1, rng)[0] if b is None else np.asarray(b, self.dtype)
        t = np.linspace(0.0, 1.0, steps, dtype=self.dtype)[:, None]
        return self.generate((1 - t) * a + t * b)

    def scores(self, x, rng=None, batch_size=256) -> dict:
        """How the two players stand on real images x and as many fakes (z from `rng`), in
        inference mode: d_loss, g_loss, d_real, d_fake (mean probabilities) and d_accuracy
        (the share of real and fake images the discriminator classifies right)."""
        x = check.numeric_array(x, "x")
        real = self.infer(self.discriminator, x, batch_size)
        fakes = self.generate(self.noise(len(x), rng), batch_size)
        fake = self.infer(self.discriminator, fakes, batch_size)
        with no_grad():
            d_loss = discriminator_loss(Tensor(real), Tensor(fake), self.label_smoothing)
            g_loss = generator_loss(Tensor(fake))
        p_real, p_fake = _probability(real), _probability(fake)
        return {
            "d_loss": float(d_loss.data),
            "g_loss": float(g_loss.data),
            "d_real": float(p_real.mean()),
            "d_fake": float(p_fake.mean()),
            "d_accuracy": float(((p_real > 0.5).sum() + (p_fake < 0.5).sum()) / (2 * len(x))),
        }

    # ----- configuration ----------------------------------------------------------------
    def get_config(self):
        d_opt = self.d_optimizer or self.saved_d_optimizer
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "kind": self.kind,
            "hidden": list(self.hidden),
            "filters": list(self.filters),
            "label_smoothing": self.label_smoothing,
            "generator": _blocks.spec(self.generator) if self.given["generator"] else None,
            "discriminator": (
                _blocks.spec(self.discriminator) if self.given["discriminator"] else None
            ),
            # The generator's optimizer is the checkpoint's `optimizer`; this one's settings
            # ride with the architecture, so compile() recreates it, and its state (moments,
            # steps) is the checkpoint's extra optimizer "discriminator".
            "d_optimizer": d_opt
            if d_opt is None or isinstance(d_opt, dict)
            else optim.serialize(d_opt),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        saved = config.pop("d_optimizer", None)
        model = cls(**config)
        model.saved_d_optimizer = saved
        return model


def _probability(logits) -> np.ndarray:
    """σ(logits) without overflow: ½·(1 + tanh(½·logits))."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


@contextlib.contextmanager
def _frozen(network):
    """The network's weights record no gradient inside the block (inputs still get theirs)."""
    params = network.parameters()
    for p in params:
        p.requires_grad = False
    try:
        yield
    finally:
        for p in params:
            p.requires_grad = True
