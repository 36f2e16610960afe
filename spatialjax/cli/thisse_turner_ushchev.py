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
    import csv
    import io

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
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "rho", "omega", "ell", "L_-1", "L_0", "L_1", "M_0", "W_0", "W_1", "R_0", "R_1",
                "stable", "stable_pair", "stable_all", "stability_margin", "full_residual", "converged"])
    for e in eqs:
        w.writerow([e.kind, e.rho, e.omega, e.ell, *e.L, e.M[1], e.W[1], e.W[2], e.R[1], e.R[2],
                    e.stable, e.stable_pair, e.stable_all, e.stability_margin, e.full_residual, e.converged])
    atomic.write_text(out / "ttu_equilibria.csv", buf.getvalue())
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
    problems = eqs.info["problems"]
    if problems:
        print("solve problems: " + "; ".join(problems))
        return 1
    return 0
