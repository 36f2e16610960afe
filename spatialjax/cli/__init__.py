"""Command-line interface: ``spatialjax solve <model> [options]``.

Exit codes: 0 success; 1 a solve failed (no convergence, fold, non-finite values);
2 bad usage or invalid input (the message names the field).

Each model registers its sub-command in ``spatialjax/cli/<module>.py`` through a function
``register(solve_subparsers)`` that adds a parser and sets ``func(args) -> int``.
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


def add_output_argument(p: argparse.ArgumentParser, default: str = "out") -> None:
    p.add_argument("--output", "-o", default=default, metavar="DIR",
                   help=f"directory for tables (CSV/JSON) and figures (PNG); created if missing (default: {default})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def prepare_output(path: str) -> Path:
    """Create the output directory (call it after every option has been validated, so that a
    rejected run leaves no empty folder). A path that cannot be a directory is a usage error."""
    out = Path(path)
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
    extra = importlib.util.find_spec("spatialjax.cli.calibrate")
    if extra is not None:
        importlib.import_module("spatialjax.cli.calibrate").register(sub)
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
        print(f"spatialjax: error: {e}", file=sys.stderr)
        return 2
    except (ConvergenceError, SingularJacobianError) as e:
        print(f"spatialjax: solve failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
