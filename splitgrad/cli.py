"""The `splitgrad` command: list, train, evaluate (and the commands other modules add).

Every user mistake (unknown recipe, bad flag, missing file) ends in one clear line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import recipes
from .validate import cli_type, positive_int, positive_number


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def cmd_list(args):
    width = max(len(n) for n in recipes.RECIPES)
    for name in recipes.RECIPES:
        print(f"{name.ljust(width)}  {recipes.get(name).DESCRIPTION}")


def _print_metrics(metrics):
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print("test: " + "  ".join(f"{k} {v:.4f}" for k, v in numbers.items()))


def cmd_train(args):
    from .checkpoint import check_target

    recipes.get(args.recipe)  # an unknown recipe fails before anything else
    # A bad --out (a file, a folder of the user's own files, `.`) fails now, not after training.
    check_target(recipes.out_folder(args.recipe, args.out), overwrite=args.overwrite)
    way = None
    if getattr(args, "way", None):
        from .split.cli import way_from_args

        way = way_from_args(args.way, args.places, args)
    result = recipes.train(
        args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        out=args.out,
        quick=args.quick,
        way=way,
        verbose=0 if args.quiet else 1,
        data_options={"text": args.text, "env": args.env},
        overwrite=args.overwrite,
        tensorboard=args.tensorboard,
    )
    _print_metrics(result["metrics"])
    if result.get("traffic") is not None:  # a split run: what crossed between the places
        from .split.accounting import format_report

        print(format_report(result["traffic"]))
    print(f"saved model to {result['out']} (curves: {result['plot']})")


def cmd_evaluate(args):
    result = recipes.evaluate(args.path)
    print(f"recipe {result['recipe']}")
    _print_metrics(result["metrics"])


def build_parser():
    parser = _Parser(prog="splitgrad", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="show the built-in recipes")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a recipe, save the model and its curves")
    p.add_argument("recipe")
    p.add_argument("--epochs", type=cli_type(positive_int, "--epochs"))
    p.add_argument("--batch-size", type=cli_type(positive_int, "--batch-size"))
    p.add_argument("--learning-rate", type=cli_type(positive_number, "--learning-rate"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for the model, curves and metrics (runs/RECIPE)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="let --out replace a folder that holds other files than a model",
    )
    p.add_argument("--quick", action="store_true", help="a small, fast run (smoke test)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--text", help="a UTF-8 text file to train on (word-level recipes)")
    p.add_argument("--env", help="a gymnasium environment id (reinforcement-learning recipes)")
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write TensorBoard event files (scalars, histograms, graph) to DIR "
        "(needs splitgrad[tensorboard])",
    )
    p.add_argument("--way", help="split training across places (see `splitgrad ways`)")
    p.add_argument(
        "--places",
        type=cli_type(positive_int, "--places"),
        default=2,
        help="number of places (workers/clients) for --way",
    )
    from .split.cli import add_way_options

    add_way_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="reload a saved model and report its test metrics")
    p.add_argument("path")
    p.set_defaults(func=cmd_evaluate)

    for extend in _extensions():
        extend(sub)
    return parser


def _extensions():
    """Sub-command groups defined next to the features they drive."""
    from .attacks import add_cli as add_attack
    from .generate import add_cli as add_generate
    from .interop.export_cli import add_cli as add_export
    from .landscape import add_cli as add_landscape
    from .optimizer_study import add_cli as add_optimizer_study
    from .rl.play import add_cli as add_play
    from .show import add_cli as add_show

    out = [
        add_generate,
        add_show,
        add_play,
        add_attack,
        add_landscape,
        add_optimizer_study,
        add_export,
    ]
    try:
        from .split.cli import add_cli
    except ImportError:
        pass
    else:
        out.append(add_cli)
    return out


def main(argv=None):
    from .checkpoint import CheckpointError
    from .split.places import PlaceUnreachable

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: a status for callers of main()
        return exc.code
    try:
        args.func(args)
    except BrokenPipeError:  # e.g. `splitgrad ways | head`; before OSError, its base class
        return 0
    except (recipes.UnknownRecipe, CheckpointError, OSError, ValueError, PlaceUnreachable) as exc:
        print(f"splitgrad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("splitgrad: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
