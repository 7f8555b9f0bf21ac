"""`splitgrad landscape RUN_DIR`: the loss around a trained recipe run, as PNGs and .npz.

    splitgrad landscape runs/digits-cnn                     # 1D curve
    splitgrad landscape runs/digits-cnn --2d --resolution 51 --places 2 --ray
    splitgrad landscape runs/digits-cnn --between runs/digits-cnn-seed1
    splitgrad landscape runs/digits-cnn --trajectory        # PCA plane + training path

The run's model is reloaded (`checkpoint.load_model`), its recipe's data rebuilt from the saved
recipe name, seed, quick flag and data options, and the loss measured over the training set
(or `--samples` rows of it). Files go to RUN_DIR-landscape/ unless `--out` says otherwise, not
into the run folder, which is a checkpoint a later save would refuse to replace.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..validate import cli_type, positive_int
from . import plots, views
from .directions import flat_of
from .trajectory import TRAJECTORY_FILE, load_trajectory, replay


def load_run(run):
    """(the saved model, the run's `extra`, its recipe data), for a `splitgrad train` run."""
    from .. import recipes
    from ..checkpoint import CheckpointError, load_model

    model = load_model(run)
    extra = getattr(model, "saved_extra", {}) or {}
    if "recipe" not in extra:
        raise CheckpointError(
            f"{run}: this model was not saved by `splitgrad train`, so its training data is "
            "unknown; call splitgrad.landscape.curve_1d(model, x, y) from Python instead"
        )
    recipe = recipes.get(extra["recipe"])
    data, _ = recipes.load_recipe_data(
        extra["recipe"],
        recipe,
        extra.get("quick", False),
        extra.get("seed", 0),
        extra.get("data_options"),
    )
    return model, extra, data


def training_rows(data, recipe_name, samples=None, seed=0):
    """The training set (x, y), or `samples` rows of it drawn without replacement."""
    x, y = getattr(data, "x_train", None), getattr(data, "y_train", None)
    if x is None or y is None:
        raise ValueError(
            f"recipe {recipe_name!r} has no training arrays (x_train, y_train) to measure the "
            "loss on; the landscape works for recipes that train on arrays"
        )
    if samples is not None and samples < len(x):
        keep = np.sort(np.random.default_rng(seed).choice(len(x), samples, replace=False))
        x, y = x[keep], y[keep]
    return np.asarray(x), np.asarray(y)


def _save_npz(file, **arrays):
    file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(file, **{k: np.asarray(v) for k, v in arrays.items()})  # no objects: no pickle
    return file


def run_landscape(
    run,
    two_d=False,
    resolution=51,
    between=None,
    trajectory=False,
    places=None,
    out=None,
    samples=None,
    batch_size=512,
    seed=0,
    verbose=1,
) -> dict:
    """Measure and draw the landscape of a run folder; returns {what: [written files]} and the
    loss at the centre ("center_loss")."""
    from ..checkpoint import load_model

    model, extra, data = load_run(run)
    other = None if between is None else load_model(between)
    if other is not None:  # a wrong second run fails before the long measurements
        views.check_same_parameters(model, other)
    name = extra["recipe"]
    x, y = training_rows(data, name, samples, seed)
    out = Path(out) if out else Path(str(Path(run)) + "-landscape")
    grid = {"places": places, "batch_size": batch_size, "verbose": verbose}
    written = {"center_loss": model.evaluate(x, y, batch_size=batch_size)[0]}
    rows = f"{len(x)} training rows" if samples is None else f"{len(x)} sampled training rows"

    curve = views.curve_1d(model, x, y, resolution, seed, **grid)
    written["1d"] = [
        _save_npz(out / "landscape_1d.npz", **curve),
        plots.plot_curve(
            curve["alpha"],
            curve["values"],
            curve["names"],
            out / "landscape_1d.png",
            f"{name}: loss along a filter-normalised direction ({rows})",
            "α  (θ* + α·d)",
            {0.0: "trained"},
        ),
    ]
    if two_d:
        surface = views.surface_2d(model, x, y, resolution, seed, **grid)
        loss = surface["values"][..., 0]
        title = f"{name}: loss around the trained model ({resolution}×{resolution})"
        written["2d"] = [
            _save_npz(out / "landscape_2d.npz", **surface),
            plots.plot_contour(
                surface["alpha"],
                surface["beta"],
                loss,
                out / "landscape_2d_contour.png",
                title,
                "α  (direction d)",
                "β  (direction e)",
            ),
            plots.plot_surface(
                surface["alpha"], surface["beta"], loss, out / "landscape_2d_surface.png", title
            ),
        ]
    if other is not None:
        line = views.interpolation(model, other, x, y, resolution, **grid)
        written["between"] = [
            _save_npz(out / "interpolation.npz", **line),
            plots.plot_curve(
                line["t"],
                line["values"],
                line["names"],
                out / "interpolation.png",
                f"{name}: the straight line from {Path(run).name} to {Path(between).name}",
                "t  ((1 − t)·θ_A + t·θ_B)",
                {0.0: Path(run).name, 1.0: Path(between).name},
            ),
        ]
    if trajectory:
        path = _trajectory(run, out, model, extra, verbose)
        plane = views.trajectory_plane(model, x, y, path, resolution, **grid)
        pct = [f"{100 * r:.1f} %" for r in plane["explained"]]
        written["trajectory"] = [
            _save_npz(out / "trajectory_pca.npz", **plane),
            plots.plot_contour(
                plane["alpha"],
                plane["beta"],
                plane["values"][..., 0],
                out / "trajectory_pca.png",
                f"{name}: the training path on its top two PCA directions",
                f"1st PCA direction ({pct[0]} of the variance)",
                f"2nd PCA direction ({pct[1]})",
                path_xy=plane["path"],
            ),
        ]
    return written


def _trajectory(run, out, model, extra, verbose):
    """The run's recorded path (RUN/trajectory.npz, or one replayed before into OUT), else
    the run trained again with a recorder; the replay is kept in OUT for next time."""
    for folder in (Path(run), out):
        if (folder / TRAJECTORY_FILE).is_file():
            return load_trajectory(folder / TRAJECTORY_FILE)
    if verbose:
        print(
            f"{run} holds no {TRAJECTORY_FILE}: training recipe {extra['recipe']!r} again "
            "from its saved settings and seed to record the path"
        )
    _, path = replay(extra, verbose=verbose)
    saved = flat_of(model)
    drift = np.linalg.norm(path[-1].astype(np.float64) - saved)
    if verbose and drift > 1e-6 * np.linalg.norm(saved):
        print(
            f"note: the replayed run ends {drift:.3g} away from the saved model (another "
            "BLAS kernel or library version?); its path is drawn relative to the saved model"
        )
    _save_npz(out / TRAJECTORY_FILE, weights=path)
    return path


def _cmd_landscape(args):
    places = None
    if args.ray or args.ray_address:
        from ..split.places import RayPlaces

        places = RayPlaces(args.places, address=args.ray_address)
    try:
        written = run_landscape(
            args.run,
            two_d=args.two_d,
            resolution=args.resolution,
            between=args.between,
            trajectory=args.trajectory,
            places=places,
            out=args.out,
            samples=args.samples,
            batch_size=args.batch_size,
            seed=args.seed,
            verbose=0 if args.quiet else 1,
        )
    finally:
        if places is not None:
            places.close()
    print(f"loss at the trained model: {written.pop('center_loss'):.4f}")
    for files in written.values():
        for path in files:
            print(f"wrote {path}")


def add_cli(subparsers):
    """Add `splitgrad landscape RUN_DIR [--2d] [--resolution N] [--between OTHER_RUN]
    [--trajectory] [--places N --ray] [--out DIR]`."""
    count = cli_type(positive_int, "the value")
    p = subparsers.add_parser(
        "landscape", help="plot the loss around a trained run (Li et al. 2018)"
    )
    p.add_argument("run", help="a run folder made by `splitgrad train`")
    p.add_argument("--2d", dest="two_d", action="store_true", help="also the 2D contour/surface")
    p.add_argument(
        "--resolution",
        type=cli_type(_at_least_two, "--resolution"),
        default=51,
        metavar="N",
        help="points along each axis (51; odd puts the trained model on the grid)",
    )
    p.add_argument("--between", metavar="OTHER_RUN", help="the loss on the line to this run")
    p.add_argument(
        "--trajectory",
        action="store_true",
        help="the training path on its top two PCA directions, over their contour plot",
    )
    p.add_argument(
        "--samples", type=count, metavar="N", help="measure on this many training rows (all)"
    )
    p.add_argument(
        "--batch-size", type=count, default=512, metavar="N", help="rows per forward pass"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    p.add_argument("--places", type=count, default=2, metavar="N", help="places for --ray (2)")
    p.add_argument("--ray", action="store_true", help="spread the grid over Ray actors")
    p.add_argument("--ray-address", help="join this Ray cluster instead of a local one")
    p.add_argument("--out", metavar="DIR", help="folder for the PNGs and .npz (RUN_DIR-landscape)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_landscape)


def _at_least_two(value, what):
    value = positive_int(value, what)
    if value < 2:
        raise ValueError(f"{what} must be at least 2 points, got {value}")
    return value
