"""``spatialjax solve ttu``: every equilibrium of Thisse–Turner–Ushchev (2023) with its stability.

Prints the table of equilibria, writes ``ttu_equilibria.csv`` / ``ttu_equilibria.json`` and the
figures ``ttu_figure1.png`` (f and g loci) and ``ttu_figure2.png`` (ln ρ against γ).

Order of work: every option (and every output target) is validated before any solve or any
file; the output folder is created only then; the table is printed before the figures are
drawn; every file is written atomically (temporary file + rename), so a failure leaves no
half-written file. Exit codes: 0 success; 1 a solve failed (the equilibria or a point of the
γ sweep, named); 2 bad usage, invalid input or an output that cannot be written (one line)."""

from __future__ import annotations

_DEFAULTS = dict(alpha=0.6, beta=0.3, eps=6.0, tau=1.2, gamma=0.11, delta=0.0, b=1.0, c=1.0, d=1.0)
_N_GAMMA_MAX = 20001
_TABLES = ("ttu_equilibria.csv", "ttu_equilibria.json")
_FIGURES = ("ttu_figure1.png", "ttu_figure2.png")


def register(sub) -> None:
    from spatialjax.cli import add_command

    p = add_command(
        sub, "ttu", help="Thisse-Turner-Ushchev 'Foundations of Cities': all equilibria and their stability",
        description="Find every equilibrium (interior and corner) of the three-location city of Thisse, "
                    "Turner & Ushchev (2023), test each for stability (Definition 3), and draw the f/g loci "
                    "(Figure 1) and the equilibrium correspondence ln rho against gamma (Figure 2).",
        epilog="exit codes: 0 success; 1 a solve failed (named on stdout, outputs carry the status); "
               "2 invalid option or output folder (one line, nothing written)",
        run=run, validate=_validate)
    for k, v in _DEFAULTS.items():
        p.add_argument(f"--{k}", type=float, default=v, help=f"{k} (default {v:g})")
    p.add_argument("--gamma-max", type=float, default=None,
                   help="upper end (> 0) of the gamma sweep for Figure 2 (default: 3 * alpha/eps)")
    p.add_argument("--n-gamma", type=int, default=241,
                   help=f"number of gamma values in the sweep, 2 to {_N_GAMMA_MAX} (default 241)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")


def _validate(args):
    """Every check that needs no solve: the options, the parameters and the output targets.
    Returns the validated Params. Raises ParameterError naming the option."""
    from pathlib import Path

    from spatialjax.errors import ParameterError
    from spatialjax.models import thisse_turner_ushchev as ttu

    from spatialjax.cli import check_float_option, check_int_option

    check_int_option("--n-gamma", args.n_gamma, minimum=2, maximum=_N_GAMMA_MAX)
    if args.gamma_max is not None:
        check_float_option("--gamma-max", args.gamma_max, low=0.0, low_open=True)
    try:
        params = ttu.Params(**{k: getattr(args, k) for k in _DEFAULTS})
    except ParameterError as e:      # name the option as the user typed it
        raise ParameterError(f"--{e.field}", str(e).split(": ", 1)[-1]) from None
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ParameterError("--output", f"{out} exists and is not a directory")
    for name in _TABLES + (() if args.no_figures else _FIGURES):
        if (out / name).is_dir():
            raise ParameterError("--output", f"{out / name} is a directory; it cannot be overwritten by the output file")
    return params


def run(args, out) -> int:
    """The solve, after :func:`_validate` passed and the skeleton created ``out``
    (:func:`spatialjax.cli.add_command`)."""
    import numpy as np

    from spatialjax import atomic
    from spatialjax.cli import EXIT_FAILED, EXIT_OK
    from spatialjax.errors import ParameterError
    from spatialjax.models import thisse_turner_ushchev as ttu

    params = _validate(args)            # cheap; returns the Params the skeleton's call already checked
    eqs = ttu.equilibria(params, stability=float(params.alpha) > 0.5, throw=False)
    print(eqs.summary())                # the table first, then the files and figures
    if float(params.alpha) <= 0.5:
        print("note: alpha <= 1/2, stability not tested (conditional prices need alpha > 1/2)")
    written = list(_TABLES)
    try:
        atomic.write_frame(out / _TABLES[0], _table(eqs))
        atomic.write_text(out / _TABLES[1], eqs.to_json())
        sweep_failed = []
        if not args.no_figures:
            from spatialjax.plots import thisse_turner_ushchev as plots

            gm = float(params.gamma_m)
            gmax = args.gamma_max if args.gamma_max is not None else 3 * gm
            g_fig1 = sorted({0.5 * gm, 0.95 * gm, 1.05 * gm, 2 * gm, float(params.gamma)})
            plots.figure1(params, g_fig1, path=out / _FIGURES[0])
            _, sw = plots.figure2(params, np.linspace(0.0, gmax, args.n_gamma), path=out / _FIGURES[1])
            written += list(_FIGURES)
            sweep_failed = [float(sw["gamma"][i]) for i in sw["failed"]]
            if not args.quiet:
                print(f"figure 2: {int(np.sum(sw['valid']))} interior equilibria over {args.n_gamma} values of gamma")
    except OSError as e:                # e.g. the disk filled up: one line, exit 2, no half-written file
        raise ParameterError("--output", f"cannot write to {out}: {e.strerror or e}") from None
    if not args.quiet:
        print(f"wrote {out}/" + ", ".join(written))
    rc = EXIT_OK
    if not eqs.converged:
        print(f"solve problems ({eqs.status}): {eqs.message}")
        rc = EXIT_FAILED
    if sweep_failed:
        shown = ", ".join(f"{g:.6g}" for g in sweep_failed[:10]) + (" ..." if len(sweep_failed) > 10 else "")
        print(f"figure 2: the sweep failed at {len(sweep_failed)} of {args.n_gamma} values of gamma ({shown}); "
              f"see ttu.sweep_gamma(...)['root_status']")
        rc = EXIT_FAILED
    return rc


#: CSV columns: (column, key of Equilibrium.to_dict(), index into an array field or None).
#: Locations are -1, 0, 1 (array index 0, 1, 2); blank cells are non-finite values (JSON null:
#: at a corner omega = inf or 0 and ell = inf or 0, see log_omega).
_COLUMNS = [("kind", "kind", None), ("pattern", "pattern", None), ("rho", "rho", None), ("omega", "omega", None),
            ("log_rho", "log_rho", None), ("log_omega", "log_omega", None), ("ell_L0_over_L1", "ell", None),
            ("L_-1", "L", 0), ("L_0", "L", 1), ("L_1", "L", 2), ("M_0", "M", 1), ("M_1", "M", 2),
            ("W_0", "W", 1), ("W_1", "W", 2), ("R_0", "R", 1), ("R_1", "R", 2),
            ("stable", "stable", None), ("stable_pair", "stable_pair", None), ("stable_all", "stable_all", None),
            ("stability_margin", "stability_margin", None), ("full_residual", "full_residual", None),
            ("status", "status", None), ("converged", "converged", None), ("message", "message", None)]


def _table(eqs):
    """The equilibria as a DataFrame built from each ``Equilibrium.to_dict()``."""
    import pandas as pd

    rows = []
    for e in eqs:
        d = e.to_dict()
        rows.append({col: (d[key] if i is None else d[key][i]) for col, key, i in _COLUMNS})
    return pd.DataFrame(rows, columns=[c for c, _, _ in _COLUMNS])
