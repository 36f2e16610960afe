"""``spatialjax solve van-vuuren``: market equilibria and planner for van Vuuren (2016), Table 1 (and Table 2 with --table2)."""

from __future__ import annotations

_PARAMS = ("a", "s0", "psi", "alpha", "nu", "xi", "delta", "rho", "tau", "b", "p", "gamma", "chi")


def register(sub):
    from spatialjax.cli import add_output_argument

    p = sub.add_parser(
        "van-vuuren",
        help="van Vuuren (2016): on-the-job search and city structure (Table 1)",
        description="Solve the market equilibria (integrated / interior / segregated) and the planner for "
                    "the paper's baseline, print them, and write the Table 1 reproduction (CSV), the rent "
                    "schedule (Figure 2) and u, v, du against a (PNG) into the output directory.",
    )
    p.add_argument("--panel", choices=("A", "B"), default="A",
                   help="Table 1 panel for the baseline: A (nu=xi=0.5, alpha=1) or B (nu=xi=1, alpha=8)")
    for name in _PARAMS:
        p.add_argument(f"--{name}", type=float, default=None, metavar="X",
                       help=f"override parameter {name} (default: the panel's value; a=1)")
    p.add_argument("--no-table", action="store_true", help="skip the Table 1 reproduction (both panels)")
    p.add_argument("--table2", action="store_true",
                   help="also reproduce Table 2 (Section 7, heterogeneous firms; panel B with tau=0.15) "
                        "and write van_vuuren_table2.csv (printed vs computed)")
    p.add_argument("--sweep-points", type=int, default=20, metavar="N", help="points in the a-sweep (default 20)")
    add_output_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from spatialjax import atomic
    from spatialjax.cli import prepare_output
    from spatialjax.errors import ParameterError
    from spatialjax.models import van_vuuren as vv
    from spatialjax.plots import van_vuuren as vvplot

    if args.sweep_points < 2:
        raise ParameterError("--sweep-points", f"must be >= 2; got {args.sweep_points}")
    over = {k: getattr(args, k) for k in _PARAMS if getattr(args, k) is not None}
    P = (vv.Params.panel_a if args.panel == "A" else vv.Params.panel_b)(**over)   # validated before any file
    out = prepare_output(args.output)
    eqs = vv.solve_market(P)
    pl = vv.solve_planner(P)
    print(eqs.summary())
    print()
    print(pl.summary())
    res = {"params": P.to_dict(), "market": eqs.to_dict(), "planner": pl.to_dict()}
    atomic.write_json(out / "van_vuuren_solution.json", res)
    for i, e in enumerate(eqs):
        vvplot.plot_rents(e, out / f"van_vuuren_rents_{i}_{e.config}.png")
    a = np.linspace(0.05, min(1.0, float(P.s0)), args.sweep_points)
    sw = vv.sweep_a(P, a)
    vvplot.plot_sweep(sw, out / "van_vuuren_sweep_a.png", title=f"panel {args.panel}")
    if not args.no_table:
        import pandas as pd

        tabs = []
        for panel in ("A", "B"):
            t = vv.table1(panel)
            t.insert(0, "panel", panel)
            tabs.append(t)
        tab = pd.concat(tabs, ignore_index=True)
        atomic.write_frame(out / "van_vuuren_table1.csv", tab)
        print()
        print("Table 1 reproduction (on-the-job-search columns):")
        print(tab[["panel", "a", "config", "u", "v", "du", "s_du", "omega", "omega_star", "planner_config"]]
              .to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if args.table2:
        t2 = vv.table2()
        atomic.write_frame(out / "van_vuuren_table2.csv", t2)
        print()
        print("Table 2 reproduction (heterogeneous firms; paper_* = printed; see data_moments/van_vuuren_table2.md):")
        cols = [c for c in ("a", "side", "config", "u", "paper_u", "v", "paper_v", "du", "paper_du", "omega",
                            "paper_omega", "p_low", "paper_p_low") if c in t2.columns]
        print(t2[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if not args.quiet:
        print(f"\nwrote tables and figures to {out}")
    ok = eqs.converged and pl.converged
    return 0 if ok else 1
