"""Command-line interface: ``spatialjax solve <model> [options]``, ``spatialjax calibrate CONFIG``.

Exit codes (:data:`EXIT_OK`, :data:`EXIT_FAILED`, :data:`EXIT_USAGE`): 0 success; 1 a solve
failed (no convergence, no equilibrium found, non-finite values; said on stderr, outputs carry
the status); 2 bad usage or invalid input (one line on stderr naming the field; nothing written).

The skeleton every sub-command uses (``spatialjax/cli/<module>.py`` defines
``register(solve_subparsers)``)::

    def register(sub):
        p = add_command(sub, "my-model", help="...", description="...", run=run, validate=validate)
        p.add_argument("--n", type=int, default=10)

    def validate(args):            # every option, before any work or any file; raise ParameterError
        check_int_option("--n", args.n, minimum=2)

    def run(args, out) -> int:     # out: the output folder, created only after validate passed
        ...                        # print the table first, then write files atomically
        return EXIT_OK if result.converged else EXIT_FAILED

:func:`add_command` adds ``--output/-o DIR`` and ``--quiet/-q``; the wrapper it installs runs
``validate(args)``, then :func:`prepare_output` (an output path that cannot be created, e.g.
under ``/proc`` or under a file, is a one-line error and exit 2), then ``run(args, out)``.
``run`` may return an int, a bool (True = success) or a result with ``converged``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from spatialjax.errors import ConvergenceError, ParameterError, SingularJacobianError

# Modules under spatialjax/cli/ that register a `solve <model>` sub-command.
MODEL_COMMANDS = ("jiao_tian", "thisse_turner_ushchev", "van_vuuren", "helsley_strange")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_command(sub, name: str, *, help: str, description: str, run, validate=None, output_default: str | None = None,
                epilog: str | None = None, formatter_class=None) -> argparse.ArgumentParser:
    """Add sub-command ``name`` with ``--output``/``--quiet`` and the validate -> prepare_output ->
    run sequence (module docstring). ``output_default`` defaults to ``out/<name>``."""
    kw = {"formatter_class": formatter_class} if formatter_class is not None else {}
    p = sub.add_parser(name, help=help, description=description, epilog=epilog, **kw)
    add_output_argument(p, default=output_default or f"out/{name}")

    def func(args) -> int:
        if validate is not None:
            validate(args)
        out = prepare_output(args.output)
        return exit_code(run(args, out))

    p.set_defaults(func=func)
    return p


def exit_code(r) -> int:
    """An int as is; True/None -> 0, False -> 1; a result -> 0 if ``converged`` else 1."""
    if r is None or r is True:
        return EXIT_OK
    if r is False:
        return EXIT_FAILED
    if isinstance(r, int):
        return r
    return EXIT_OK if bool(getattr(r, "converged")) else EXIT_FAILED


def check_int_option(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an integer within the bounds, else ParameterError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, f"must be an integer; got {value!r}")
    if minimum is not None and value < minimum:
        raise ParameterError(name, f"must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ParameterError(name, f"must be <= {maximum}; got {value}")
    return value


def check_float_option(name: str, value, *, low: float | None = None, high: float | None = None,
                       low_open: bool = False, high_open: bool = False) -> float:
    """``value`` if it is a finite number in the interval, else ParameterError naming the option."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(name, f"must be a finite number; got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ParameterError(name, f"must be {'>' if low_open else '>='} {low:g}; got {value:g}")
    if high is not None and (value >= high if high_open else value > high):
        raise ParameterError(name, f"must be {'<' if high_open else '<='} {high:g}; got {value:g}")
    return float(value)


def add_output_argument(p: argparse.ArgumentParser, default: str = "out") -> None:
    p.add_argument("--output", "-o", default=default, metavar="DIR",
                   help=f"directory for tables (CSV/JSON) and figures (PNG); created if missing (default: {default})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def prepare_output(path: str) -> Path:
    """Create the output directory (call it after every option has been validated, so that a
    rejected run leaves no empty folder). A path that cannot be a directory is a usage error."""
    out = Path(path)
    blocker = next((q for q in (out, *out.parents) if q.exists() and not q.is_dir()), None)
    if blocker is not None and blocker != out:
        raise ParameterError("--output", f"cannot create {out}: {blocker} is a file, not a directory")
    if out.exists() and not out.is_dir():
        raise ParameterError("--output", f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".spatialjax-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ParameterError("--output", f"cannot create or write the directory {out}: {e.strerror or e}") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spatialjax",
        description="Solve, differentiate and calibrate quantitative spatial-equilibrium models of cities.",
    )
    parser.add_argument("--version", action="version", version="spatialjax 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    solve = sub.add_parser("solve", help="solve a model's equilibrium on built-in example data",
                           description="Solve a model's equilibrium on built-in example data.")
    solve_sub = solve.add_subparsers(dest="model", metavar="MODEL")
    for name in MODEL_COMMANDS:
        try:
            mod = importlib.import_module(f"spatialjax.cli.{name}")
        except ModuleNotFoundError as e:  # a model whose CLI is not written yet
            if e.name != f"spatialjax.cli.{name}":
                raise
            continue
        mod.register(solve_sub)
    from spatialjax.cli import calibrate

    calibrate.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ParameterError as e:
        print(f"spatialjax: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (ConvergenceError, SingularJacobianError) as e:
        print(f"spatialjax: solve failed: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED


def _one_line(e) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
