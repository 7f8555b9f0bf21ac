"""Pictures of generative models as PNG bytes (matplotlib, no screen): what a recipe attaches to
its run folder, and what a notebook can show.

    png = reconstructions(x[:10], ae.predict(x[:10]))      # originals above their reconstructions
    png = image_grid(vae.sample(64), "samples from the prior")
    png = latent_traversal(vae.decode, center=np.zeros(2), scale=np.ones(2))
    png = latent_scatter(vae.encode(x_test), y_test, class_names)   # codes coloured by class

Images are (n, height, width, channels) with values in [0, 1] (one channel: grey, three: RGB)
or (n, features), drawn as the squarest image they fill. Each function returns the PNG's bytes
and also writes them to `path` when given. Every grid is one mosaic drawn with one `imshow`,
so a picture of hundreds of samples takes a fraction of a second.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np

from ..plots import _pyplot


def _as_images(images) -> np.ndarray:
    """(n, h, w, c) float array in [0, 1] from NHWC images or flat vectors."""
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 2:  # flat samples (e.g. 64 digit pixels): the squarest h × w they fill
        side = math.isqrt(arr.shape[1])
        if side * side != arr.shape[1]:
            raise ValueError(
                f"pictures: cannot draw flat samples of {arr.shape[1]} values as square images; "
                "reshape them to (n, height, width, channels)"
            )
        arr = arr.reshape(len(arr), side, side, 1)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(
            f"pictures: expected images (n, height, width, 1 or 3), got shape {arr.shape}"
        )
    return np.clip(arr, 0.0, 1.0)


def mosaic(images, cols, pad=1) -> np.ndarray:
    """One (H, W, c) array holding the images in rows of `cols`, `pad` white pixels apart."""
    arr = _as_images(images)
    n, h, w, c = arr.shape
    rows = max(1, -(-n // cols))
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c))
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[top : top + h, left : left + w] = arr[i]
    return out


def _png(fig, path) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def _show(picture, title, path, ylabel=None, xlabel=None) -> bytes:
    """A figure of one mosaic, its longer side 4–10 inches (about 2.5 screen pixels per
    image pixel)."""
    plt = _pyplot()
    height, width = picture.shape[:2]
    longest = min(10.0, max(4.0, max(height, width) * 2.5 / 100))
    size = (longest * width / max(height, width), longest * height / max(height, width) + 0.6)
    fig, ax = plt.subplots(figsize=size)
    grey = picture.shape[-1] == 1
    ax.imshow(
        picture[..., 0] if grey else picture,
        cmap="gray" if grey else None,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _png(fig, path)


def image_grid(images, title="samples", cols=8, path=None) -> bytes:
    """The images in rows of `cols` (e.g. samples from the prior)."""
    return _show(mosaic(images, cols), title, path)


def reconstructions(
    originals,
    reconstructed,
    title="originals (odd rows) and their reconstructions (even rows)",
    cols=10,
    path=None,
) -> bytes:
    """Each row of originals with the row of their reconstructions under it."""
    a, b = _as_images(originals), _as_images(reconstructed)
    if a.shape != b.shape:
        raise ValueError(
            f"reconstructions: {a.shape[0]} originals of shape {a.shape[1:]} but "
            f"{b.shape[0]} reconstructions of shape {b.shape[1:]}; give one per original"
        )
    rows = []
    for i in range(0, len(a), cols):
        rows += [a[i : i + cols], b[i : i + cols]]
    stacked = np.concatenate(
        [np.concatenate([r, np.ones((cols - len(r),) + a.shape[1:])]) for r in rows]
    )
    return _show(mosaic(stacked, cols), title, path)


def principal_directions(codes, k=2):
    """(the top `k` principal directions of the codes as rows, the standard deviation of the
    codes along each): the axes of the widest spread."""
    codes = np.asarray(codes, dtype=np.float64)
    centred = codes - codes.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:k], singular[:k] / np.sqrt(max(len(codes) - 1, 1))


def traversal_codes(center, scale, dims=(0, 1), steps=15, directions=None) -> np.ndarray:
    """(steps², latent) codes: `center` moved over a grid of standard normal quantiles (5 % …
    95 %) times `scale` along two axes, latent units dims[0] (across) and dims[1] (up), or the
    two rows of `directions` (e.g. principal directions), with scale then one per row."""
    center = np.asarray(center, dtype=np.float64).reshape(-1)
    if directions is None:
        i, j = dims
        if not (0 <= i < center.size and 0 <= j < center.size and i != j):
            raise ValueError(
                f"latent_traversal: dims must be two different latent units below "
                f"{center.size}, got {dims}"
            )
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), center.shape)[[i, j]]
        directions = np.eye(center.size)[[i, j]]
    directions = np.asarray(directions, dtype=np.float64)
    if directions.shape != (2, center.size):
        raise ValueError(
            f"latent_traversal: directions must be 2 rows of {center.size} values, got "
            f"shape {directions.shape}"
        )
    across, up = np.broadcast_to(np.asarray(scale, dtype=np.float64), (2,))
    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, steps)])
    rows, cols = np.meshgrid(q[::-1], q, indexing="ij")  # up is larger, as on a plot
    moves = cols.reshape(-1, 1) * across * directions[0] + rows.reshape(-1, 1) * up * directions[1]
    return center + moves


def latent_traversal(
    decode,
    center,
    scale=1.0,
    dims=(0, 1),
    steps=15,
    directions=None,
    names=None,
    title=None,
    path=None,
) -> bytes:
    """decode(codes) on a steps × steps grid over two latent axes (see `traversal_codes`): for a
    VAE the prior's quantiles (center 0, scale 1), for an autoencoder the codes' mean and their
    spread along their principal directions. `names` label the two axes."""
    codes = traversal_codes(center, scale, dims, steps, directions).astype(np.float32)
    images = decode(codes)
    across, up = names or (f"z[{dims[0]}]", f"z[{dims[1]}]")
    return _show(
        mosaic(images, steps),
        title or f"latent traversal: {across} across, {up} up",
        path,
        xlabel=f"{across}: 5 % … 95 % quantile",
        ylabel=up,
    )


def latent_scatter(codes, labels, class_names=None, title=None, path=None) -> bytes:
    """The codes as points coloured by class: the two units of a 2-D latent space as they are,
    a larger one projected on its first two principal components (the axis labels say which)."""
    plt = _pyplot()
    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if codes.ndim != 2 or codes.shape[1] < 2 or len(codes) != len(labels):
        raise ValueError(
            f"latent_scatter: expected codes (n, ≥2) and n labels, got {codes.shape} and "
            f"{labels.shape}"
        )
    if codes.shape[1] == 2:
        points, axes = codes, ("z[0]", "z[1]")
    else:
        directions, _ = principal_directions(codes)
        points = (codes - codes.mean(axis=0)) @ directions.T
        axes = ("principal component 1", "principal component 2")
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, cls in enumerate(classes):
        mask = labels == cls
        name = class_names[int(cls)] if class_names is not None else str(cls)
        ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.6, color=cmap(k), label=name)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_title(title or f"latent space of {len(codes)} test samples, coloured by class")
    fig.tight_layout()
    return _png(fig, path)
