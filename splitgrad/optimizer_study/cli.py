"""The command-line side: `splitgrad compare-optimizers RECIPE` and `splitgrad lr-sweep RECIPE`."""

from __future__ import annotations

from ..validate import cli_type, positive_int, positive_number
from .compare import OPTIMIZERS, compare_optimizers
from .sweep import lr_range_test


def _cmd_compare(args):
    result = compare_optimizers(
        args.recipe,
        quick=args.quick,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        only=args.optimizers.split(",") if args.optimizers else None,
        out=args.out,
        verbose=0 if args.quiet else 1,
    )
    print(result["table"])
    for path in result["files"]:
        print(f"wrote {path}")


def _cmd_sweep(args):
    result = lr_range_test(
        args.recipe,
        quick=args.quick,
        seed=args.seed,
        start_lr=args.start,
        end_lr=args.end,
        steps=args.steps,
        optimizer=args.optimizer,
        out=args.out,
        verbose=0 if args.quiet else 1,
    )
    where = (
        f"diverged at {result['diverged_at']:.3g}"
        if result["diverged_at"] is not None
        else f"did not diverge up to {result['tested'][1]:.3g}"
    )
    print(
        f"{result['optimizer']}: lowest loss at lr {result['minimum_at']:.3g}, {where}; "
        f"suggested learning rate {result['suggestion']:.3g}"
    )
    for path in result["files"]:
        print(f"wrote {path}")


def add_cli(subparsers):
    """Add `splitgrad compare-optimizers RECIPE` and `splitgrad lr-sweep RECIPE`."""
    count = cli_type(positive_int, "the value")
    rate = cli_type(positive_number, "the rate")
    p = subparsers.add_parser("compare-optimizers", help="train a recipe under six optimizers")
    p.add_argument("recipe")
    p.add_argument("--quick", action="store_true", help="the recipe's small, fast settings")
    p.add_argument("--epochs", type=count)
    p.add_argument("--batch-size", type=count)
    p.add_argument(
        "--optimizers",
        help="a comma-separated subset of: " + ", ".join(key for key, *_ in OPTIMIZERS),
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for the PNG and the table (runs/RECIPE-optimizers)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)
    p = subparsers.add_parser("lr-sweep", help="the LR range test: suggest a learning rate")
    p.add_argument("recipe")
    p.add_argument("--quick", action="store_true", help="the recipe's small, fast data")
    p.add_argument(
        "--start", type=rate, default=1e-7, metavar="LR", help="first learning rate (1e-7)"
    )
    p.add_argument("--end", type=rate, default=10.0, metavar="LR", help="last learning rate (10)")
    p.add_argument("--steps", type=count, default=100, metavar="N", help="steps of the sweep (100)")
    p.add_argument("--optimizer", help="sweep this optimizer instead of the recipe's own")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for the PNG and JSON (runs/RECIPE-lr-sweep)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_sweep)
