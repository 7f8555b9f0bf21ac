"""The benchmark workloads W1–W7 of docs/benchmarks.md, built in splitgrad and in PyTorch
(and in JAX, in jax_workloads.py), and W8, a VAE of W4's sizes.

Each builder returns a `step()` function that runs one training step (or one inference pass
for W6) on the next batch of a stream of STREAM = 16 distinct synthetic batches, made once with
numpy.random.default_rng(0) and cycled, so that no framework is timed on one over-fitted batch
(a state training never reaches). `make_data(w)` is the first batch of that stream.

W7 is MIT 6.S191 lab 2's CNN (the fashion-cnn recipe): Conv 24 3×3 ReLU → MaxPool 2 → Conv 36
3×3 ReLU → MaxPool 2 → Dense 900→128 ReLU → Dense 10, batch 64. MACs/sample
26·26·24·9 + 11·11·36·9·24 + 900·128 + 128·10 = 1,203,392.

W8: encoder 784-512 ReLU → μ and log σ² (Dense 32 each) → z = μ + σ·ε → decoder 32-512 ReLU →
784 logits; loss Σ BCE-with-logits / batch + KL (the ELBO); ε is drawn every step (splitgrad's
generator, torch.randn_like). MACs/sample 784·512 + 2·512·32 + 32·512 + 512·784 = 851,968.
"""

from __future__ import annotations

import itertools

import numpy as np

# id: (batch, description, FLOPs per step)
WORKLOADS = {
    "W1": (128, "MLP 784-256-128-10 ReLU, softmax CE", 180.3e6),
    "W2": (64, "CNN 28x28x1 conv32-pool-conv64-pool-128-10", 1010.3e6),
    "W3": (8, "Embedding 83x256, LSTM 1024, Dense 83, seq 100", 25573.8e6),
    "W3b": (32, "Embedding 83x256, LSTM 256, Dense 83, seq 100", 10474.3e6),
    "W4": (128, "autoencoder 784-512-32-512-784, MSE", 641.7e6),
    "W5": (32, "MLP 30-16-1 ReLU, BCE with logits", 95232.0),
    "W6": (256, "W2 CNN inference", 1347.1e6),
    "W7": (64, "lab CNN 28x28x1 conv24-pool-conv36-pool-128-10", 462.1e6),
    "W8": (128, "VAE 784-512-(2x32)-512-784, BCE sum + KL", 654.3e6),
}


STREAM = 16  # distinct batches per workload, cycled


def make_batches(workload, count=STREAM):
    """`count` distinct synthetic batches (inputs N(0,1); images, W4 and W8 U[0,1), as
    docs/benchmarks.md says; uniform integer labels), drawn one after another from
    default_rng(0). Images in [0, 1) matter: on N(0,1) images PyTorch's CNN step ran at about
    60 % of the speed it has on Fashion-MNIST (and on U[0,1)), splitgrad's at the same speed, so
    the micro-benchmark disagreed with the recipes' full runs."""
    rng = np.random.default_rng(0)
    return [_one_batch(workload, rng) for _ in range(count)]


def make_data(workload):
    """The first batch of the workload's stream (x, y)."""
    return make_batches(workload, 1)[0]


def _one_batch(workload, rng):
    batch = WORKLOADS[workload][0]
    if workload == "W1":
        return rng.standard_normal((batch, 784)).astype(np.float32), rng.integers(0, 10, batch)
    if workload in ("W2", "W6", "W7"):
        return (
            rng.random((batch, 28, 28, 1)).astype(np.float32),
            rng.integers(0, 10, batch),
        )
    if workload in ("W3", "W3b"):
        x = rng.integers(0, 83, (batch, 100))
        return x, rng.integers(0, 83, (batch, 100))
    if workload in ("W4", "W8"):
        x = rng.random((batch, 784)).astype(np.float32)
        return x, x
    if workload == "W5":
        return (
            rng.standard_normal((batch, 30)).astype(np.float32),
            rng.integers(0, 2, (batch, 1)).astype(np.float32),
        )
    raise KeyError(workload)


# ----- splitgrad -------------------------------------------------------------------------
def splitgrad_layers(workload):
    """The layers of the workload's splitgrad model (W1–W7) and its loss."""
    import splitgrad as sg
    from splitgrad import nn

    ce = sg.losses.SparseCategoricalCrossentropy(from_logits=True)
    if workload == "W1":
        layers = [nn.Dense(256, activation="relu"), nn.Dense(128, activation="relu"), nn.Dense(10)]
        loss = ce
    elif workload in ("W2", "W6", "W7"):
        first, second = (24, 36) if workload == "W7" else (32, 64)
        layers = [
            nn.Conv2D(first, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2D(second, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Flatten(),
            nn.Dense(128, activation="relu"),
            nn.Dense(10),
        ]
        loss = ce
    elif workload in ("W3", "W3b"):
        units = 1024 if workload == "W3" else 256
        layers = [nn.Embedding(83, 256), nn.LSTM(units, return_sequences=True), nn.Dense(83)]
        loss = ce
    elif workload == "W4":
        layers = [
            nn.Dense(512, activation="relu"),
            nn.Dense(32, activation="relu"),
            nn.Dense(512, activation="relu"),
            nn.Dense(784, activation="sigmoid"),
        ]
        loss = "mse"
    else:
        layers = [nn.Dense(16, activation="relu"), nn.Dense(1)]
        loss = sg.losses.BinaryCrossentropy(from_logits=True)
    return layers, loss


def splitgrad_model(workload):
    """The workload's compiled, built splitgrad model (W1–W7) and its first batch (x, y)."""
    import splitgrad as sg
    from splitgrad import nn

    x, y = make_data(workload)
    layers, loss = splitgrad_layers(workload)
    model = nn.Sequential(layers)
    model.compile(optimizer=sg.optim.Adam(learning_rate=1e-3), loss=loss)
    model.build_from_sample(x)
    return model, x, y


def splitgrad_step(workload):
    import splitgrad as sg

    stream = itertools.cycle(make_batches(workload))
    if workload == "W8":
        return _splitgrad_vae(stream)
    model, _, _ = splitgrad_model(workload)
    if workload == "W6":
        model.eval()

        def infer():
            with sg.no_grad():
                model(next(stream)[0])

        return infer
    model.train()

    def step():
        model.train_step(*next(stream))

    return step


def _splitgrad_vae(stream):
    import splitgrad as sg
    from splitgrad.generative import VAE

    model = VAE(latent_dim=32, kind="dense", hidden=(512,))
    model.compile(optimizer=sg.optim.Adam(learning_rate=1e-3))
    model.build_from_sample(make_data("W8")[0])
    model.train()

    def step():
        x = next(stream)[0]
        model.train_step(x, x)

    return step


# ----- PyTorch ---------------------------------------------------------------------------
def torch_step(workload):
    import torch
    from torch import nn

    torch.set_num_threads(2)
    batches = []
    for x_np, y_np in make_batches(workload):
        if workload in ("W2", "W6", "W7"):
            x_np = x_np.transpose(0, 3, 1, 2).copy()  # torch prefers NCHW
        batches.append((torch.from_numpy(x_np), torch.from_numpy(y_np)))
    stream = itertools.cycle(batches)
    if workload == "W8":
        return _torch_vae(stream)
    ce = nn.CrossEntropyLoss()
    if workload == "W1":
        model = nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
        )
        loss_fn = ce
    elif workload in ("W2", "W6", "W7"):
        first, second = (24, 36) if workload == "W7" else (32, 64)
        model = nn.Sequential(
            nn.Conv2d(1, first, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(second * 5 * 5, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        loss_fn = ce
    elif workload in ("W3", "W3b"):
        units = 1024 if workload == "W3" else 256

        class Music(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(83, 256)
                self.lstm = nn.LSTM(256, units, batch_first=True)
                self.out = nn.Linear(units, 83)

            def forward(self, t):
                return self.out(self.lstm(self.emb(t))[0])

        model = Music()

        def loss_fn(logits, target):
            return ce(logits.reshape(-1, 83), target.reshape(-1))
    elif workload == "W4":
        model = nn.Sequential(
            nn.Linear(784, 512),
            nn.ReLU(),
            nn.Linear(512, 32),
            nn.ReLU(),
            nn.Linear(32, 512),
            nn.ReLU(),
            nn.Linear(512, 784),
            nn.Sigmoid(),
        )
        loss_fn = nn.MSELoss()
    else:
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        loss_fn = nn.BCEWithLogitsLoss()
    if workload == "W6":
        model.eval()

        def infer():
            with torch.no_grad():
                model(next(stream)[0])

        return infer
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        x, y = next(stream)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return step


def torch_vae_module(latent=32, hidden=512, features=784):
    """W8's VAE in PyTorch: forward(x) → (decoder logits, μ, log σ²)."""
    import torch
    from torch import nn

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
            self.z_mean = nn.Linear(hidden, latent)
            self.z_log_var = nn.Linear(hidden, latent)
            self.decoder = nn.Sequential(
                nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, features)
            )

        def forward(self, x):
            h = self.encoder(x)
            mu, log_var = self.z_mean(h), self.z_log_var(h)
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            return self.decoder(z), mu, log_var

    return VAE()


def torch_vae_loss(logits, x, mu, log_var):
    """Σ BCE-with-logits / batch + KL(q ‖ N(0, I)) per example: the negative ELBO."""
    import torch
    from torch.nn import functional as F

    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = 0.5 * torch.sum(torch.exp(log_var) + mu * mu - 1.0 - log_var) / len(x)
    return rec + kl


def _torch_vae(stream):
    import torch

    model = torch_vae_module()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        x = next(stream)[0]
        opt.zero_grad()
        logits, mu, log_var = model(x)
        torch_vae_loss(logits, x, mu, log_var).backward()
        opt.step()

    return step


def jax_step(workload):
    """The JAX builder (jax_workloads.py), imported only when JAX is asked for: JAX is optional
    (the `bench` extra installs it)."""
    from jax_workloads import jax_step as build

    return build(workload)


BUILDERS = {"splitgrad": splitgrad_step, "torch": torch_step, "jax": jax_step}
