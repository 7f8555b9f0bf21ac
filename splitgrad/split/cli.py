"""Command-line pieces for split training: `splitgrad ways`, `splitgrad compare RECIPE`,
and `way_from_args` for `splitgrad train RECIPE --way NAME --places N`."""

from __future__ import annotations

from .catalogue import print_ways
from .compare import compare
from .registry import make_way


def parse_options(items) -> dict:
    """`["H=4", "mu=0.1", "partition=dirichlet"]` → {"H": 4, "mu": 0.1, ...} (numbers parsed)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--way-option expects KEY=VALUE, got {item!r}")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        if value == "none":
            value = None
        out[key.replace("-", "_")] = value
    return out


def way_from_args(name, places, options=None):
    """The way for `--way NAME --places N`; `options` is a dict or argparse namespace that may
    hold `way_option` (list of KEY=VALUE) and `ray` / `ray_address` (run on Ray actors)."""
    if options is None or isinstance(options, dict):
        return make_way(name, places, options)
    ns = options
    options = parse_options(getattr(ns, "way_option", None))
    way = make_way(name, places, options)  # a bad name or option fails before Ray starts
    if getattr(ns, "ray", False) or getattr(ns, "ray_address", None):
        from .places import RayPlaces, actors_for

        actors = getattr(ns, "ray_actors", None) or actors_for(places)
        where = RayPlaces(actors, address=getattr(ns, "ray_address", None))
        return make_way(name, places, options, where=where)
    return way


def add_way_options(parser):
    """Add --way-option KEY=VALUE, --ray and --ray-address to a parser (e.g. `train`)."""
    parser.add_argument(
        "--way-option",
        action="append",
        metavar="KEY=VALUE",
        help="a way's option, e.g. H=4, staleness=2, mu=0.01, poisoned=2",
    )
    parser.add_argument("--ray", action="store_true", help="run the places as Ray actors")
    parser.add_argument("--ray-address", help="join this Ray cluster instead of a local one")
    parser.add_argument(
        "--ray-actors",
        type=int,
        metavar="N",
        help="Ray actors to host the places (default: one per core, at most one per place)",
    )


def cmd_ways(args):
    print_ways()


def parse_budget(text):
    """`steps=N` → N (for --budget)."""
    key, _, value = str(text).partition("=")
    if key != "steps" or not value.isdigit() or int(value) < 1:
        raise ValueError(f"--budget expects steps=N with N a positive integer, got {text!r}")
    return int(value)


def cmd_compare(args):
    compare(
        args.recipe,
        places=args.places,
        quick=args.quick,
        seed=args.seed,
        out=args.out,
        ray=args.ray,
        ways=args.ways.split(",") if args.ways else None,
        budget_steps=parse_budget(args.budget) if args.budget else None,
        target_accuracy=args.target_accuracy,
    )


def add_cli(subparsers):
    """Register the `ways` and `compare` subcommands."""
    p = subparsers.add_parser("ways", help="list every way to split training across places")
    p.set_defaults(func=cmd_ways)
    p = subparsers.add_parser("compare", help="train a recipe under every implemented way")
    p.add_argument("recipe")
    p.add_argument("--places", type=int, default=2, help="workers / clients per way")
    p.add_argument("--quick", action="store_true", help="a small, fast run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare", help="folder for compare.md and .png")
    p.add_argument("--ray", action="store_true", help="run the places as Ray actors")
    p.add_argument("--ways", help="comma-separated subset of ways")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget",
        metavar="steps=N",
        help="train every run for N optimizer steps (N rounds if federated)",
    )
    budget.add_argument(
        "--target-accuracy",
        type=float,
        metavar="A",
        help="train every run until its test accuracy reaches A",
    )
    p.set_defaults(func=cmd_compare)
