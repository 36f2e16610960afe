"""Run a calibration from a TOML config: ``spatialjax calibrate CONFIG --output DIR [--resume]``.

This module is generic: it never imports a model at module level. A config names a
*calibration problem* (``[calibration] problem = "..."``), a module that turns the config
into a :class:`Problem` (moment function, start values, data, bounds) and, after the
estimation, writes its own tables and plots. Registered problems are listed in
:data:`PROBLEMS`; ``problem = "package.module"`` (a dotted path) loads any other module that
follows the protocol below.

Problem-module protocol (e.g. ``spatialjax/models/jiao_tian_calibration.py``):

* ``CONFIG_SCHEMA: dict`` — the problem-specific sections the module accepts (e.g.
  ``{"data": {...}, "model": {...}}``), each a mapping ``key -> Spec`` (see :class:`Spec`);
  the generic runner validates every section against it, so unknown keys, wrong types and
  out-of-range values are errors that name ``section.key`` before any work is done.
* ``PARAMETERS: dict[str, str]`` — ``name -> description`` of every parameter the problem
  has, in the order of the tables; or a function ``PARAMETERS(cfg) -> dict`` when the names
  depend on the (validated) problem sections (e.g. the regressors of a linear model). Every
  name needs a ``[parameters.<name>]`` table in the config and no other name is accepted.
* ``KIND: str`` — optional: ``"micro"`` or ``"minimum_distance"`` (what ``build_problem``
  will return), so that ``[estimation]`` settings the estimator cannot take are rejected before
  the problem is built.
* ``check_config(cfg: dict, file: str) -> None`` — optional: cross-field checks of the
  validated config; raises :class:`~spatialjax.errors.ParameterError` naming ``file: section.key``.
* ``build_problem(cfg: dict, base_dir: pathlib.Path) -> Problem`` — ``cfg`` is the whole
  validated config (``cfg["parameters"]`` holds the per-parameter start/bounds/fixed
  entries; :func:`parameter_setup` turns them into ``theta0``/``fixed``/``bounds``); paths in
  the config are relative to ``base_dir`` (the config's folder). It reads data (errors name
  the file and column) but writes nothing.
* ``report(problem: Problem, result, outdir: pathlib.Path, *, progress: bool) -> dict[str, pathlib.Path]``
  — optional: writes the problem's own outputs (counterfactual tables, plots) with
  :mod:`spatialjax.atomic` and returns ``{label: path}``.

The runner, :func:`run_calibration`, validates everything (config keys, types, ranges,
parameter names, data files and columns, the output folder) before it starts any work or
writes any file; writes a checkpoint after every outer iteration of the estimator to
``DIR/checkpoint/`` (with a fingerprint of the config and its data files, so a resumed run
refuses a changed config); and writes every output atomically (:mod:`spatialjax.atomic`).

The complete config schema and the runner are documented in ``calibration/README.md``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import json
import math
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from spatialjax.errors import ParameterError

__all__ = ["Problem", "PROBLEMS", "Spec", "GENERIC_SCHEMA", "PARAMETER_SCHEMA", "ParameterSetup",
           "validate_config", "load_config", "parameter_setup", "resolve_problem", "run_calibration",
           "config_fingerprint", "CHECKPOINT_DIR"]

# name -> module path; imported only when a config asks for it (generic code imports no model).
PROBLEMS: dict[str, str] = {
    "jiao_tian": "spatialjax.models.jiao_tian_calibration",
    "oh": "spatialjax.models.oh.estimation",
    "linear_iv": "spatialjax.calibration_examples:LinearIV",
    "toy_equilibrium": "spatialjax.calibration_examples:ToyEquilibrium",
}

#: sub-folder of the output directory that holds the estimator's checkpoint and the fingerprint.
CHECKPOINT_DIR = "checkpoint"
_STATE_FILE = "gmm_state.json"
_FINGERPRINT_FILE = "fingerprint.json"


@dataclass
class Problem:
    """What a problem module hands to the estimation layer (:mod:`spatialjax.gmm`).

    Attributes:
        kind: ``"micro"`` (``moments(theta, data) -> (n_obs, k)``, :func:`spatialjax.gmm.estimate`)
            or ``"minimum_distance"`` (``moments(theta) -> (k,)``, :func:`spatialjax.gmm.minimum_distance`).
        moments: the moment function (pure JAX). It may return ``(values, ok)`` with ``ok`` a
            boolean scalar that is False when an inner equilibrium solve failed.
        theta0: start values, a dict ``name -> float`` (or any PyTree) of the *estimated* parameters.
        data: per-observation data (micro GMM), any PyTree of arrays.
        m_hat: data moments ``(k,)`` (minimum distance).
        W: fixed weighting matrix (minimum distance), or None.
        cov_m_hat: covariance of ``m_hat`` (minimum distance), or None.
        bounds: ``name -> (lo, hi)`` (either may be None).
        estimator: keyword arguments for the estimator (``weighting``, ``cov``, ``clusters``, ``options``);
            the config's ``[estimation]`` section overrides them key by key.
        moment_names: one label per moment, for every table.
        true_params: the data-generating values when the data are simulated (a column in the tables).
        fixed: parameters held fixed, ``name -> value`` (reported, not estimated).
        meta: anything the problem's ``report`` needs later (baseline solutions, frames, ...).
        columns: per-observation columns (e.g. the data file as a DataFrame) in which
            ``[estimation] clusters`` names the cluster column; None when the problem has none.
        data_file: the file ``columns`` were read from (for error messages).
        n_obs: number of observations (default: the leading dimension of ``data``).
    """

    kind: str
    moments: Callable
    theta0: Any
    data: Any = None
    m_hat: Any = None
    W: Any = None
    cov_m_hat: Any = None
    bounds: dict | None = None
    estimator: dict = field(default_factory=dict)
    moment_names: list[str] | None = None
    true_params: dict | None = None
    fixed: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    columns: Any = None
    data_file: str | None = None
    n_obs: int | None = None


# ----------------------------------------------------------------------------------------------
# Config schema
# ----------------------------------------------------------------------------------------------

_TYPES = ("str", "int", "float", "bool", "path", "list[str]", "list[float]", "list[int]")


@dataclass(frozen=True)
class Spec:
    """One config key: its type, whether it is required, its default, and what values are allowed.

    Attributes:
        type: ``"str"``, ``"int"``, ``"float"`` (an integer literal is accepted), ``"bool"``,
            ``"path"`` (a string naming an existing file, relative to the config's folder),
            ``"list[str]"``, ``"list[float]"`` or ``"list[int]"``.
        required: the key must be present.
        default: the value used when the key is absent (None: no value; the consumer decides).
        allowed: the allowed values (for lists: of every element), or None.
        range: ``(lo, hi)`` for numbers (of every element for lists); either side None for
            unbounded. Closed unless ``open``.
        open: the range excludes its end points.
        finite: floats must be finite (TOML has ``inf`` and ``nan`` literals); False allows ``±inf``.
        length: required list length, or None.
        description: one line for the documentation and error messages.
    """

    type: str
    required: bool = False
    default: Any = None
    allowed: tuple | None = None
    range: tuple | None = None
    open: bool = False
    finite: bool = True
    length: int | None = None
    description: str = ""

    def __post_init__(self):
        if self.type not in _TYPES:
            raise ValueError(f"Spec.type: must be one of {_TYPES}; got {self.type!r}")

    def describe(self) -> str:
        """``type, required/default, allowed values or range`` in words."""
        parts = [self.type]
        parts.append("required" if self.required else f"default {self.default!r}")
        if self.allowed is not None:
            parts.append(f"one of {list(self.allowed)}")
        if self.range is not None:
            lo, hi = self.range
            b = "()" if self.open else "[]"
            parts.append(f"in {b[0]}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{b[1]}")
        return ", ".join(parts)

    def check(self, value, where: str, base_dir: Path | None = None):
        """Check ``value`` for the key ``where`` (``"file: section.key"``); returns the value
        (floats as ``float``); raises :class:`ParameterError` naming ``where``."""
        t = self.type
        if t.startswith("list["):
            if not isinstance(value, list):
                raise ParameterError(where, f"must be a list ({t}); got {_tname(value)} {value!r}")
            if self.length is not None and len(value) != self.length:
                raise ParameterError(where, f"must be a list of {self.length} elements; got {len(value)}")
            elem = Spec(t[5:-1], allowed=self.allowed, range=self.range, open=self.open, finite=self.finite)
            return [elem.check(v, f"{where}[{i}]", base_dir) for i, v in enumerate(value)]
        if t in ("str", "path"):
            if not isinstance(value, str):
                raise ParameterError(where, f"must be a string; got {_tname(value)} {value!r}")
        elif t == "bool":
            if not isinstance(value, bool):
                raise ParameterError(where, f"must be true or false; got {_tname(value)} {value!r}")
        elif t == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParameterError(where, f"must be an integer; got {_tname(value)} {value!r}")
        elif t == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterError(where, f"must be a number; got {_tname(value)} {value!r}")
            value = float(value)
            if math.isnan(value) or (self.finite and math.isinf(value)):
                raise ParameterError(where, f"must be a finite number; got {value}")
        if self.allowed is not None and value not in self.allowed:
            raise ParameterError(where, f"must be one of {list(self.allowed)}; got {value!r}")
        if self.range is not None and t in ("int", "float"):
            lo, hi = self.range
            bad = (lo is not None and (value <= lo if self.open else value < lo)) or \
                  (hi is not None and (value >= hi if self.open else value > hi))
            if bad:
                b = "()" if self.open else "[]"
                raise ParameterError(where, f"must be in {b[0]}{'-inf' if lo is None else lo}, "
                                            f"{'inf' if hi is None else hi}{b[1]}; got {value}")
        if t == "path":
            p = Path(value)
            if base_dir is not None and not p.is_absolute():
                p = base_dir / p
            if not p.is_file():
                raise ParameterError(where, f"data file {value!r} not found (looked for {p})")
        return value


def _tname(v) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "list",
            dict: "table"}.get(type(v), type(v).__name__)


_ESTIMATION_SPECS = {
    "weighting": Spec("str",
                      allowed=("identity", "diagonal", "fixed", "two-step", "iterated", "cue"),
                      description="weighting matrix: identity, diagonal (second step with diag(S)^-1), fixed "
                                  "(the problem's W), two-step efficient, iterated to convergence, or continuously "
                                  "updated (cue); minimum distance: identity, fixed or two-step (= cov(m_hat)^-1). "
                                  "Default: the problem's own choice, else two-step"),
    "cov": Spec("str", allowed=("robust", "cluster", "hac"),
                description="moment covariance S: heteroskedasticity-robust, clustered (needs clusters) or "
                            "Newey-West HAC (needs hac_lags); default robust, or cluster when clusters is set"),
    "clusters": Spec("str", description="name of the cluster column in the problem's per-observation data"),
    "hac_lags": Spec("int", range=(0, None), description="Newey-West lags (cov = \"hac\")"),
    "optimizer": Spec("str", allowed=("bfgs", "lm", "adam"),
                      description="outer optimiser (default: the estimator's, bfgs)"),
    "max_iter": Spec("int", range=(1, None), description="maximum outer iterations per optimisation"),
    "gtol": Spec("float", range=(0, None), open=True, description="gradient-norm stopping tolerance"),
    "xtol": Spec("float", range=(0, None), open=True, description="step-size stopping tolerance"),
    "ftol": Spec("float", range=(0, None), open=True, description="objective-change stopping tolerance"),
    "gn_tol": Spec("float", range=(0, None), open=True,
                   description="a line search that cannot go on counts as converged when the Gauss-Newton "
                               "step is below gn_tol (1 + max|u|) (default: the problem's, else 1e-9)"),
    "multistart": Spec("int", range=(1, None),
                       description="number of starts (the config's start values plus draws from each "
                                   "parameter's start_box, seeded by calibration.seed)"),
    "small_sample": Spec("bool",
                         description="small-sample inference: parameter covariance x n/(n-p-K) and Student-t "
                                     "intervals with n-p-K degrees of freedom (n: observations, or clusters; K: the "
                                     "nuisance parameters the problem concentrates out); default: the problem's "
                                     "choice (Jiao-Tian: on, K = the log T coefficients pi), else off"),
    "jacobian": Spec("str", allowed=("autodiff", "fd"),
                     description="moment Jacobian G: autodiff (default; through the equilibrium solve) or "
                                 "central finite differences"),
}

#: The generic sections every config may have (problem modules add their own).
GENERIC_SCHEMA: dict[str, dict[str, Spec]] = {
    "calibration": {
        "problem": Spec("str", required=True,
                        description=f"registered problem ({', '.join(sorted(PROBLEMS))}) or a dotted module path"),
        "title": Spec("str", default="", description="title of the summary table"),
        "seed": Spec("int", default=0, range=(0, None), description="seed of the multistart draws"),
        "description": Spec("str", default="", description="free text, copied into estimates.json"),
    },
    "estimation": _ESTIMATION_SPECS,
    "outputs": {
        "plots": Spec("bool", default=True, description="write the figures (estimates.png and the problem's)"),
        "formats": Spec("list[str]", default=["csv"], allowed=("csv", "parquet"),
                        description="table formats written (estimates, moments, sensitivity, hjdp)"),
    },
}

#: Keys of each ``[parameters.<name>]`` table.
PARAMETER_SCHEMA: dict[str, Spec] = {
    "start": Spec("float", description="start value (required when estimate = true)"),
    "estimate": Spec("bool", default=True, description="estimate the parameter (false: hold it at value)"),
    "value": Spec("float", description="the value of a fixed parameter (required when estimate = false)"),
    "bounds": Spec("list[float]", length=2, finite=False,
                   description="[lower, upper]; TOML's inf / -inf leave a side open"),
    "transform": Spec("str", default="none", allowed=("none", "log", "logit"),
                      description="log: a positive parameter (bounds default [0, inf]; theta = lo + exp(u)); "
                                  "logit: finite bounds (theta = lo + (hi - lo) sigmoid(u)); none: no transform "
                                  "beyond what given bounds imply (the estimator maps each bounded side the same way)"),
    "true": Spec("float", description="the data-generating value (simulated data): a column beside the estimates"),
    "start_box": Spec("list[float]", length=2, description="[lo, hi] box of multistart draws"),
}


def validate_config(cfg: Mapping, schema: Mapping[str, Mapping[str, Spec]], file, *,
                    parameters: Mapping[str, str] | Callable[[dict], Mapping[str, str]] | None = None,
                    base_dir: Path | None = None) -> dict:
    """Validate a parsed TOML config against ``schema`` and return it with defaults filled in.

    Args:
        cfg: the parsed config (``tomllib`` output).
        schema: ``section -> {key: Spec}``; a section is required when one of its keys is.
        file: the config's path, used in every message (``"file: section.key: ..."``).
        parameters: the problem's parameter names (``name -> description``), or a function of the
            validated sections returning them; with it, ``[parameters.<name>]`` tables are
            checked against :data:`PARAMETER_SCHEMA` (every name present, no other name).
        base_dir: folder that relative ``"path"`` keys are resolved against (default: the config's).

    Raises:
        ParameterError: unknown section or key (listing the allowed ones), missing required key,
            wrong type, value not allowed or out of range, data file not found, unknown or missing
            parameter, inconsistent parameter entries (start outside bounds, ...).
    """
    file = str(file)
    base_dir = Path(file).parent if base_dir is None else Path(base_dir)
    allowed_sections = list(schema) + (["parameters"] if parameters is not None else [])
    unknown = [s for s in cfg if s not in allowed_sections]
    if unknown:
        raise ParameterError(f"{file}: {unknown[0]}", f"unknown section or key; allowed sections: {allowed_sections}")
    out: dict = {}
    for section, specs in schema.items():
        raw = cfg.get(section)
        if raw is None:
            missing = [k for k, s in specs.items() if s.required]
            if missing:
                raise ParameterError(f"{file}: {section}.{missing[0]}", f"missing; [{section}] needs "
                                     f"{missing} ({specs[missing[0]].description})")
            raw = {}
        if not isinstance(raw, dict):
            raise ParameterError(f"{file}: {section}", f"must be a table [{section}]; got {_tname(raw)}")
        out[section] = _validate_table(raw, specs, f"{file}: {section}", base_dir)
    if parameters is not None:
        names = parameters(out) if callable(parameters) else parameters
        out["parameters"] = _validate_parameters(cfg.get("parameters"), dict(names), file)
    return out


def _validate_table(raw: Mapping, specs: Mapping[str, Spec], prefix: str, base_dir: Path) -> dict:
    unknown = [k for k in raw if k not in specs]
    if unknown:
        raise ParameterError(f"{prefix}.{unknown[0]}", f"unknown key; allowed keys: {sorted(specs)}")
    table = {}
    for key, spec in specs.items():
        if key in raw:
            table[key] = spec.check(raw[key], f"{prefix}.{key}", base_dir)
        elif spec.required:
            raise ParameterError(f"{prefix}.{key}", f"missing (required: {spec.description or spec.type})")
        elif spec.default is not None:
            table[key] = copy.deepcopy(spec.default)
    return table


def _validate_parameters(raw, names: dict, file: str) -> dict:
    if raw is None:
        raise ParameterError(f"{file}: parameters", f"missing; every parameter needs a [parameters.<name>] "
                                                    f"table; parameters of this problem: {list(names)}")
    if not isinstance(raw, dict):
        raise ParameterError(f"{file}: parameters", f"must be a table of [parameters.<name>] tables")
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ParameterError(f"{file}: parameters.{unknown[0]}", f"unknown parameter; parameters of this "
                                                                 f"problem: {list(names)}")
    missing = [k for k in names if k not in raw]
    if missing:
        raise ParameterError(f"{file}: parameters.{missing[0]}", f"missing; add a [parameters.{missing[0]}] table "
                                                                 f"({names[missing[0]]}) with start = ...")
    out = {}
    for name in names:  # the problem's order
        where = f"{file}: parameters.{name}"
        entry = raw[name]
        if not isinstance(entry, dict):
            raise ParameterError(where, f"must be a table [parameters.{name}] with keys {sorted(PARAMETER_SCHEMA)}; "
                                        f"got {_tname(entry)}")
        p = _validate_table(entry, PARAMETER_SCHEMA, where, Path("."))
        transform = p["transform"]
        lo, hi = p.get("bounds", (-math.inf, math.inf))
        if "bounds" in p:
            if not lo < hi:
                raise ParameterError(f"{where}.bounds", f"lower must be < upper; got [{lo}, {hi}]")
        if transform == "log":
            if "bounds" not in p:
                lo, hi = 0.0, math.inf
            if not (math.isfinite(lo) and math.isinf(hi)):
                raise ParameterError(f"{where}.bounds", f"transform = \"log\" needs bounds [lo, inf] with finite lo; "
                                                        f"got [{lo}, {hi}]")
        if transform == "logit" and not (math.isfinite(lo) and math.isfinite(hi)):
            raise ParameterError(f"{where}.bounds", f"transform = \"logit\" needs finite bounds [lo, hi]; "
                                                    f"got [{lo}, {hi}]")
        if transform != "none" or "bounds" in p:
            p["bounds"] = [lo, hi]
        if p["estimate"]:
            if "start" not in p:
                raise ParameterError(f"{where}.start", "missing (required when estimate = true)")
            if "value" in p:
                raise ParameterError(f"{where}.value", "only for fixed parameters (estimate = false); use start")
            s = p["start"]
            if not lo < s < hi:  # the estimator maps bounds to an open interval (exp / logistic transform)
                raise ParameterError(f"{where}.start", f"must lie strictly inside bounds [{lo}, {hi}]; got {s}")
            if "start_box" in p:
                a, b = p["start_box"]
                if not (a < b and lo <= a and b <= hi):
                    raise ParameterError(f"{where}.start_box", f"must satisfy lo < hi inside bounds [{lo}, {hi}]; "
                                                               f"got [{a}, {b}]")
        else:
            if "value" not in p:
                raise ParameterError(f"{where}.value", "missing (required when estimate = false)")
            for k in ("start", "start_box"):
                if k in p:
                    raise ParameterError(f"{where}.{k}", "not allowed for a fixed parameter (estimate = false)")
        out[name] = p
    if not any(p["estimate"] for p in out.values()):
        raise ParameterError(f"{file}: parameters", "no parameter is estimated (every one has estimate = false)")
    return out


# ----------------------------------------------------------------------------------------------
# Loading configs and problem modules
# ----------------------------------------------------------------------------------------------

def resolve_problem(name: str, where: str = "calibration.problem"):
    """Import the problem named by ``[calibration] problem``: a registered name (:data:`PROBLEMS`),
    a dotted module path, or ``"module:attribute"`` (an object in a module that follows the
    protocol, e.g. a class with static methods, so one module can hold several problems)."""
    path = PROBLEMS.get(name)
    if path is None and "." not in name and ":" not in name:
        raise ParameterError(where, f"unknown problem {name!r}; registered problems: {sorted(PROBLEMS)} "
                                    "(or give a dotted module path)")
    path = path or name
    modname, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name is not None and modname.startswith(e.name):
            raise ParameterError(where, f"problem module {modname!r} not found (registered problems: "
                                        f"{sorted(PROBLEMS)})") from None
        raise
    if attr:
        if not hasattr(mod, attr):
            raise ParameterError(where, f"module {modname!r} has no problem {attr!r}")
        mod = getattr(mod, attr)
    if not callable(getattr(mod, "build_problem", None)) or not hasattr(mod, "PARAMETERS"):
        raise ParameterError(where, f"{path!r} does not follow the problem protocol (needs PARAMETERS "
                                    "and build_problem; see spatialjax.calibrate)")
    return mod


def _problem_schema(mod, name: str) -> dict:
    """The schema of a problem: the generic sections plus its ``CONFIG_SCHEMA``."""
    schema = getattr(mod, "CONFIG_SCHEMA", {}) or {}
    clash = set(schema) & (set(GENERIC_SCHEMA) | {"parameters"})
    if clash:
        raise ValueError(f"{name}: CONFIG_SCHEMA: redefines generic section(s) {sorted(clash)}")
    return {**GENERIC_SCHEMA, **schema}


def load_config(path) -> tuple[dict, dict, Any]:
    """Read and validate a config. Returns ``(raw, cfg, module)``: the config as read, the
    validated config with defaults, and the problem module. Writes nothing."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise ParameterError("CONFIG", f"{file}: config file not found")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ParameterError(file, f"not valid TOML: {str(e).splitlines()[0]}") from None
    cal = raw.get("calibration")
    if not isinstance(cal, dict):
        raise ParameterError(f"{file}: calibration", "missing table [calibration] with problem = \"...\"")
    name = GENERIC_SCHEMA["calibration"]["problem"].check(cal.get("problem"), f"{file}: calibration.problem") \
        if "problem" in cal else None
    if name is None:
        raise ParameterError(f"{file}: calibration.problem", f"missing; registered problems: {sorted(PROBLEMS)}")
    mod = resolve_problem(name, f"{file}: calibration.problem")
    cfg = validate_config(raw, _problem_schema(mod, name), file, parameters=mod.PARAMETERS, base_dir=path.parent)
    _check_estimation(cfg, file)
    kind = getattr(mod, "KIND", None)
    if kind is not None:
        _check_kind(cfg, kind, file)
    check = getattr(mod, "check_config", None)
    if check is not None:
        check(cfg, file)
    return raw, cfg, mod


def _check_estimation(cfg: dict, file: str) -> None:
    est = cfg["estimation"]
    cov = est.get("cov")
    if cov == "cluster" and "clusters" not in est:
        raise ParameterError(f"{file}: estimation.clusters", "missing (required when cov = \"cluster\")")
    if "clusters" in est and cov not in (None, "cluster"):
        raise ParameterError(f"{file}: estimation.cov", f"must be \"cluster\" (or omitted) when clusters is set; "
                                                        f"got {cov!r}")
    if "hac_lags" in est and cov != "hac":
        raise ParameterError(f"{file}: estimation.hac_lags", "only with cov = \"hac\"")
    if cov == "hac" and "hac_lags" not in est:
        raise ParameterError(f"{file}: estimation.hac_lags", "missing (required when cov = \"hac\")")
    if est.get("multistart", 1) > 1:
        no_box = [n for n, p in cfg["parameters"].items() if p["estimate"] and "start_box" not in p]
        if no_box:
            raise ParameterError(f"{file}: parameters.{no_box[0]}.start_box",
                                 "missing (required for every estimated parameter when estimation.multistart > 1)")


_MD_WEIGHTINGS = ("identity", "fixed", "two-step")


def _check_kind(cfg: dict, kind: str, file: str) -> None:
    """``[estimation]`` settings that a minimum-distance problem cannot take."""
    if kind not in ("micro", "minimum_distance"):
        raise ValueError(f"Problem kind must be 'micro' or 'minimum_distance'; got {kind!r}")
    if kind != "minimum_distance":
        return
    est = cfg["estimation"]
    for key in ("cov", "clusters", "hac_lags"):
        if key in est:
            raise ParameterError(f"{file}: estimation.{key}", "not used by a minimum-distance problem (the "
                                                              "covariance of the targets comes from the problem)")
    w = est.get("weighting")
    if w is not None and w not in _MD_WEIGHTINGS:
        raise ParameterError(f"{file}: estimation.weighting", f"for a minimum-distance problem must be one of "
                                                              f"{list(_MD_WEIGHTINGS)}; got {w!r}")


@dataclass
class ParameterSetup:
    """The ``[parameters.*]`` tables as the estimator needs them (see :func:`parameter_setup`).

    Attributes:
        names: every parameter, in the problem's order.
        estimated: the estimated ones, in that order.
        theta0: ``name -> start`` of the estimated parameters.
        fixed: ``name -> value`` of the fixed ones.
        bounds: ``name -> (lo, hi)`` of the estimated ones that have bounds (None for an open side).
        transforms: ``name -> "none" | "log" | "logit"``.
        true: ``name -> true value`` where the config gives one.
        start_box: ``name -> (lo, hi)`` of the multistart draws.
    """

    names: list[str]
    estimated: list[str]
    theta0: dict
    fixed: dict
    bounds: dict
    transforms: dict
    true: dict
    start_box: dict

    def full(self, theta: Mapping) -> dict:
        """All parameters, ``name -> value`` in the problem's order: ``theta`` (estimated) and the fixed values."""
        return {n: (theta[n] if n in theta else self.fixed[n]) for n in self.names}


def parameter_setup(cfg: Mapping) -> ParameterSetup:
    """Split the validated ``cfg["parameters"]`` into start values, fixed values, bounds and truths."""
    ps = cfg["parameters"]
    est = [n for n, p in ps.items() if p["estimate"]]

    def side(v):
        return None if math.isinf(v) else float(v)

    return ParameterSetup(
        names=list(ps), estimated=est,
        theta0={n: float(ps[n]["start"]) for n in est},
        fixed={n: float(p["value"]) for n, p in ps.items() if not p["estimate"]},
        bounds={n: (side(ps[n]["bounds"][0]), side(ps[n]["bounds"][1])) for n in est if "bounds" in ps[n]},
        transforms={n: p["transform"] for n, p in ps.items()},
        true={n: float(p["true"]) for n, p in ps.items() if "true" in p},
        start_box={n: tuple(ps[n]["start_box"]) for n in est if "start_box" in ps[n]},
    )


# ----------------------------------------------------------------------------------------------
# Fingerprint, output folder
# ----------------------------------------------------------------------------------------------

def _path_keys(schema: Mapping[str, Mapping[str, Spec]], cfg: Mapping):
    for section, specs in schema.items():
        for key, spec in specs.items():
            if spec.type == "path" and key in cfg.get(section, {}):
                yield f"{section}.{key}", cfg[section][key]


def config_fingerprint(cfg: Mapping, schema: Mapping[str, Mapping[str, Spec]], base_dir: Path) -> dict:
    """What a checkpoint belongs to: a SHA-256 of each config section (``[outputs]`` excluded: it
    does not change the estimation) and of the contents of each data file the config names."""
    parts = {}
    for section in sorted(cfg):
        if section == "outputs":
            continue
        blob = json.dumps(cfg[section], sort_keys=True, default=str).encode()
        parts[f"[{section}]"] = hashlib.sha256(blob).hexdigest()
    for key, rel in _path_keys(schema, cfg):
        p = Path(rel) if Path(rel).is_absolute() else base_dir / rel
        parts[f"file {key} = {rel}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return parts


def _check_output_dir(out: Path) -> None:
    """Raise ParameterError("--output") when ``out`` cannot be a writable directory. Creates nothing."""
    p = Path(os.path.abspath(out))
    if p.exists():
        if not p.is_dir():
            raise ParameterError("--output", f"{out} exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ParameterError("--output", f"{out} is not writable")
        return
    anc = p.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ParameterError("--output", f"cannot create {out}: {anc} is a file, not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ParameterError("--output", f"cannot create {out}: {anc} is not writable")


def _make_output_dir(out: Path) -> list[Path]:
    """Create ``out`` and missing parents; returns the folders created (outermost first).
    On failure removes them again and raises ParameterError("--output")."""
    p = Path(os.path.abspath(out))
    todo = []
    while not p.exists():
        todo.append(p)
        p = p.parent
    created = []
    try:
        for d in reversed(todo):
            d.mkdir()
            created.append(d)
        probe = Path(os.path.abspath(out)) / ".spatialjax-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        _remove_dirs(created)
        raise ParameterError("--output", f"cannot create or write {out}: {e.strerror or e}") from None
    return created


def _remove_dirs(created: list[Path]) -> None:
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


# ----------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------

def run_calibration(config_path, output_dir, *, resume: bool = False, progress: bool = True,
                    echo: bool = True):
    """Run the calibration that ``config_path`` describes and write its outputs to ``output_dir``.

    Steps: read and validate the config and the problem's data (nothing is written before
    everything is checked: a rejected run leaves no file and no folder); create ``output_dir``;
    write ``checkpoint/fingerprint.json``; estimate (:func:`spatialjax.gmm.estimate` or
    :func:`spatialjax.gmm.minimum_distance`) with a checkpoint ``checkpoint/gmm_state.json``
    written after every outer iteration; write ``estimates.json``, ``estimates.csv``,
    ``moments.csv``, ``sensitivity.csv``, ``hjdp.csv``, ``summary.txt`` (and Parquet copies when
    ``[outputs] formats`` asks), print the summary, then ``estimates.png`` and the problem
    module's ``report`` outputs. Every file is written atomically.

    Args:
        config_path: the TOML config (paths inside are relative to its folder).
        output_dir: output folder (created with its parents if missing).
        resume: continue from ``output_dir/checkpoint`` (refused, ``ParameterError("--resume")``,
            when the config or a data file changed since the checkpoint was written; without a
            checkpoint the run starts from the config's start values and says so on stderr).
        progress: progress display of the estimator (iteration, objective, gradient norm).
        echo: print the summary table to stdout.

    Returns:
        ``(result, written)``: the :class:`spatialjax.gmm.Result` and ``{label: path}`` of every
        file written.

    Raises:
        ParameterError: invalid config, data or output folder (naming ``file: section.key``).
    """
    config_path = Path(config_path)
    out = Path(output_dir)
    raw, cfg, mod = load_config(config_path)
    file = str(config_path)
    name = cfg["calibration"]["problem"]
    schema = _problem_schema(mod, name)
    _check_output_dir(out)
    ckpt_dir = out / CHECKPOINT_DIR
    state, fp_file = ckpt_dir / _STATE_FILE, ckpt_dir / _FINGERPRINT_FILE
    fingerprint = {"problem": name, "config": file, "parts": config_fingerprint(cfg, schema, config_path.parent)}
    resuming = False
    if resume:
        if fp_file.is_file() and state.is_file():
            try:
                old = json.loads(fp_file.read_text())
            except (OSError, ValueError) as e:
                raise ParameterError("--resume", f"{fp_file} is not readable ({e}); run without --resume") from None
            changed = sorted(k for k in set(old.get("parts", {})) | set(fingerprint["parts"])
                             if old.get("parts", {}).get(k) != fingerprint["parts"].get(k))
            if changed or old.get("problem") != name:
                raise ParameterError("--resume", f"the checkpoint in {ckpt_dir} was written for a different config "
                                                 f"(changed: {', '.join(changed) or 'problem'}); run without --resume "
                                                 "to start over")
            resuming = True
        else:
            print(f"spatialjax: no checkpoint in {ckpt_dir}; starting from the config's start values",
                  file=sys.stderr)

    problem = mod.build_problem(cfg, config_path.parent)
    if not isinstance(problem, Problem):
        raise TypeError(f"{name}: build_problem must return spatialjax.calibrate.Problem; "
                        f"got {type(problem).__name__}")
    setup = parameter_setup(cfg)
    call = _estimator_call(problem, cfg, setup, file)

    from spatialjax import atomic, gmm

    created = _make_output_dir(out)
    try:
        if not resuming:
            with contextlib.suppress(FileNotFoundError):
                state.unlink()
        atomic.write_json(fp_file, fingerprint)
        options = dict(call["options"])
        options.update(progress=progress, checkpoint=str(state), resume=resuming)
        if problem.kind == "micro":
            result = gmm.estimate(problem.moments, problem.theta0, problem.data, weighting=call["weighting"],
                                  cov=call["cov"], clusters=call["clusters"], bounds=call["bounds"],
                                  options=options)
        else:
            result = gmm.minimum_distance(problem.moments, problem.theta0, problem.m_hat, W=call["W"],
                                          cov_m_hat=problem.cov_m_hat, bounds=call["bounds"], options=options)
    except BaseException as e:
        # Rejected by the estimator's own input checks, or stopped before its first checkpoint:
        # leave nothing behind. (Stopped later: the checkpoint stays, for --resume.)
        if isinstance(e, ParameterError) or not state.exists():
            if not resuming:
                for f in (fp_file, state):
                    with contextlib.suppress(OSError):
                        f.unlink()
                with contextlib.suppress(OSError):
                    ckpt_dir.rmdir()
            _remove_dirs(created)
        raise
    written = write_outputs(problem, result, cfg, raw, setup, call, out, file=file, echo=echo)
    if cfg["outputs"]["plots"]:
        written["estimates.png"] = plot_estimates(result, setup, out / "estimates.png",
                                                  title=cfg["calibration"]["title"] or name)
    rep = getattr(mod, "report", None)
    if rep is not None:
        written.update(rep(problem, result, out, progress=progress) or {})
    written["checkpoint"] = state
    return result, written


def _estimator_call(problem: Problem, cfg: dict, setup: ParameterSetup, file: str) -> dict:
    """Map ``[estimation]`` (over the problem's defaults in ``Problem.estimator``) to the
    estimator's arguments; raise ParameterError for settings the problem cannot take."""
    import numpy as np

    est = dict(cfg["estimation"])
    base = dict(problem.estimator)
    base_opts = dict(base.pop("options", {}) or {})
    where = f"{file}: estimation"
    weighting = est.get("weighting", base.get("weighting", "two-step"))
    clusters_col = est.get("clusters")
    W = None
    _check_kind({"estimation": dict(est, weighting=weighting)}, problem.kind, file)
    if problem.kind == "minimum_distance":
        if weighting == "fixed":
            W = problem.W
        elif weighting == "identity":
            W = np.eye(len(np.asarray(problem.m_hat)))
        elif weighting == "two-step":  # efficient: W = cov_m_hat^{-1}
            if problem.cov_m_hat is None:
                raise ParameterError(f"{where}.weighting", "\"two-step\" (efficient, W = cov(m_hat)^-1) needs the "
                                                           "covariance of the targets; this problem has none: use "
                                                           "\"fixed\" or \"identity\"")
        if weighting == "fixed" and W is None:
            raise ParameterError(f"{where}.weighting", "\"fixed\" needs a weighting matrix from the problem; "
                                                       "this problem has none")
        cov, clusters = None, None
    else:
        cov = est.get("cov") or ("cluster" if clusters_col else base.get("cov", "robust"))
        clusters = base.get("clusters") if cov == "cluster" else None
        if clusters_col is not None:
            if problem.columns is None:
                raise ParameterError(f"{where}.clusters", "this problem has no per-observation columns to cluster on")
            cols = list(problem.columns.columns) if hasattr(problem.columns, "columns") else list(problem.columns)
            if clusters_col not in cols:
                raise ParameterError(f"{where}.clusters", f"column {clusters_col!r} not in data file "
                                                          f"{problem.data_file or '(the problem data)'}; columns: {cols}")
            clusters = np.asarray(problem.columns[clusters_col])
        if cov == "cluster" and clusters is None:
            raise ParameterError(f"{where}.clusters", "missing (required when cov = \"cluster\")")
        if weighting == "fixed":
            if problem.W is None and "W" not in base_opts:
                raise ParameterError(f"{where}.weighting", "\"fixed\" needs a weighting matrix from the problem; "
                                                           "this problem has none")
            if problem.W is not None:
                base_opts["W"] = problem.W
        else:
            base_opts.pop("W", None)
    options = dict(base_opts)
    for key in ("optimizer", "max_iter", "gtol", "xtol", "ftol", "gn_tol", "multistart", "hac_lags", "jacobian"):
        if key in est:
            options[key] = est[key]
    if "small_sample" in est:
        if not est["small_sample"]:
            options.pop("df_correction", None)
        elif options.get("df_correction") is None:
            options["df_correction"] = 0
    if options.get("multistart", 1) > 1:
        options["start_box"] = {n: setup.start_box[n] for n in setup.estimated}
        options["seed"] = cfg["calibration"]["seed"]
    true = {n: v for n, v in (problem.true_params or {}).items() if n in setup.estimated}
    true.update({n: v for n, v in setup.true.items() if n in setup.estimated})
    if true:  # a column in the estimator's tables (NaN where not given)
        options["true_params"] = true
    if problem.moment_names is not None:
        options["moment_names"] = list(problem.moment_names)
    bounds = problem.bounds if problem.bounds is not None else (setup.bounds or None)
    return {"weighting": weighting, "cov": cov, "clusters": clusters, "clusters_column": clusters_col,
            "bounds": bounds, "options": options, "W": W}


def _as_float(x):
    import numpy as np

    try:
        return float(np.asarray(x))
    except (TypeError, ValueError):
        return None


def _n_obs(problem: Problem):
    if problem.n_obs is not None:
        return int(problem.n_obs)
    if problem.kind != "micro":
        return None
    import jax

    leaves = jax.tree_util.tree_leaves(problem.data)
    return int(leaves[0].shape[0]) if leaves and getattr(leaves[0], "ndim", 0) else None


def estimates_table(result, setup: ParameterSetup):
    """A DataFrame with one row per parameter (the problem's order): estimate, se, t, the
    confidence interval at the estimator's level (95% by default), true value, fixed."""
    import pandas as pd

    idx = {n: i for i, n in enumerate(result.param_names)}
    rows = []
    for n in setup.names:
        if n in setup.estimated and n in idx:
            i = idx[n]
            rows.append({"parameter": n, "estimate": float(result.theta[i]), "se": float(result.se_flat[i]),
                         "t": float(result.tstat[i]), "ci_low": float(result.ci_low[i]),
                         "ci_high": float(result.ci_high[i]), "true": setup.true.get(n, math.nan), "fixed": False})
        else:
            rows.append({"parameter": n, "estimate": setup.fixed.get(n, math.nan), "se": math.nan, "t": math.nan,
                         "ci_low": math.nan, "ci_high": math.nan, "true": setup.true.get(n, math.nan),
                         "fixed": True})
    return pd.DataFrame(rows)


def write_outputs(problem: Problem, result, cfg: dict, raw: dict, setup: ParameterSetup, call: dict, out: Path,
                  *, file: str, echo: bool = True) -> dict:
    """Write ``estimates.json/.csv``, ``moments.csv``, ``sensitivity.csv``, ``hjdp.csv`` and ``summary.txt``
    atomically (``estimates.json`` last) and print the summary. Returns ``{label: path}``."""
    import numpy as np
    import pandas as pd

    import spatialjax
    from spatialjax import atomic

    written: dict[str, Path] = {}
    formats = cfg["outputs"]["formats"]

    def table(stem, df):
        for fmt in formats:
            written[f"{stem}.{fmt}"] = atomic.write_frame(out / f"{stem}.{fmt}", df)

    est = estimates_table(result, setup)
    table("estimates", est)
    names = list(result.moment_names)
    table("moments", result.moments_frame())
    order = [n for n in setup.estimated if n in result.param_names]
    sens = result.sensitivity_frame().loc[order]
    sens.index.name = "parameter"
    table("sensitivity", sens.reset_index())
    rem, noise = result.hjdp_frame("remove").loc[order], result.hjdp_frame("noise").loc[order]
    table("hjdp", pd.DataFrame([{"parameter": pn, "moment": mn, "remove": rem.loc[pn, mn], "noise": noise.loc[pn, mn]}
                                for pn in order for mn in names]))

    title = cfg["calibration"]["title"] or cfg["calibration"]["problem"]
    header = [title, f"config: {file}", f"problem: {cfg['calibration']['problem']}",
              f"weighting: {result.weighting}"
              + (f", covariance: {result.cov_type}" if result.cov_type else "")
              + (f" (clusters: {call['clusters_column']})" if call["clusters_column"] else "")]
    if setup.fixed:
        header.append("fixed: " + ", ".join(f"{k} = {v:g}" for k, v in setup.fixed.items()))
    text = "\n".join(header) + "\n\n" + str(result.summary()) + "\n"
    written["summary.txt"] = atomic.write_text(out / "summary.txt", text)

    params = {}
    for r in est.to_dict("records"):
        n = r.pop("parameter")
        if math.isnan(r["true"]):
            r.pop("true")
        params[n] = r
    doc = {
        "parameters": params,
        "J": _as_float(result.J), "J_df": int(result.J_df) if result.J_df is not None else None,
        "J_pvalue": _as_float(result.J_pvalue),
        "converged": bool(result.converged), "status": str(result.status), "message": result.message,
        "weak_identification": {"flag": bool(result.weak_identification.get("flag")),
                                "direction": result.weak_identification.get("text", "")},
        "weighting": result.weighting, "cov": result.cov_type, "clusters": call["clusters_column"],
        "n_obs": _n_obs(problem) if result.n_obs is None else int(result.n_obs), "n_moments": len(names),
        "level": float(result.level), "objective": _as_float(result.objective),
        # small-sample inference (gmm df_correction): {"n", "p", "K", "df", "scale"} or null (asymptotic)
        "small_sample": result.small_sample,
        "convergence": {k: result.convergence.get(k) for k in ("optimizer", "iterations", "stop_reason",
                                                                 "n_objective_evals", "n_failed_evals", "stages",
                                                                 "multistart")},
        "cov_params": {"parameters": list(result.param_names), "matrix": np.asarray(result.cov, dtype=float)},
        "problem": cfg["calibration"]["problem"], "title": cfg["calibration"]["title"],
        "config_file": file, "config": raw,
        "spatialjax_version": spatialjax.__version__,
    }
    written["estimates.json"] = atomic.write_json(out / "estimates.json", doc)
    if echo:
        print(text, flush=True)
    return written


def plot_estimates(result, setup: ParameterSetup, path: Path, *, title: str = "") -> Path:
    """One row per estimated parameter: the estimate with its 95% interval, and the true value
    (x) when the config gives one. Written atomically to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spatialjax import atomic

    est = estimates_table(result, setup)
    est = est[~est["fixed"]].reset_index(drop=True)
    k = len(est)
    fig, axes = plt.subplots(k, 1, figsize=(6.0, 0.9 + 0.9 * k), squeeze=False)
    for ax, r in zip(axes[:, 0], est.to_dict("records")):
        e, lo, hi = r["estimate"], r["ci_low"], r["ci_high"]
        if math.isfinite(lo):
            ax.errorbar([e], [0], xerr=[[e - lo], [hi - e]], fmt="o", color="C0", capsize=4, label="estimate, 95% CI")
        else:
            ax.plot([e], [0], "o", color="C0", label="estimate (no SE)")
        if math.isfinite(r["true"]):
            ax.plot([r["true"]], [0], "x", color="C3", ms=10, mew=2, label="true")
        ax.set_yticks([0])
        ax.set_yticklabels([r["parameter"]])
        ax.set_ylim(-1, 1)
        ax.margins(x=0.3)
    h, lab = [], []
    for ax in axes[:, 0]:
        for hh, ll in zip(*ax.get_legend_handles_labels()):
            if ll not in lab:
                h.append(hh)
                lab.append(ll)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if k > 1 else 0.18, 1, 1))
    fig.legend(h, lab, loc="lower center", ncol=len(lab), fontsize=8, frameon=False)
    atomic.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)
