"""``spatialjax solve jiao-tian``: the eight-city (Figure 3) or two-city (Figure 2) economy along
a sweep of ICT openness Delta: every equilibrium branch, fold and equilibrium found, each grid
point with its status. The algorithm is :func:`spatialjax.models.jiao_tian_branches.equilibria_along`;
this module only parses, validates, prints and writes."""

from __future__ import annotations

from spatialjax.cli import EXIT_FAILED, EXIT_OK, add_command, check_float_option, check_int_option

DESCRIPTION = (
    "Solve the Jiao-Tian economy along a sweep of ICT openness Delta = tau^(-theta) on the embedded example "
    "data: the branch that starts at fragmentation autarky is followed by pseudo-arclength continuation "
    "through its folds (and a second branch from every other equilibrium Newton reaches at Delta = 1 from "
    "it); at every grid point the branch crossings and --starts random starts are solved, and the "
    "equilibria found are counted up to relabelling identical cities. Each grid point gets a status: "
    "successful (an interior equilibrium found), degenerate (only equilibria in which some city holds "
    "less than --degenerate-share of the managers; the table says which) or no_solution (none found: a "
    "failure, exit 1). Prints one table per experiment, then writes jiao_tian_branches.csv, "
    "jiao_tian_equilibria.csv, jiao_tian_summary.json (status, counts, folds, every equilibrium, column "
    "meanings) and the Figure 2/3 analog plot jiao_tian_openness.png to --output.")
EPILOG = ("Exit codes: 0 every grid point has an equilibrium (interior or degenerate); 1 a grid point without "
          "any, or a branch point that does not solve the equations (said on stderr; the outputs carry the "
          "status); 2 bad option or output folder (nothing written).")


def register(sub):
    p = add_command(sub, "jiao-tian",
                    help="Jiao & Tian (2024): geographic fragmentation (Figure 2/3 economies along ICT openness)",
                    description=DESCRIPTION, epilog=EPILOG, run=run, validate=validate)
    p.add_argument("--example", choices=("eight-city", "two-city"), default="eight-city",
                   help="embedded example economy (default: eight-city, the paper's Figure 3)")
    p.add_argument("--city", action="append", default=None, metavar="K",
                   help="experiment: upgrade the pairs of city K (1-based), or 'all' for every pair; repeat for "
                        "several (default: the example's experiments, Cities 8 and 4 / all pairs)")
    p.add_argument("--grid-points", type=int, default=11, metavar="K",
                   help="number of Delta grid points in [0, 1] for the equilibrium table (default 11)")
    p.add_argument("--arclength-steps", type=int, default=250, metavar="S",
                   help="maximum pseudo-arclength steps per branch (default 250)")
    p.add_argument("--starts", type=int, default=64, metavar="M",
                   help="random starts per grid point besides the branch crossings (default 64; 0: branches only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts (default 0)")
    p.add_argument("--degenerate-share", type=float, default=1e-3, metavar="S",
                   help="an equilibrium where some city holds less than this share of the managers is "
                        "degenerate (default 0.001)")


def _experiments(args, N: int, meta: dict) -> list[int | None]:
    """0-based upgraded cities (None = all pairs), from --city or the example's defaults."""
    from spatialjax.errors import ParameterError

    if not args.city:
        return [int(c) - 1 for c in meta.get("experiments", [])] or [None]
    out = []
    for c in args.city:
        if str(c).strip().lower() == "all":
            out.append(None)
            continue
        try:
            k = int(c)
        except ValueError:
            raise ParameterError("--city", f"must be a city number in 1..{N} or 'all'; got {c!r}") from None
        check_int_option("--city", k, minimum=1, maximum=N)
        out.append(k - 1)
    return list(dict.fromkeys(out))


def validate(args) -> None:
    from spatialjax.models import jiao_tian as jt

    check_int_option("--grid-points", args.grid_points, minimum=2)
    check_int_option("--arclength-steps", args.arclength_steps, minimum=10)
    check_int_option("--starts", args.starts, minimum=0)
    check_int_option("--seed", args.seed, minimum=0)
    check_float_option("--degenerate-share", args.degenerate_share, low=0.0, high=1.0, low_open=True, high_open=True)
    base, meta = jt.load_example(args.example)
    args._experiments = _experiments(args, base.N, meta)


def grid_values(k: int):
    """``k`` Delta values in [0, 1], the first at 1e-6 (Delta = 0 is autarky, tau = inf); rounded
    to 12 digits (no float noise such as 0.30000000000000004 in the tables)."""
    import numpy as np

    g = np.round(np.linspace(0.0, 1.0, k), 12)
    g[0] = 1e-6
    return g


def run(args, out) -> int:
    import sys

    import pandas as pd
    from tqdm import tqdm

    from spatialjax import atomic
    from spatialjax.models import jiao_tian as jt
    from spatialjax.models.jiao_tian_branches import BRANCH_COLUMNS, EQUILIBRIUM_COLUMNS, equilibria_along
    from spatialjax.plots.jiao_tian import plot_openness_sweep

    base, meta = jt.load_example(args.example)
    experiments = getattr(args, "_experiments", None) or _experiments(args, base.N, meta)
    grid = grid_values(args.grid_points)
    results = []
    for up in experiments:
        label = "all pairs" if up is None else f"City {up + 1} upgraded"
        bar = (lambda it, label=label: tqdm(it, desc=f"{label}: grid points", disable=args.quiet, leave=False))
        results.append(equilibria_along(base, grid, upgraded=up, label=label, arclength_steps=args.arclength_steps,
                                        n_starts=args.starts, seed=args.seed, degenerate_share=args.degenerate_share,
                                        progress=bar))
    print(f"Jiao-Tian {args.example} economy ({meta['source']})")
    for r in results:
        print(r.summary())
    branches = pd.concat([r.branch_table() for r in results], ignore_index=True)
    eqs = pd.concat([r.table() for r in results], ignore_index=True)
    summary = {"example": args.example, "source": meta["source"],
               "status": "successful" if all(r.converged for r in results) else "incomplete",
               "experiments": [r.to_dict() for r in results],
               "columns": {"jiao_tian_branches.csv": BRANCH_COLUMNS, "jiao_tian_equilibria.csv": EQUILIBRIUM_COLUMNS}}
    files = [atomic.write_frame(out / "jiao_tian_branches.csv", branches),
             atomic.write_frame(out / "jiao_tian_equilibria.csv", eqs),
             atomic.write_json(out / "jiao_tian_summary.json", summary)]
    files += plot_openness_sweep(branches, eqs, out, title=f"Jiao-Tian {args.example} economy")
    print("wrote " + ", ".join(str(f) for f in files))
    failed = [r for r in results if not r.converged]
    for r in failed:
        print(f"spatialjax: solve failed: {r.label}: {r.message}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
