"""The vae recipe next to the same VAE in PyTorch at the same budget: test ELBO, wall time, memory.

    python benchmarks/vae_vs_torch.py                      # both, 30 epochs (the recipe's)
    python benchmarks/vae_vs_torch.py --epochs 10 --json out.json --out runs/vae
    python benchmarks/vae_vs_torch.py --only torch --epochs 2   # one side, in this process

splitgrad runs the recipe as `splitgrad train vae` does (Fashion-MNIST, encoder 784-512 ReLU →
μ, log σ² of 2 units, decoder 2-512 ReLU-784 logits, Σ BCE + KL, Adam 1e-3, batch 128,
training on the first 90 % of the training images and scoring the last 10 % after each
epoch). PyTorch trains the same model (benchmarks/workloads.py's `torch_vae_module`, each
framework's default initialisation, which is the same distribution, U(±1/sqrt(fan_in))) on the
same rows in the same batch order (splitgrad.data.batch_order with the same seed), with the same
optimizer, epochs and per-epoch validation pass. Both report the test ELBO exactly as the recipe
does: one z per image, its ε drawn in float32 batches of 256 from numpy.random.default_rng(0), so
the only differences left are the initial weights and the training noise ε.

Each side runs in its own process, with 2 threads, under the GLIBC_TUNABLES setting of
docs/benchmarks.md; the BLAS library and kernel NumPy ran on are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
THREADS, BATCH, LR, EVAL_SEED, EVAL_BATCH = 2, 128, 1e-3, 0, 256
TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def blas_info() -> str:
    from threadpoolctl import threadpool_info

    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(
        f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}" for i in info
    )


def run_splitgrad(epochs, seed, out=None):
    """`splitgrad train vae --epochs E --seed S` into `out` (a temporary folder by default):
    its test metrics."""
    from splitgrad import recipes

    recipes.RECIPES.setdefault("vae", "splitgrad.recipes.vae")
    if out is not None:
        return recipes.train("vae", epochs=epochs, seed=seed, out=out, verbose=0)["metrics"]
    with tempfile.TemporaryDirectory() as folder:
        return recipes.train("vae", epochs=epochs, seed=seed, out=folder, verbose=0)["metrics"]


def run_torch(epochs, seed, out=None):
    """The same VAE, data, batch order and budget in PyTorch: its test ELBO and parts."""
    import torch

    from splitgrad.data import batch_order
    from splitgrad.datasets import load_fashion_mnist
    from splitgrad.recipes import vae

    sys.path.insert(0, str(HERE))
    from workloads import torch_vae_loss, torch_vae_module

    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    data = load_fashion_mnist()
    flat = data.x_train.reshape(len(data.x_train), -1)
    cut = int(len(flat) * 0.9)  # what `splitgrad train` trains on (validation_split=0.1)
    x, x_val = torch.from_numpy(flat[:cut]), torch.from_numpy(flat[cut:])
    x_test = data.x_test.reshape(len(data.x_test), -1)
    model = torch_vae_module(latent=vae.LATENT, hidden=vae.HIDDEN)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for epoch in range(epochs):
        model.train()
        for idx in batch_order(len(x), BATCH, True, seed, epoch):
            xb = x[torch.from_numpy(idx)]
            opt.zero_grad()
            logits, mu, log_var = model(xb)
            torch_vae_loss(logits, xb, mu, log_var).backward()
            opt.step()
        model.eval()
        with torch.no_grad():  # the validation pass splitgrad's fit makes after every epoch
            for i in range(0, len(x_val), 32):
                xb = x_val[i : i + 32]
                logits, mu, log_var = model(xb)
                torch_vae_loss(logits, xb, mu, log_var)
    return test_elbo(model, x_test)


def test_elbo(model, x_test):
    """The ELBO as VAE.elbo computes it: one z per image, ε from default_rng(EVAL_SEED)."""
    import numpy as np
    import torch
    from torch.nn import functional as F

    rng = np.random.default_rng(EVAL_SEED)
    rec = kl = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x_test), EVAL_BATCH):
            xb = torch.from_numpy(x_test[i : i + EVAL_BATCH])
            h = model.encoder(xb)
            mu, log_var = model.z_mean(h), model.z_log_var(h)
            eps = torch.from_numpy(rng.standard_normal(tuple(mu.shape), dtype=np.float32))
            logits = model.decoder(mu + torch.exp(0.5 * log_var) * eps)
            rec += float(F.binary_cross_entropy_with_logits(logits, xb, reduction="sum"))
            kl += float(0.5 * torch.sum(torch.exp(log_var) + mu * mu - 1.0 - log_var))
    rec, kl = rec / len(x_test), kl / len(x_test)
    return {"elbo": -(rec + kl), "reconstruction": rec, "kl": kl}


def measure(side, epochs, seed, out=None):
    """{'side', 'epochs', 'seed', 'wall_s', 'peak_mib', 'elbo', ..., 'blas'} for one side."""
    start = time.perf_counter()
    metrics = {"splitgrad": run_splitgrad, "torch": run_torch}[side](epochs, seed, out)
    wall = time.perf_counter() - start
    return {
        "side": side,
        "epochs": epochs,
        "seed": seed,
        "wall_s": round(wall, 1),
        "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **{k: round(float(v), 3) for k, v in metrics.items()},
        "blas": blas_info(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["splitgrad", "torch"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write both sides' figures here")
    parser.add_argument("--out", help="keep splitgrad's run folder (model, PNGs) here")
    args = parser.parse_args(argv)
    if args.only:
        print(json.dumps(measure(args.only, args.epochs, args.seed, args.out)))
        return
    rows = []
    env = {**os.environ, "GLIBC_TUNABLES": TUNABLES}
    for side in ("torch", "splitgrad"):
        done = subprocess.run(
            [sys.executable, __file__, "--only", side, "--epochs", str(args.epochs)]
            + ["--seed", str(args.seed)]
            + (["--out", args.out] if args.out and side == "splitgrad" else []),
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    t, s = rows
    print(
        f"splitgrad / torch after {args.epochs} epochs: test ELBO {s['elbo']:.2f} vs "
        f"{t['elbo']:.2f} nats, wall {s['wall_s'] / t['wall_s']:.2f}x, "
        f"peak memory {s['peak_mib'] / t['peak_mib']:.2f}x (BLAS: {s['blas']})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": t, "splitgrad": s}, indent=1))


if __name__ == "__main__":
    main()
