"""Reading data files (CSV or Parquet) with a documented schema, via pandas.

Every reader checks the columns it needs and their values and raises
:class:`~spatialjax.errors.ParameterError` naming the file and column when they are wrong.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from spatialjax.errors import ParameterError


def _csv_data_lines(path: Path) -> np.ndarray:
    """1-based file line numbers of a CSV's data rows (after the header; comment and blank
    lines skipped as ``pd.read_csv(comment="#")`` skips them), so errors can say "line 7"."""
    lines = []
    header_seen = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, raw in enumerate(f, start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            if not header_seen:
                header_seen = True
                continue
            lines.append(i)
    return np.asarray(lines, dtype=int)


def read_table(path, schema: Mapping[str, str], *, unique: Sequence[str] = ()) -> pd.DataFrame:
    """Read ``path`` (``.csv`` or ``.parquet``) and check it against ``schema``.

    ``schema`` maps column name to a rule: ``"int"``, ``"float"``, ``"positive"``
    (finite float > 0), ``"nonnegative"`` or ``"str"``. Extra columns are kept. ``unique``
    names columns whose values must not repeat (e.g. an id). Errors name the file, the
    column and, for CSV files, the line of the file as a text editor numbers it (header =
    line 1); for Parquet files the 0-based row.
    """
    path = Path(path)
    if not path.exists():
        raise ParameterError(str(path), "file not found")
    if path.is_dir():
        raise ParameterError(str(path), "is a directory, not a data file")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        where = lambda rows: "rows " + ", ".join(str(int(r)) for r in rows)  # noqa: E731
    elif path.suffix in (".csv", ".txt"):
        try:
            df = pd.read_csv(path, comment="#")
        except pd.errors.EmptyDataError:
            raise ParameterError(path.name, f"the file is empty; expected a header with the columns {list(schema)} "
                                            f"and at least one data row") from None
        except pd.errors.ParserError as e:
            raise ParameterError(path.name, f"not a readable CSV file: {e}") from None
        file_lines = _csv_data_lines(path)
        where = lambda rows: "line " + ", ".join(  # noqa: E731
            str(int(file_lines[r])) if r < len(file_lines) else f"row {int(r)}" for r in rows)
    else:
        raise ParameterError(str(path), f"unsupported file type {path.suffix!r}; allowed: .csv, .parquet")
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ParameterError(f"{path.name}", f"missing column(s) {missing}; required columns: {list(schema)}")
    if len(df) == 0:
        raise ParameterError(path.name, "has a header but no data rows")
    for col, rule in schema.items():
        if rule == "str":
            continue
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(vals)):
            bad = np.flatnonzero(~np.isfinite(vals))[:3]
            raise ParameterError(f"{path.name}:{col}", f"must be finite numbers; bad value(s) "
                                                       f"{df[col].iloc[bad].tolist()} at {where(bad)}")
        checks = {"int": (vals != np.round(vals), "must be integers"),
                  "positive": (vals <= 0, "must be > 0"),
                  "nonnegative": (vals < 0, "must be >= 0")}
        if rule in checks:
            mask, msg = checks[rule]
            if np.any(mask):
                bad = np.flatnonzero(mask)[:3]
                raise ParameterError(f"{path.name}:{col}", f"{msg}; got {vals[bad].tolist()} at {where(bad)}")
        elif rule != "float":
            raise ValueError(f"read_table: unknown schema rule {rule!r} for column {col!r}")
        df[col] = vals.astype(int) if rule == "int" else vals
    for col in unique:
        dup = df[col].duplicated(keep="first").to_numpy()
        if np.any(dup):
            bad = np.flatnonzero(dup)[:3]
            raise ParameterError(f"{path.name}:{col}", f"values must be unique; repeated {df[col].iloc[bad].tolist()} "
                                                       f"at {where(bad)}")
    return df


def read_toml(path, allowed: set[str] | None = None) -> dict:
    """Read a TOML file; with ``allowed``, unknown top-level keys raise ParameterError."""
    path = Path(path)
    if not path.exists():
        raise ParameterError(str(path), "file not found")
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ParameterError(str(path), f"not valid TOML: {e}") from None
    if allowed is not None:
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise ParameterError(f"{path.name}", f"unknown key(s) {unknown}; allowed keys: {sorted(allowed)}")
    return cfg


def data_path(name: str) -> Path:
    """Path of a file embedded in the package (``spatialjax/data/``)."""
    return Path(__file__).parent / "data" / name
