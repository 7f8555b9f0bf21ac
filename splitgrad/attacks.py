"""Two attacks that show why federated learning needs its defences, and that they work.

* **Gradient inversion** (the analytic single-row case of "Deep Leakage from Gradients", Zhu et
  al. 2019): a client that trains one SGD step on one row x sends Δ = −lr·∇. For the first
  Dense layer, ∂ℓ/∂W[:, j] = x·δ_j and ∂ℓ/∂b_j = δ_j, so x = ΔW[:, j] / Δb_j for any unit j
  the row reached: the server reads the row off the update, to rounding. Under secure
  aggregation the server sees only the sum over clients (the same formula gives a blend of
  them); under DP-FedAvg only a clipped, noised sum (noise).
* **Membership inference** (a loss-threshold attack, Yeom et al. 2018): a model's loss is lower
  on the rows it trained on; ranking rows by loss tells members from non-members better than
  chance (AUC > 0.5), the more so the more the model overfits. DP-SGD pushes it back to 0.5.

    splitgrad attack gradient-inversion runs/digits-mlp     # PNG: originals and what leaks
    splitgrad attack membership runs/digits-mlp             # PNG: loss histograms and ROC
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .losses import Loss
from .tensor import no_grad


# ----- gradient inversion ----------------------------------------------------------------------
def first_dense(model) -> tuple[str, str]:
    """Names of the first (in, units) kernel and its bias among the model's weights."""
    names = list(model.named_weights())
    for i, name in enumerate(names):
        p = model.named_weights()[name]
        if (
            name.endswith("kernel")
            and p.ndim == 2
            and i + 1 < len(names)
            and names[i + 1].endswith("bias")
        ):
            return name, names[i + 1]
    raise ValueError(
        "gradient inversion needs a Dense layer with a bias on the input (after "
        "Flatten); this model has none"
    )


def invert(kernel_delta: np.ndarray, bias_delta: np.ndarray) -> np.ndarray:
    """The input row behind a single-row update: ΔW[:, j] / Δb_j, for the unit j with the
    largest |Δb_j| (the most reliable ratio)."""
    j = int(np.argmax(np.abs(bias_delta)))
    if bias_delta[j] == 0:
        return np.zeros(kernel_delta.shape[0])
    return kernel_delta[:, j] / bias_delta[j]


def inversion_demo(
    model, rows: np.ndarray, labels: np.ndarray, lr: float = 0.1, noise: float = 1.0, seed: int = 0
) -> dict:
    """One federated round of K clients holding one row each, seen by three servers.

    Every client takes one SGD step (lr) from the global weights on its own row and sends its
    update. Returns the rows reconstructed by a server that sees each update (plain FedAvg), by
    one that sees only their sum (secure aggregation) and by one that sees the clipped,
    noise-`noise` DP-FedAvg sum, with each reconstruction's mean squared error.
    """
    from . import optim
    from .split import Federated, partition
    from .split.user_dp import UserLevelDP

    kernel, bias = first_dense(model)
    model.compile(optimizer=optim.SGD(learning_rate=lr), loss=model.loss)
    start = {k: p.data.copy() for k, p in model.named_weights().items()}
    way = Federated(clients=len(rows), local_batch_size=None, seed=seed)
    way.keep_payloads = True
    history = model.fit(
        rows, labels, batch_size=len(rows), epochs=1, verbose=0, seed=seed, way=way, shuffle=False
    )
    deltas = {
        int(src.removeprefix("client")): p
        for kind, src, dst, p in history.traffic_log.payloads
        if kind == "weights" and dst == "server"
    }
    offsets = _offsets(model, kernel, bias)
    by_client = {k: _split_update(d, offsets) for k, d in deltas.items()}
    parts = partition(labels, len(rows), seed=seed)  # which row each client held (the way's)
    originals = np.stack([rows[parts[k][0]].reshape(-1) for k in sorted(by_client)])
    plain = np.stack([invert(*by_client[k]) for k in sorted(by_client)])
    total = sum(deltas.values())
    secure = invert(*_split_update(total, offsets))
    dp = UserLevelDP(clip=1.0, noise=noise, expected_clients=len(rows), seed=seed)
    noisy = invert(*_split_update(dp.aggregate(np.stack(list(deltas.values())), 0), offsets))
    for name, value in start.items():  # the attack leaves the model as it found it
        model.named_weights()[name].data[...] = value

    def error(guess):
        return float(np.mean([(guess - o) ** 2 for o in originals]))

    return {
        "originals": originals,
        "plain": plain,
        "secure": secure,
        "dp": noisy,
        "mse": {
            "plain": float(np.mean((plain - originals) ** 2)),
            "secure": error(secure),
            "dp": error(noisy),
        },
    }


def _offsets(model, kernel, bias):
    """Where the kernel and bias sit in the flat vector of trainable weights, and shapes."""
    lo, out = 0, {}
    for name, p in model.named_parameters().items():
        if name in (kernel, bias):
            out[name] = (lo, p.shape)
        lo += p.size
    return out[kernel], out[bias]


def _split_update(flat, offsets):
    (k_lo, k_shape), (b_lo, b_shape) = offsets
    kernel = flat[k_lo : k_lo + int(np.prod(k_shape))].reshape(k_shape).astype(np.float64)
    bias = flat[b_lo : b_lo + int(np.prod(b_shape))].reshape(b_shape).astype(np.float64)
    return kernel, bias


# ----- membership inference --------------------------------------------------------------------
def example_losses(model, x, y, batch_size: int = 256) -> np.ndarray:
    """The compiled loss of every row on its own (inference mode)."""
    loss = model.loss
    per_row = (
        type(loss).from_config({**loss.get_config(), "reduction": "none"})
        if isinstance(loss, Loss)
        else None
    )
    if per_row is None:
        raise ValueError("membership inference needs a compiled splitgrad Loss")
    was = model.training
    model.eval()
    out = []
    try:
        with no_grad():
            for i in range(0, len(x), batch_size):
                values = per_row(y[i : i + batch_size], model(x[i : i + batch_size])).data
                out.append(values.reshape(len(values), -1).mean(axis=1))
    finally:
        model.train(was)
    return np.concatenate(out)


def membership(model, members, non_members) -> dict:
    """The loss-threshold attack: a row is guessed a member when its loss is low. Returns the
    AUC (0.5 = chance), the best advantage max(TPR − FPR) and the ROC points."""
    inside = example_losses(model, *members)
    outside = example_losses(model, *non_members)
    scores = np.concatenate([-inside, -outside])
    truth = np.concatenate([np.ones(len(inside)), np.zeros(len(outside))])
    order = np.argsort(-scores, kind="stable")
    tpr = np.concatenate([[0.0], np.cumsum(truth[order]) / len(inside)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - truth[order]) / len(outside)])
    return {
        "auc": float(np.trapezoid(tpr, fpr)),
        "advantage": float(np.max(tpr - fpr)),
        "roc": (fpr, tpr),
        "losses": (inside, outside),
    }


# ----- pictures and the command ----------------------------------------------------------------
def plot_inversion(result, shape, path):
    from .plots import _pyplot

    plt = _pyplot()
    rows = [
        ("client's row", result["originals"]),
        ("from its update", result["plain"]),
        ("from the secure sum", [result["secure"]] * len(result["originals"])),
        ("from the DP sum", [result["dp"]] * len(result["originals"])),
    ]
    k = len(result["originals"])
    fig, axes = plt.subplots(4, k, figsize=(1.3 * k, 5.6), squeeze=False)
    for r, (title, images) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(np.asarray(images[c]).reshape(shape), cmap="gray_r")
            ax.set_xticks([])
            ax.set_yticks([])
        mse = result["mse"][("plain", "plain", "secure", "dp")[r]] if r else None
        axes[r][0].set_ylabel(title + (f"\nMSE {mse:.2g}" if mse is not None else ""), fontsize=8)
    fig.suptitle("gradient inversion: what a server reads off the updates")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_membership(result, path):
    from .plots import _pyplot

    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    inside, outside = result["losses"]
    bins = np.linspace(0, max(inside.max(), outside.max()) + 1e-9, 40)
    a.hist(inside, bins, alpha=0.6, label="training rows (members)")
    a.hist(outside, bins, alpha=0.6, label="test rows (non-members)")
    a.set_xlabel("loss")
    a.legend()
    fpr, tpr = result["roc"]
    b.plot(fpr, tpr, label=f"AUC {result['auc']:.3f}")
    b.plot([0, 1], [0, 1], "--", color="gray", label="chance")
    b.set_xlabel("false positive rate")
    b.set_ylabel("true positive rate")
    b.legend()
    fig.suptitle("membership inference by loss threshold")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _load(run):
    from . import recipes
    from .checkpoint import load_model, saved_extra

    extra = saved_extra(run)
    name = extra.get("recipe")
    if name is None:
        raise ValueError(
            f"{run}: not a run saved by `splitgrad train`; the attack needs to know "
            "its recipe and data"
        )
    recipe = recipes.get(name)
    model = load_model(run)
    data, _ = recipes.load_recipe_data(
        name, recipe, extra.get("quick", False), extra.get("seed", 0), extra.get("data_options")
    )
    return model, data


def _cmd_inversion(args):
    model, data = _load(args.run)
    k = args.clients
    result = inversion_demo(model, data.x_test[:k], data.y_test[:k], noise=args.noise)
    out = Path(args.out or Path(args.run) / "attack")
    out.mkdir(parents=True, exist_ok=True)
    side = round(float(np.sqrt(result["originals"].shape[1])))
    shape = (side, side) if side * side == result["originals"].shape[1] else (1, -1)
    path = plot_inversion(result, shape, out / "gradient_inversion.png")
    m = result["mse"]
    print(
        f"rows rebuilt from single-row updates: MSE {m['plain']:.2e} (plain FedAvg); from "
        f"the secure sum {m['secure']:.3g}; from the DP sum {m['dp']:.3g}"
    )
    print(f"wrote {path}")


def _cmd_membership(args):
    model, data = _load(args.run)
    n = min(len(data.x_train), len(data.x_test), args.rows)
    result = membership(
        model, (data.x_train[:n], data.y_train[:n]), (data.x_test[:n], data.y_test[:n])
    )
    out = Path(args.out or Path(args.run) / "attack")
    out.mkdir(parents=True, exist_ok=True)
    path = plot_membership(result, out / "membership.png")
    print(
        f"membership inference: AUC {result['auc']:.3f} (0.5 = chance), advantage "
        f"{result['advantage']:.3f}, over {n} training and {n} test rows"
    )
    print(f"wrote {path}")


def add_cli(sub):
    """`splitgrad attack gradient-inversion RUN` and `splitgrad attack membership RUN`."""
    from .validate import cli_type, positive_int, positive_number

    p = sub.add_parser("attack", help="attacks that show why the privacy defences matter")
    kinds = p.add_subparsers(dest="attack", required=True)
    g = kinds.add_parser("gradient-inversion", help="rebuild clients' rows from their updates")
    g.add_argument("run", help="a run folder of `splitgrad train` (an MLP recipe)")
    g.add_argument("--clients", type=cli_type(positive_int, "--clients"), default=8)
    g.add_argument(
        "--noise",
        type=cli_type(positive_number, "--noise"),
        default=1.0,
        help="DP-FedAvg noise multiplier for the third view",
    )
    g.add_argument("--out", help="folder for the PNG (RUN/attack)")
    g.set_defaults(func=_cmd_inversion)
    m = kinds.add_parser("membership", help="tell training rows from unseen ones by loss")
    m.add_argument("run")
    m.add_argument("--rows", type=cli_type(positive_int, "--rows"), default=300)
    m.add_argument("--out", help="folder for the PNG (RUN/attack)")
    m.set_defaults(func=_cmd_membership)
