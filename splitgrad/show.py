"""What a trained image model learned, as PNGs: first-layer filters, feature maps, confusion.

    show_run("runs/digits-cnn")   # → filters.png, feature_maps.png, confusion.png

For a CNN: the first Conv2D layer's kernels, the input image and every Conv2D layer's
activations for one test image. For a model without convolutions: the first Dense layer's
weights, each unit drawn as an image of the input's shape. For a classifier: the confusion
matrix on the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, load_model
from .layers.conv import Conv2D
from .layers.core import Dense, Flatten
from .plots import _pyplot
from .tensor import no_grad


def _grid(n, max_cols=8):
    cols = min(n, max_cols)
    return -(-n // cols), cols


def _tiles(path, images, title, labels=None, cmap="gray", symmetric=False):
    """Save `images` (n, h, w) as a grid of small panels."""
    plt = _pyplot()
    rows, cols = _grid(len(images))
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.4 * cols + 0.4, 1.4 * rows + 0.6), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        img = images[i]
        if symmetric:  # weights: zero stays mid-grey so sign is visible
            lim = float(np.abs(img).max()) or 1.0
            ax.imshow(img, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
        else:
            ax.imshow(img, cmap=cmap, interpolation="nearest")
        if labels is not None:
            ax.set_title(labels[i], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_filters(kernel, path, title="first Conv2D layer filters (red > 0, blue < 0)"):
    """One panel per filter of a (kh, kw, in, out) kernel; channels are averaged when in > 1."""
    k = np.asarray(kernel, dtype=np.float64).mean(axis=2)  # (kh, kw, out)
    return _tiles(
        path,
        np.moveaxis(k, -1, 0),
        title,
        labels=[f"{i}" for i in range(k.shape[-1])],
        cmap="RdBu_r",
        symmetric=True,
    )


def feature_maps(model, image):
    """[(layer name, activations (h, w, channels))] of every Conv2D layer for one NHWC image."""
    maps = []
    x = image[None]
    with no_grad():
        for layer in model.layers:
            x = layer(x)
            if isinstance(layer, Conv2D):
                maps.append((layer.name, x.data[0]))
    return maps


def plot_feature_maps(model, image, path, label=None):
    """The input image, then each Conv2D layer's channels (at most 16 each), one row apiece."""
    plt = _pyplot()
    maps = feature_maps(model, image)
    cols = max(min(16, m.shape[-1]) for _, m in maps) + 1
    fig, axes = plt.subplots(
        len(maps), cols, figsize=(1.1 * cols, 1.3 * len(maps) + 0.5), squeeze=False
    )
    for row, (name, m) in enumerate(maps):
        for ax in axes[row]:
            ax.axis("off")
        axes[row, 0].imshow(image.mean(axis=-1), cmap="gray", interpolation="nearest")
        axes[row, 0].set_title("input" if label is None else f"input ({label})", fontsize=7)
        for c in range(min(16, m.shape[-1])):
            axes[row, c + 1].imshow(m[..., c], cmap="viridis", interpolation="nearest")
            axes[row, c + 1].set_title(f"{name}:{c}", fontsize=6)
    fig.suptitle("feature maps for one test image (after each Conv2D + activation)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_dense_weights(kernel, image_shape, path, max_units=32):
    """The first Dense layer's weights: unit j's column drawn as an image of image_shape."""
    h, w = image_shape
    k = np.asarray(kernel)
    units = min(max_units, k.shape[1])
    images = [k[:, j].reshape(h, w) for j in range(units)]
    return _tiles(
        path,
        images,
        f"first Dense layer: weights of units 0–{units - 1}",
        labels=[f"unit {j}" for j in range(units)],
        cmap="RdBu_r",
        symmetric=True,
    )


def confusion_matrix(y_true, y_pred, classes):
    """counts[i, j] = how many samples of true class i were predicted as class j."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return counts


def plot_confusion(counts, path, names=None):
    """A confusion matrix heat map with the count in each cell."""
    plt = _pyplot()
    n = counts.shape[0]
    names = names or [str(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.5, 0.55 * n + 2))
    ax.imshow(counts, cmap="Blues")
    for i in range(n):
        for j in range(n):
            color = "white" if counts[i, j] > counts.max() / 2 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"confusion matrix on the test set (accuracy {acc:.2%})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _first_dense_after_flatten(model, image_shape):
    """The first Dense kernel when it reads flattened single-channel images, else None."""
    for layer in model.layers:
        if isinstance(layer, Dense):
            h, w, c = image_shape
            return layer.kernel.data if c == 1 and layer.kernel.shape[0] == h * w else None
        if not isinstance(layer, Flatten):
            return None
    return None


def show_run(run, out=None):
    """Write the PNGs for a run folder made by `splitgrad train`; returns their paths."""
    from . import recipes

    model = load_model(run)
    extra = getattr(model, "saved_extra", {}) or {}
    if "recipe" not in extra:
        raise CheckpointError(
            f"{run}: not made by `splitgrad train`, so its test data is "
            "unknown; run `splitgrad show` on a recipe's run folder"
        )
    name = extra["recipe"]
    recipe = recipes.get(name)
    data, _ = recipes.load_recipe_data(
        name, recipe, extra.get("quick", False), extra.get("seed", 0), extra.get("data_options")
    )
    x_test = np.asarray(data.x_test)
    image_input = x_test.ndim == 4
    convs = [la for la in getattr(model, "layers", []) if isinstance(la, Conv2D)]
    dense = _first_dense_after_flatten(model, x_test.shape[1:]) if image_input else None
    if not convs and dense is None:
        raise ValueError(
            f"{run}: recipe {name!r} has no Conv2D layer and no Dense layer on "
            "images, so there are no filters to draw"
        )
    out = Path(out or run)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    written = []
    names = (data.meta or {}).get("class_names")
    if convs:
        written.append(plot_filters(convs[0].kernel.data, out / "filters.png"))
        label = None if names is None else names[int(data.y_test[0])]
        written.append(plot_feature_maps(model, x_test[0], out / "feature_maps.png", label))
    else:
        written.append(plot_dense_weights(dense, x_test.shape[1:3], out / "dense_weights.png"))
    if getattr(recipe, "TASK", "") == "multiclass":
        logits = model.predict(x_test, batch_size=256)
        classes = logits.shape[-1]
        counts = confusion_matrix(data.y_test, logits.argmax(axis=-1), classes)
        written.append(plot_confusion(counts, out / "confusion.png", names))
    return [str(p) for p in written]


def _cmd_show(args):
    for path in show_run(args.run, args.out):
        print(f"wrote {path}")


def add_cli(sub):
    """Add `splitgrad show RUN_DIR [--out DIR]`."""
    p = sub.add_parser("show", help="PNGs of what a trained image model learned")
    p.add_argument("run", help="a run folder made by `splitgrad train`")
    p.add_argument("--out", help="folder for the PNGs (the run folder)")
    p.set_defaults(func=_cmd_show)
