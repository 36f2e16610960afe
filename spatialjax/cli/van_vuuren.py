"""``spatialjax solve van-vuuren``: market equilibria and planner for van Vuuren (2016), Table 1 (and Table 2 with --table2)."""

from __future__ import annotations

import argparse

_PARAMS = ("a", "s0", "psi", "alpha", "nu", "xi", "delta", "rho", "tau", "b", "p", "gamma", "chi")
_SWEEP_A_MIN = 0.05   # the a-sweep runs over [0.05, min(1, s0)]

#: CSV number format: 10 significant digits (no float noise such as 0.30000000000000004)
FLOAT_FORMAT = "%.10g"

#: written beside the CSVs: what every column means (the same text as in --help)
COLUMNS_FILE = "van_vuuren_columns.txt"

TABLE1_COLUMNS = """\
columns of van_vuuren_table1.csv:
  panel            Table 1 panel: A (nu = xi = 0.5, alpha = 1) or B (nu = xi = 1, alpha = 8)
  a                slope of search efficiency, s(d) = s0 - a d  (1)
  config           market configuration: integrated (du = 0), interior, segregated (du = 1 - u); none if no equilibrium
  u, v, du         unemployment, vacancies, inner edge of the unemployed zone [du, du + u]
  s_du             s(du + u/2): search efficiency at the unemployed's mean location (the paper's "s(du)")
  omega            market flow welfare omega_t (24)
  omega_star       planner's flow welfare (Section 5, better of the two du corners)
  planner_config   the planner's corner (integrated or segregated)
  planner_local_26 the corner that the local condition (26) picks at the planner's lambda
  residual         max abs residual of the market equilibrium equations
"""

TABLE2_COLUMNS = """\
columns of van_vuuren_table2.csv (Section 7, heterogeneous firms; panel B with tau = 0.15):
  a                slope of search efficiency, s(d) = s0 - a d  (1)
  side             planner or market
  config           integrated (du = 0), interior, segregated (du = 1 - u); none if no market equilibrium
  u, v, du         unemployment, vacancies, inner edge of the unemployed zone [du, du + u]
  s_du             s(du + u/2) (the paper's "s(du)")
  omega            flow welfare omega_t, Section 7 (with E_H[p], the mean productivity of the employed)
  p_low            lowest productivity accepted by the unemployed (Table 2's "p")
  residual         market: max abs residual; planner: projected-gradient norm
  paper_<x>        the printed Table 2 value of column x
  gap_<x>          ours / printed - 1 for u, v, s_du, omega; ours - printed for du and p_low
  (row-by-row discussion: data_moments/van_vuuren_table2.md)
"""

EPILOG = f"""\
output files (in --output):
  van_vuuren_solution.json   parameters, market equilibria (Equilibria.to_dict) and planner
  van_vuuren_rents_<i>_<config>.png   rent schedule R(d) and bid rents (Figure 2), per equilibrium
  van_vuuren_sweep_a.png     u, v, du against the slope a of search efficiency, by configuration
  van_vuuren_table1.csv      Table 1 reproduction (unless --no-table), one row per (panel, a, equilibrium)
  van_vuuren_table2.csv      Table 2 reproduction (with --table2), one row per (a, side, equilibrium)
  {COLUMNS_FILE}     what every column of the CSVs written means (the legends below)

{TABLE1_COLUMNS}
{TABLE2_COLUMNS}
exit codes: 0 success; 1 a solve failed (no market equilibrium or no planner optimum);
2 bad option or parameter (the message names it), or an output directory that cannot be created.
"""


def write_tables(out, tab=None, t2=None):
    """Write the Table 1 / Table 2 CSVs that are given (10 significant digits, no float noise)
    and, beside them, :data:`COLUMNS_FILE` with the legend of every CSV written.  Returns the
    paths written."""
    from spatialjax import atomic

    paths, legend = [], []
    for name, df, text in (("van_vuuren_table1.csv", tab, TABLE1_COLUMNS), ("van_vuuren_table2.csv", t2, TABLE2_COLUMNS)):
        if df is None:
            continue
        paths.append(atomic.write_frame(out / name, df, float_format=FLOAT_FORMAT, index=False))
        legend.append(text)
    if legend:
        head = "van Vuuren (2016) reproduction: columns of the CSV files in this folder (also in --help)\n\n"
        paths.append(atomic.write_text(out / COLUMNS_FILE, head + "\n".join(legend)))
    return paths


def register(sub):
    from spatialjax.cli import add_command

    p = add_command(
        sub, "van-vuuren",
        help="van Vuuren (2016): on-the-job search and city structure (Table 1)",
        description="Solve the market equilibria (integrated / interior / segregated) and the planner for "
                    "the paper's baseline, print them, and write the Table 1 reproduction (CSV), the rent "
                    "schedule (Figure 2) and u, v, du against a (PNG) into the output directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        run=run, validate=_validate,
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


def _validate(args):
    """Every option checked before any work or file (ParameterError names the option)."""
    from spatialjax.errors import ParameterError
    from spatialjax.models import van_vuuren as vv

    from spatialjax.cli import check_int_option

    check_int_option("--sweep-points", args.sweep_points, minimum=2)
    over = {k: getattr(args, k) for k in _PARAMS if getattr(args, k) is not None}
    P = (vv.Params.panel_a if args.panel == "A" else vv.Params.panel_b)(**over)
    if not min(1.0, float(P.s0)) > _SWEEP_A_MIN:
        raise ParameterError("--s0", f"must exceed {_SWEEP_A_MIN} for the a-sweep over [{_SWEEP_A_MIN}, min(1, s0)]; "
                                     f"got {float(P.s0)}")
    return P


def run(args, out) -> int:
    """The solves, after :func:`_validate` passed and the skeleton created ``out``
    (:func:`spatialjax.cli.add_command`)."""
    import numpy as np

    from spatialjax import atomic
    from spatialjax.cli import EXIT_FAILED, EXIT_OK
    from spatialjax.models import van_vuuren as vv
    from spatialjax.plots import van_vuuren as vvplot

    P = _validate(args)                 # cheap; the skeleton already ran it before creating `out`
    eqs = vv.solve_market(P)
    pl = vv.solve_planner(P)
    print(eqs.summary())
    print()
    print(pl.summary())
    tab = t2 = None
    if not args.no_table:
        import pandas as pd

        tabs = []
        for panel in ("A", "B"):
            t = vv.table1(panel)
            t.insert(0, "panel", panel)
            tabs.append(t)
        tab = pd.concat(tabs, ignore_index=True)
        print()
        print("Table 1 reproduction (on-the-job-search columns):")
        print(tab[["panel", "a", "config", "u", "v", "du", "s_du", "omega", "omega_star", "planner_config"]]
              .to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if args.table2:
        t2 = vv.table2()
        print()
        print("Table 2 reproduction (heterogeneous firms; paper_* = printed; see data_moments/van_vuuren_table2.md):")
        cols = [c for c in ("a", "side", "config", "u", "paper_u", "v", "paper_v", "du", "paper_du", "omega",
                            "paper_omega", "p_low", "paper_p_low") if c in t2.columns]
        print(t2[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    # files: tables first, then figures; each written atomically (temporary file + rename)
    res = {"params": P.to_dict(), "market": eqs.to_dict(), "planner": pl.to_dict()}
    atomic.write_json(out / "van_vuuren_solution.json", res)
    write_tables(out, tab, t2)
    for i, e in enumerate(eqs):
        vvplot.plot_rents(e, out / f"van_vuuren_rents_{i}_{e.config}.png")
    a = np.linspace(_SWEEP_A_MIN, min(1.0, float(P.s0)), args.sweep_points)
    sw = vv.sweep_a(P, a)
    vvplot.plot_sweep(sw, out / "van_vuuren_sweep_a.png", title=f"panel {args.panel}")
    if not args.quiet:
        print(f"\nwrote tables and figures to {out}")
    ok = eqs.converged and pl.converged
    return EXIT_OK if ok else EXIT_FAILED
