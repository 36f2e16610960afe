"""``spatialjax calibrate CONFIG --output DIR [--resume] [--quiet]``: run the calibration a TOML
config describes (:func:`spatialjax.calibrate.run_calibration`).

Exit codes: 0 estimated and converged; 1 the estimation did not converge or the parameters are
weakly identified (said on stderr; the outputs are still written, with their status);
2 bad usage or invalid config/data/output folder (one line on stderr naming the key).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_DESCRIPTION = """\
Estimate the parameters of a calibration problem by GMM or minimum distance, as the TOML
config CONFIG describes (schema: calibration/README.md). Everything in the config is checked
before any work starts: unknown keys, wrong types, out-of-range values, unknown parameters,
missing data files or columns are errors naming the key (exit 2), and a rejected run writes
nothing. A checkpoint is written to DIR/checkpoint/ after every outer iteration; --resume
continues from it (refused if the config or its data changed). Outputs, each written
atomically: estimates.json, estimates.csv, moments.csv, sensitivity.csv, summary.txt,
estimates.png (with [outputs] plots = true) and the problem's own tables and plots. The
summary table is printed to stdout."""

_EPILOG = """\
exit codes: 0 converged; 1 did not converge or weakly identified (outputs written with their
status); 2 invalid usage, config, data or output folder.
example: spatialjax calibrate calibration/example_iv.toml --output out/example_iv"""


def register(sub) -> None:
    """Add the ``calibrate`` command to the top-level sub-parsers."""
    p = sub.add_parser("calibrate", help="estimate a calibration problem from a TOML config (GMM / minimum distance)",
                       description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG", help="TOML config (e.g. calibration/example_iv.toml)")
    p.add_argument("--output", "-o", default=None, metavar="DIR",
                   help="output directory, created with its parents if missing (default: out/<CONFIG name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint/ (refused when the config or a data file changed)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display (the summary is still printed)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Not on :func:`spatialjax.cli.add_command`'s wrapper on purpose: the output folder is created
    by :func:`spatialjax.calibrate.run_calibration` only after the config *and its data files*
    passed validation (the wrapper would create it after the options alone)."""
    from spatialjax.calibrate import run_calibration
    from spatialjax.cli import EXIT_FAILED, EXIT_OK

    out = args.output if args.output is not None else str(Path("out") / Path(args.config).stem)
    result, written = run_calibration(args.config, out, resume=args.resume, progress=not args.quiet)
    files = [str(p) for k, p in written.items() if k != "checkpoint"]
    print("wrote " + ", ".join(files), flush=True)
    problems = []
    if not bool(result.converged):
        problems.append(f"the estimation did not converge (status: {result.status})")
    weak = _weak_identification(result)
    if weak:
        problems.append(f"the parameters are weakly identified ({weak})")
    if problems:
        print("spatialjax: " + "; ".join(problems) + f"; outputs in {out} carry this status", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _weak_identification(result) -> str:
    """The weakly identified direction (in parameter names) when the estimator flags one, else ''."""
    wi = getattr(result, "weak_identification", None) or {}
    if wi.get("flag"):
        return wi.get("text") or "G'WG is (near-)singular"
    return ""
