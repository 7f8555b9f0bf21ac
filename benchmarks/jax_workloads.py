"""The workloads of workloads.py (W1–W8) written in JAX, a third peer next to PyTorch.

Same networks, sizes, losses, batches and optimizer as the splitgrad and PyTorch builders:

* layers are plain functions of a dict of float32 arrays; convolutions run in NHWC with HWIO
  kernels (`lax.conv_general_dilated`, VALID), max pooling is `lax.reduce_window`, the LSTM is a
  `lax.scan` over time after one product of all inputs with W_ih (as PyTorch's CPU LSTM does),
  and the embedding is a gather;
* JAX has no default initialisation (it has no layers), so weights are drawn with PyTorch's
  rule: U(±1/√fan_in) for every weight and bias (LSTM: U(±1/√units), one bias of 4·units;
  the embedding N(0, 1));
* Adam is `optax.adam(1e-3)`, whose other defaults are PyTorch's (β 0.9/0.999, ε 1e-8 added
  to √v̂);
* the whole step (forward, loss, gradient, Adam) is one `jax.jit` executable whose parameters and
  optimizer state are donated, so XLA updates them in place;
* the 16-batch stream of `make_batches` is put on the device once (labels as int32) and cycled;
* every step waits for its results (`block_until_ready`), so a timed step is a finished step.

`jax_step(workload)` is the builder compare.py calls (BUILDERS["jax"] in workloads.py);
`init_params`, `forward`, `loss` and `train_update` are exposed for tests/test_bench_jax.py;
`describe()` says what JAX ran on, for the kernel line of compare.py's tables.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
from workloads import make_batches

CONV = {"W2": (32, 64), "W6": (32, 64), "W7": (24, 36)}  # channels of the two convolutions
LSTM_UNITS = {"W3": 1024, "W3b": 256}
VOCAB, EMBED = 83, 256


def describe() -> str:
    """What JAX ran on: its version, the backend and its devices, and the CPU threads XLA's
    pool may use (it sizes its pool to the CPUs this process is allowed on)."""
    import jax

    devices = ", ".join(str(d) for d in jax.devices())
    threads = len(os.sched_getaffinity(0))
    flags = os.environ.get("XLA_FLAGS", "")
    return f"jax {jax.__version__} XLA {jax.default_backend()} [{devices}] x{threads}" + (
        f" XLA_FLAGS={flags}" if flags else ""
    )


# ----- parameters ------------------------------------------------------------------------
def _dense(rng, fan_in, fan_out):
    bound = 1.0 / np.sqrt(fan_in)  # PyTorch's nn.Linear default, weight and bias alike
    return {
        "w": rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
        "b": rng.uniform(-bound, bound, fan_out).astype(np.float32),
    }


def _conv(rng, c_in, c_out, k=3):
    bound = 1.0 / np.sqrt(c_in * k * k)  # PyTorch's nn.Conv2d default
    return {
        "w": rng.uniform(-bound, bound, (k, k, c_in, c_out)).astype(np.float32),  # HWIO
        "b": rng.uniform(-bound, bound, c_out).astype(np.float32),
    }


def init_params(workload, seed=0) -> dict:
    """The workload's parameters as a dict of NumPy float32 arrays (PyTorch's init rule)."""
    rng = np.random.default_rng(seed)
    if workload == "W1":
        sizes = [784, 256, 128, 10]
    elif workload == "W4":
        sizes = [784, 512, 32, 512, 784]
    elif workload == "W5":
        sizes = [30, 16, 1]
    elif workload in CONV:
        first, second = CONV[workload]
        return {
            "conv1": _conv(rng, 1, first),
            "conv2": _conv(rng, first, second),
            "dense1": _dense(rng, 5 * 5 * second, 128),
            "dense2": _dense(rng, 128, 10),
        }
    elif workload in LSTM_UNITS:
        units = LSTM_UNITS[workload]
        bound = 1.0 / np.sqrt(units)  # PyTorch's nn.LSTM default
        return {
            "embed": rng.standard_normal((VOCAB, EMBED)).astype(np.float32),  # nn.Embedding's
            "w_ih": rng.uniform(-bound, bound, (EMBED, 4 * units)).astype(np.float32),
            "w_hh": rng.uniform(-bound, bound, (units, 4 * units)).astype(np.float32),
            "b": rng.uniform(-bound, bound, 4 * units).astype(np.float32),
            "out": _dense(rng, units, VOCAB),
        }
    elif workload == "W8":
        return {
            "enc": _dense(rng, 784, 512),
            "mean": _dense(rng, 512, 32),
            "log_var": _dense(rng, 512, 32),
            "dec1": _dense(rng, 32, 512),
            "dec2": _dense(rng, 512, 784),
        }
    else:
        raise KeyError(f"jax: no workload {workload!r}; expected W1 ... W8")
    return {
        f"dense{i + 1}": _dense(rng, a, b) for i, (a, b) in enumerate(itertools.pairwise(sizes))
    }


# ----- forward and loss ------------------------------------------------------------------
def _affine(p, x):
    return x @ p["w"] + p["b"]


def _conv_relu_pool(p, x):
    from jax import lax

    y = lax.conv_general_dilated(
        x, p["w"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = lax.max(y + p["b"], 0.0)
    return lax.reduce_window(y, -np.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _lstm(p, tokens):
    """Embedding, then an LSTM (gates i, f, g, o as PyTorch orders them), then the Dense."""
    import jax
    import jax.numpy as jnp

    units = p["w_hh"].shape[0]
    # One GEMM for every step's input part, then only h @ W_hh inside the recurrence.
    inputs = jnp.take(p["embed"], tokens, axis=0) @ p["w_ih"] + p["b"]  # (batch, time, 4·units)

    def cell(carry, x_t):
        h, c = carry
        gates = x_t + h @ p["w_hh"]
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((tokens.shape[0], units), inputs.dtype)
    _, hs = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(inputs, 0, 1))
    return _affine(p["out"], jnp.swapaxes(hs, 0, 1))


def forward(workload, params, x, key=None):
    """The workload's output for a batch x (W8: decoder logits, μ, log σ², with ε from key)."""
    import jax
    import jax.numpy as jnp

    relu = jax.nn.relu
    if workload in ("W1", "W5"):
        layers = [params[f"dense{i + 1}"] for i in range(len(params))]
        for p in layers[:-1]:
            x = relu(_affine(p, x))
        return _affine(layers[-1], x)
    if workload == "W4":
        for i in (1, 2, 3):
            x = relu(_affine(params[f"dense{i}"], x))
        return jax.nn.sigmoid(_affine(params["dense4"], x))
    if workload in CONV:
        x = _conv_relu_pool(params["conv2"], _conv_relu_pool(params["conv1"], x))
        x = relu(_affine(params["dense1"], x.reshape(x.shape[0], -1)))  # NHWC flatten
        return _affine(params["dense2"], x)
    if workload in LSTM_UNITS:
        return _lstm(params, x)
    if workload == "W8":
        h = relu(_affine(params["enc"], x))
        mu, log_var = _affine(params["mean"], h), _affine(params["log_var"], h)
        z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu.shape, mu.dtype)
        return _affine(params["dec2"], relu(_affine(params["dec1"], z))), mu, log_var
    raise KeyError(f"jax: no workload {workload!r}; expected W1 ... W8")


def loss(workload, params, x, y, key=None):
    """The workload's training loss on one batch (the same losses as the PyTorch builder)."""
    import jax.numpy as jnp
    import optax

    out = forward(workload, params, x, key)
    if workload == "W4":
        return jnp.mean((out - y) ** 2)
    if workload == "W5":
        return optax.sigmoid_binary_cross_entropy(out, y).mean()
    if workload == "W8":
        logits, mu, log_var = out
        rec = optax.sigmoid_binary_cross_entropy(logits, x).sum() / x.shape[0]
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mu * mu - 1.0 - log_var) / x.shape[0]
        return rec + kl
    # Softmax cross-entropy, mean over every label (W3/W3b: over all 100 steps).
    logits = out.reshape(-1, out.shape[-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y.reshape(-1)).mean()


def device_batches(workload):
    """The 16-batch stream on the device once: float inputs as float32, labels as int32."""
    import jax

    def put(a):
        a = np.asarray(a)
        return jax.device_put(a.astype(np.int32) if a.dtype.kind in "iu" else a)

    return [(put(x), put(y)) for x, y in make_batches(workload)]


# ----- the builder -----------------------------------------------------------------------
def train_update(workload):
    """The jit-compiled training step and its first state: `update(params, opt_state, key, x,
    y)` returns the new (params, opt_state, key); the three are donated (updated in place)."""
    import functools

    import jax
    import optax

    optimizer = optax.adam(1e-3)  # b1=0.9, b2=0.999, eps=1e-8: torch.optim.Adam's defaults

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def update(params, opt_state, key, x, y):
        noise = None
        if workload == "W8":  # the VAE draws a fresh ε every step
            key, noise = jax.random.split(key)
        grads = jax.grad(functools.partial(loss, workload))(params, x, y, noise)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key

    params = jax.device_put(init_params(workload))
    return update, [params, optimizer.init(params), jax.random.key(0)]


def jax_step(workload):
    """One jit-compiled training step (W6: inference) on the next batch, waited for."""
    import functools

    import jax

    stream = itertools.cycle(device_batches(workload))
    if workload == "W6":
        params = jax.device_put(init_params(workload))
        infer = jax.jit(functools.partial(forward, workload))

        def run():
            infer(params, next(stream)[0]).block_until_ready()

        return run

    update, state = train_update(workload)

    def step():
        x, y = next(stream)
        state[:] = update(*state, x, y)
        # One executable wrote every output; waiting on the parameters waits for the step.
        jax.block_until_ready(state[0])

    return step
