"""``spatialjax solve helsley-strange``: Helsley & Strange (2012) coagglomeration.

Prints the type optima, the constrained Pareto-efficient (CPE) allocation, the symmetric Nash
interval, the specialized-city interval and the partition ranking; writes
``helsley_strange_summary.json``, ``helsley_strange_partitions.csv``,
``helsley_strange_contract_curve.csv`` and the Figure 1-5 analogs
``helsley_strange_figure{1..5}.png`` (I = 2 only).

Order of work: every option, the parameters they build (including the Appendix assumption
alpha theta^i_s > t) and every output target are validated before any solve or any file; the
output folder is created only then; the tables are printed before the figures are drawn; every
file is written atomically (temporary file + rename). A quantity that was not solved is never
printed or written as a number: its row shows its status (the CSV cells are empty, with a
``status`` column). Exit codes: 0 success; 1 a solve failed (named on stderr, the outputs carry
the statuses); 2 bad usage, invalid input or an output that cannot be written (one line)."""

from __future__ import annotations

_SCALARS = dict(alpha=1.0, beta=1.0, gamma=0.5, t=0.5)
_TABLES = ("helsley_strange_summary.json", "helsley_strange_partitions.csv", "helsley_strange_contract_curve.csv")
_FIGURES = tuple(f"helsley_strange_figure{k}.png" for k in range(1, 6))


def register(sub) -> None:
    from spatialjax.cli import add_command

    p = add_command(
        sub, "helsley-strange", help="Helsley-Strange 'Coagglomeration': cluster scale and composition, Nash vs efficient",
        description="Solve the Helsley & Strange (2012) coagglomeration model with the Appendix productivity "
                    "(A.1) and c(N) = tN: type optimal clusters, the contract curve, the constrained Pareto "
                    "efficient allocation, the interval of symmetric Nash equilibria, specialized-city "
                    "equilibria (Proposition 3) and the partitions of industries into city types (Proposition 4). "
                    "Default: an I = 2 economy with theta = 2,1.5;1.2,1.8.",
        epilog="exit codes: 0 success; 1 a solve failed (named on stderr, the outputs carry the statuses); "
               "2 invalid option, parameters or output folder (one line, nothing written)",
        run=run, validate=_build)
    for k, v in _SCALARS.items():
        p.add_argument(f"--{k}", type=float, default=v, help=f"{k} in (A.1)/(III.7) (default {v:g})")
    p.add_argument("--theta", default="2,1.5;1.2,1.8", metavar="ROWS",
                   help="I x I matrix theta^i_s, rows (industries) separated by ';', entries by ',' "
                        "(default '2,1.5;1.2,1.8')")
    p.add_argument("--V0", default=None, metavar="LIST",
                   help="autarky utilities V_i(0), comma separated, or one number for all (default 0)")
    p.add_argument("--N", default=None, metavar="LIST",
                   help="aggregate numbers of workers N_i, comma separated (default 100 each)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")


def _floats(name, text):
    import math

    from spatialjax.errors import ParameterError
    try:
        vals = [float(x) for x in text.split(",")]
    except ValueError:
        raise ParameterError(name, f"must be comma-separated numbers; got {text!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise ParameterError(name, f"must be finite numbers; got {text!r}")
    return vals


def _theta(text):
    from spatialjax.errors import ParameterError
    rows = [_floats("--theta", r) for r in text.split(";")]
    if len({len(r) for r in rows}) != 1 or len(rows) != len(rows[0]) or len(rows) < 2:
        raise ParameterError("--theta", f"must be a square I x I matrix with I >= 2, rows separated by ';'; got {text!r}")
    return rows


def _build(args):
    from spatialjax.errors import ParameterError
    from spatialjax.models import helsley_strange as hs

    theta = _theta(args.theta)
    I = len(theta)
    V0 = None
    if args.V0 is not None:
        V0 = _floats("--V0", args.V0)
        V0 = V0 * I if len(V0) == 1 else V0
        if len(V0) != I:
            raise ParameterError("--V0", f"must have 1 or I = {I} entries; got {len(V0)}")
    N = None
    if args.N is not None:
        N = _floats("--N", args.N)
        if len(N) != I:
            raise ParameterError("--N", f"must have I = {I} entries; got {len(N)}")
    try:
        params = hs.Params(alpha=args.alpha, beta=args.beta, gamma=args.gamma, t=args.t, theta=theta, V0=V0, N=N)
    except ParameterError as e:  # name the command-line option
        raise ParameterError(f"--{e.field}", str(e).split(": ", 1)[1]) from None
    _check_targets(args, params.I)
    return params


def _check_targets(args, I):
    """The output folder and files can be written (checked before any work or any file)."""
    from pathlib import Path

    from spatialjax.errors import ParameterError

    out = Path(args.output)
    blocker = next((q for q in (out, *out.parents) if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        raise ParameterError("--output", f"cannot create the directory {out}: {blocker} is a file, not a directory")
    names = _TABLES if I == 2 else _TABLES[:2]
    for name in names + (() if args.no_figures or I != 2 else _FIGURES):
        if (out / name).is_dir():
            raise ParameterError("--output", f"{out / name} is a directory; it cannot be overwritten by the output file")


def _num(x) -> str:
    return f"{x:.6g}"


def run(args, out) -> int:
    """The solves, after :func:`_build` validated everything and the skeleton created ``out``
    (:func:`spatialjax.cli.add_command`)."""
    import csv
    import io
    import sys

    import numpy as np

    from spatialjax import atomic
    from spatialjax.cli import EXIT_FAILED, EXIT_OK
    from spatialjax.errors import ParameterError
    from spatialjax.models import helsley_strange as hs
    from spatialjax.tables import format_table

    params = _build(args)               # cheap; the skeleton already ran it before creating `out`
    I = params.I
    problems = []

    opts = [hs.solve_type_optimum(params, i) for i in range(I)]
    rows = []
    for i, o in enumerate(opts):
        if bool(o.is_max):
            rows.append((f"type {i + 1}", *[_num(float(x)) for x in o.n], _num(float(np.sum(o.n))),
                         _num(float(o.V[i])), o.status))
        else:                           # a failed optimum is reported by its status, never as numbers
            rows.append((f"type {i + 1}", *["-"] * (I + 2), o.status))
            problems.append(f"type-{i + 1} optimum: {o.status} ({o.message})")
    print(format_table(["optimum", *[f"n_{k + 1}" for k in range(I)], "N^j", "V_i", "status"], rows,
                       title="Type optimal clusters (IV.1)"))
    assumptions = hs.check_assumptions(params)
    print()
    cpe = hs.constrained_pareto_efficient(params)
    if cpe.solve_converged:
        print(cpe.summary())
    else:
        print(f"Constrained Pareto-efficient allocation (IV.5) ∩ (V.1): not solved, status {cpe.status} ({cpe.message})")
    if not cpe.converged:
        problems.append(f"CPE: {cpe.status} ({cpe.message})")
    print()
    nash = hs.nash_interval(params)
    print(nash.summary())
    if not nash.converged:
        problems.append(f"Nash interval: {nash.status} ({nash.message})")
    print()
    spec = hs.specialized_equilibria(params)
    print(spec.summary())
    if not spec.converged:
        problems.append(f"specialized cities: {spec.status} ({spec.message})")
    print()
    parts = hs.partition_equilibria(params)
    print(parts.summary())
    print()
    print("Assumptions: " + "; ".join(f"{k}: {'n/a' if v is None else ('yes' if v else 'no')}" for k, v in assumptions.items()))

    summary = {
        "params": params.to_dict(),
        "type_optima": [dict(type=i + 1, **o.to_dict()) for i, o in enumerate(opts)],
        "cpe": cpe.to_dict(),
        "nash": nash.to_dict(),
        "specialized": spec.to_dict(),
        "partitions": parts.to_dict(),
        "assumptions": assumptions,
        "problems": problems,
    }
    written = list(_TABLES[:2])
    try:
        atomic.write_json(out / _TABLES[0], summary)   # NaN -> null (valid JSON)
        import pandas as pd

        part_rows = parts.to_dict()["rows"]
        atomic.write_frame(out / _TABLES[1], pd.DataFrame(
            [{k: (" ".join(f"{x:.10g}" for x in r["scales"]) if k == "scales" else r[k])
              for k in ("rank", "partition", "equilibrium", "W_nash", "W_eff", "scales")} for r in part_rows]))
        if I == 2:
            lams = np.linspace(0.0, 1.0, 51)
            sols = [hs.solve_contract_curve(params, float(lam)) for lam in lams]
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["lambda", "n_1", "n_2", "status"])
            bad = 0
            for lam, o in zip(lams, sols):   # a failed point: empty cells and its status, never NaN
                ok = bool(o.is_max)
                bad += not ok
                n = np.asarray(o.n)
                w.writerow([f"{lam:.10g}", repr(float(n[0])) if ok else "", repr(float(n[1])) if ok else "", o.status])
            atomic.write_text(out / _TABLES[2], buf.getvalue())
            written.append(_TABLES[2])
            if bad:
                problems.append(f"contract curve: {bad} of {len(lams)} points not solved (status column of {_TABLES[2]})")
        if not args.no_figures:
            if I == 2 and not problems:
                from spatialjax.plots import helsley_strange as plots
                written += [p.name for p in plots.all_figures(params, out)]
            else:
                print("note: figures skipped (the Figure 1-5 analogs need I = 2 and every object solved)")
    except OSError as e:                # e.g. the disk filled up: one line, exit 2, no half-written file
        raise ParameterError("--output", f"cannot write to {out}: {e.strerror or e}") from None
    if not args.quiet:
        print(f"wrote {out}/: " + ", ".join(written))
    if problems:
        print("solve problems: " + "; ".join(problems))
        print("spatialjax: solve failed: " + "; ".join(problems), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
