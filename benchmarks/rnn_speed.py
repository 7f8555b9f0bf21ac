"""LSTM speed against PyTorch (CPU, 2 threads), interleaved in one run; prints steps/s and ratios.

Workloads (docs/benchmarks.md): W3 Embedding(83, 256) · LSTM(1024) · Dense(83), batch 8, seq 100;
W3b the same with LSTM(256), batch 32. A training step is zero grads, forward, mean
cross-entropy over all steps, backward, Adam(lr 1e-3). "layer" rows time the LSTM layer alone
(forward + backward of a sum). Each figure is the median over fresh worker processes (one per
framework, case and round; rounds interleaved so machine drift hits both alike) × repeats.
Run from the repository root: `python -m benchmarks.rnn_speed [--processes 3] [--only W3]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

import splitgrad as sg
from splitgrad import nn
from splitgrad.tensor import Function

VOCAB, EMBED, SEQ = 83, 256, 100
WORKLOADS = {"W3": (1024, 8), "W3b": (256, 32)}


class _SoftmaxCE(Function):
    """Mean cross-entropy from logits (last axis) and integer labels, fused (fallback loss)."""

    def forward(self, logits, labels):
        z = logits.reshape(-1, logits.shape[-1])
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        self.p, self.labels, self.shape = p, labels.reshape(-1), logits.shape
        rows = np.arange(len(self.labels))
        return np.asarray(-np.log(p[rows, self.labels]).mean(), dtype=logits.dtype)

    def backward(self, g):
        d = self.p.copy()
        d[np.arange(len(self.labels)), self.labels] -= 1.0
        d *= g / len(self.labels)
        return d.reshape(self.shape), None


def _loss_fn():
    """The library's fused cross-entropy when losses.py provides it, else the fallback above."""
    try:
        from splitgrad import losses

        fn = losses.sparse_categorical_crossentropy
        return lambda logits, y: fn(logits, y, from_logits=True)
    except (ImportError, AttributeError):
        return _SoftmaxCE.apply


def _optimizer(params):
    """The library's Adam when optim.py provides it, else PyTorch's Adam rule in place."""
    try:
        from splitgrad import optim

        opt = optim.Adam(params, learning_rate=1e-3)
        return opt.step, opt.zero_grad
    except (ImportError, AttributeError, TypeError):
        pass
    state = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in params]
    count = [0]

    def step():
        count[0] += 1
        t = count[0]
        for p, (m, v) in zip(params, state):
            m *= 0.9
            m += 0.1 * p.grad
            v *= 0.999
            v += 0.001 * p.grad * p.grad
            denom = np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8
            p.data -= (1e-3 / (1 - 0.9**t)) * m / denom

    def zero_grad():
        for p in params:
            p.grad = None

    return step, zero_grad


def ours_train(units, batch, rng):
    sg.seed(0)
    model = nn.Sequential([nn.Embedding(VOCAB, EMBED), nn.LSTM(units, return_sequences=True),
                           nn.Dense(VOCAB)])
    x = rng.integers(0, VOCAB, (batch, SEQ))
    y = rng.integers(0, VOCAB, (batch, SEQ))
    model(x)
    step, zero_grad = _optimizer(model.parameters())
    loss_fn = _loss_fn()

    def run():
        zero_grad()
        loss_fn(model(x), y).backward()
        step()

    return run


def torch_train(units, batch, rng):
    import torch

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"emb": torch.nn.Embedding(VOCAB, EMBED),
                                 "lstm": torch.nn.LSTM(EMBED, units, batch_first=True),
                                 "out": torch.nn.Linear(units, VOCAB)})
    x = torch.from_numpy(rng.integers(0, VOCAB, (batch, SEQ)))
    y = torch.from_numpy(rng.integers(0, VOCAB, (batch, SEQ)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run():
        opt.zero_grad()
        h, _ = model["lstm"](model["emb"](x))
        logits = model["out"](h)
        torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)).backward()
        opt.step()

    return run


def ours_layer(units, batch, rng):
    sg.seed(0)
    layer = nn.LSTM(units, return_sequences=True)
    x = sg.Tensor(rng.standard_normal((batch, SEQ, EMBED)).astype(np.float32),
                  requires_grad=True)

    def run():
        layer.zero_grad()
        x.grad = None
        layer(x).sum().backward()

    return run


def torch_layer(units, batch, rng):
    import torch

    torch.manual_seed(0)
    layer = torch.nn.LSTM(EMBED, units, batch_first=True)
    x = torch.from_numpy(rng.standard_normal((batch, SEQ, EMBED)).astype(np.float32))
    x.requires_grad_(True)

    def run():
        layer.zero_grad()
        x.grad = None
        layer(x)[0].sum().backward()

    return run


def _time(run, seconds):
    """Steps/s and minor page faults per step over about `seconds` of steps."""
    start, faults0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    n = 0
    while True:
        run()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
            return n / elapsed, faults / n


MAKERS = {("ours", "train"): ours_train, ("torch", "train"): torch_train,
          ("ours", "layer"): ours_layer, ("torch", "layer"): torch_layer}


def worker(framework, what, workload, repeats, seconds):
    """One fresh process: warm up, then print one JSON line of steps/s per repeat."""
    if framework == "torch":
        import torch

        torch.set_num_threads(2)
    units, batch = WORKLOADS[workload]
    run = MAKERS[framework, what](units, batch, np.random.default_rng(0))
    _time(run, 0.3)  # warm-up: at least 0.3 s and 5 steps
    for _ in range(5):
        run()
    results = [_time(run, seconds) for _ in range(repeats)]
    print(json.dumps({"rates": [r for r, _ in results], "faults": [f for _, f in results]}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per figure")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per process")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one repeat")
    parser.add_argument("--only", choices=sorted(WORKLOADS), default=None)
    parser.add_argument("--what", choices=["train", "layer"], default=None)
    parser.add_argument("--worker", nargs=3, metavar=("FRAMEWORK", "WHAT", "WORKLOAD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.repeats, args.seconds)
        return
    cases = [(w, what) for w in ([args.only] if args.only else list(WORKLOADS))
             for what in ([args.what] if args.what else ["train", "layer"])]
    rates = {(c, fw): [] for c in cases for fw in ("ours", "torch")}
    faults = {c: [] for c in cases}
    # Rounds alternate frameworks in fresh processes: each framework keeps its own thread pool
    # (two pools spinning on 2 cores would slow both) and drift hits both alike.
    for _ in range(args.processes):
        for case in cases:
            for fw in ("ours", "torch"):
                cmd = [sys.executable, "-m", "benchmarks.rnn_speed", "--repeats",
                       str(args.repeats), "--seconds", str(args.seconds),
                       "--worker", fw, case[1], case[0]]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                rates[case, fw] += result["rates"]
                if fw == "ours":
                    faults[case] += result["faults"]
    print(f"{'case':<12}{'splitgrad/s':>12}{'torch/s':>10}{'ratio':>8}{'faults/step':>13}")
    for case in cases:
        ours, theirs = np.median(rates[case, "ours"]), np.median(rates[case, "torch"])
        print(f"{case[0] + ' ' + case[1]:<12}{ours:>12.2f}{theirs:>10.2f}{ours / theirs:>8.2f}"
              f"{np.median(faults[case]):>13.0f}")


if __name__ == "__main__":
    main()
