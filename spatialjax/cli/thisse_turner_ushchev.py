"""``spatialjax solve ttu``: every equilibrium of Thisse–Turner–Ushchev (2023) with its stability.

Prints the table of equilibria, writes ``ttu_equilibria.csv`` / ``ttu_equilibria.json`` and the
figures ``ttu_figure1.png`` (f and g loci) and ``ttu_figure2.png`` (ln ρ against γ)."""

from __future__ import annotations

_DEFAULTS = dict(alpha=0.6, beta=0.3, eps=6.0, tau=1.2, gamma=0.11, delta=0.0, b=1.0, c=1.0, d=1.0)


def register(sub) -> None:
    p = sub.add_parser(
        "ttu", help="Thisse-Turner-Ushchev 'Foundations of Cities': all equilibria and their stability",
        description="Find every equilibrium (interior and corner) of the three-location city of Thisse, "
                    "Turner & Ushchev (2023), test each for stability (Definition 3), and draw the f/g loci "
                    "(Figure 1) and the equilibrium correspondence ln rho against gamma (Figure 2).")
    for k, v in _DEFAULTS.items():
        p.add_argument(f"--{k}", type=float, default=v, help=f"{k} (default {v:g})")
    p.add_argument("--gamma-max", type=float, default=None,
                   help="upper end of the gamma sweep for Figure 2 (default: 3 * alpha/eps)")
    p.add_argument("--n-gamma", type=int, default=241, help="number of gamma values in the sweep (default 241)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    from spatialjax.cli import add_output_argument
    add_output_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from spatialjax import atomic
    from spatialjax.cli import prepare_output
    from spatialjax.errors import ParameterError
    from spatialjax.models import thisse_turner_ushchev as ttu

    if args.n_gamma < 2:
        raise ParameterError("--n-gamma", f"must be >= 2; got {args.n_gamma}")
    if args.gamma_max is not None and not args.gamma_max > 0:
        raise ParameterError("--gamma-max", f"must be > 0; got {args.gamma_max}")
    params = ttu.Params(**{k: getattr(args, k) for k in _DEFAULTS})   # validated before any work or file
    out = prepare_output(args.output)
    eqs = ttu.equilibria(params, stability=float(params.alpha) > 0.5, throw=False)
    print(eqs.summary())
    if float(params.alpha) <= 0.5:
        print("note: alpha <= 1/2, stability not tested (conditional prices need alpha > 1/2)")
    atomic.write_frame(out / "ttu_equilibria.csv", _table(eqs))
    atomic.write_text(out / "ttu_equilibria.json", eqs.to_json())
    if not args.no_figures:
        from spatialjax.plots import thisse_turner_ushchev as plots

        gm = float(params.gamma_m)
        gmax = args.gamma_max if args.gamma_max is not None else 3 * gm
        g_fig1 = sorted({0.5 * gm, 0.95 * gm, 1.05 * gm, 2 * gm, float(params.gamma)})
        plots.figure1(params, g_fig1, path=out / "ttu_figure1.png")
        _, sw = plots.figure2(params, np.linspace(0.0, gmax, args.n_gamma), path=out / "ttu_figure2.png")
        if not args.quiet:
            print(f"figure 2: {int(np.sum(sw['valid']))} interior equilibria over {args.n_gamma} values of gamma")
    if not args.quiet:
        print(f"wrote {out}/ttu_equilibria.csv, ttu_equilibria.json" + ("" if args.no_figures else ", ttu_figure1.png, ttu_figure2.png"))
    if not eqs.converged:
        print(f"solve problems ({eqs.status}): {eqs.message}")
        return 1
    return 0


#: CSV columns: (column, key of Equilibrium.to_dict(), index into an array field or None).
#: Locations are -1, 0, 1 (array index 0, 1, 2); blank cells are non-finite values (JSON null:
#: at a corner omega = inf or 0 and ell = inf or 0, see log_omega).
_COLUMNS = [("kind", "kind", None), ("pattern", "pattern", None), ("rho", "rho", None), ("omega", "omega", None),
            ("log_rho", "log_rho", None), ("log_omega", "log_omega", None), ("ell_L0_over_L1", "ell", None),
            ("L_-1", "L", 0), ("L_0", "L", 1), ("L_1", "L", 2), ("M_0", "M", 1), ("M_1", "M", 2),
            ("W_0", "W", 1), ("W_1", "W", 2), ("R_0", "R", 1), ("R_1", "R", 2),
            ("stable", "stable", None), ("stable_pair", "stable_pair", None), ("stable_all", "stable_all", None),
            ("stability_margin", "stability_margin", None), ("full_residual", "full_residual", None),
            ("status", "status", None), ("converged", "converged", None)]


def _table(eqs):
    """The equilibria as a DataFrame built from each ``Equilibrium.to_dict()``."""
    import pandas as pd

    rows = []
    for e in eqs:
        d = e.to_dict()
        rows.append({col: (d[key] if i is None else d[key][i]) for col, key, i in _COLUMNS})
    return pd.DataFrame(rows, columns=[c for c, _, _ in _COLUMNS])
