"""Reading data files (CSV or Parquet) with a documented schema, via pandas.

Every reader checks the columns it needs and their values and raises
:class:`~spatialjax.errors.ParameterError` naming the file and column when they are wrong.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from spatialjax.errors import ParameterError


def read_table(path, schema: Mapping[str, str]) -> pd.DataFrame:
    """Read ``path`` (``.csv`` or ``.parquet``) and check it against ``schema``.

    ``schema`` maps column name to a rule: ``"int"``, ``"float"``, ``"positive"``
    (finite float > 0), ``"nonnegative"`` or ``"str"``. Extra columns are kept.
    """
    path = Path(path)
    if not path.exists():
        raise ParameterError(str(path), "file not found")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix in (".csv", ".txt"):
        df = pd.read_csv(path, comment="#")
    else:
        raise ParameterError(str(path), f"unsupported file type {path.suffix!r}; allowed: .csv, .parquet")
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ParameterError(f"{path.name}", f"missing column(s) {missing}; required columns: {list(schema)}")
    for col, rule in schema.items():
        if rule == "str":
            continue
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(vals)):
            bad = np.flatnonzero(~np.isfinite(vals))[:3].tolist()
            raise ParameterError(f"{path.name}:{col}", f"must be finite numbers; bad rows {bad}")
        if rule == "int" and not np.all(vals == np.round(vals)):
            raise ParameterError(f"{path.name}:{col}", "must be integers")
        if rule == "positive" and np.any(vals <= 0):
            raise ParameterError(f"{path.name}:{col}", f"must be > 0; got {vals[vals <= 0][:3].tolist()}")
        if rule == "nonnegative" and np.any(vals < 0):
            raise ParameterError(f"{path.name}:{col}", f"must be >= 0; got {vals[vals < 0][:3].tolist()}")
        df[col] = vals.astype(int) if rule == "int" else vals
    return df


def read_toml(path, allowed: set[str] | None = None) -> dict:
    """Read a TOML file; with ``allowed``, unknown top-level keys raise ParameterError."""
    path = Path(path)
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    if allowed is not None:
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise ParameterError(f"{path.name}", f"unknown key(s) {unknown}; allowed keys: {sorted(allowed)}")
    return cfg


def data_path(name: str) -> Path:
    """Path of a file embedded in the package (``spatialjax/data/``)."""
    return Path(__file__).parent / "data" / name
