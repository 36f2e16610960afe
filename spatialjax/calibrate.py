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
* ``build_problem(cfg: dict, base_dir: pathlib.Path) -> Problem`` — ``cfg`` is the whole
  validated config (``cfg["parameters"]`` holds the per-parameter start/bounds/fixed
  entries); paths in the config are relative to ``base_dir`` (the config's folder).
* ``report(problem: Problem, result, outdir: pathlib.Path, *, progress: bool) -> dict[str, pathlib.Path]``
  — optional: writes the problem's own outputs (counterfactual tables, plots) with
  :mod:`spatialjax.atomic` and returns ``{label: path}``.

The complete config schema and the runner are documented in ``calibration/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Problem", "PROBLEMS"]

# name -> module path; imported only when a config asks for it (generic code imports no model).
PROBLEMS: dict[str, str] = {
    "jiao_tian": "spatialjax.models.jiao_tian_calibration",
    "oh": "spatialjax.models.oh.estimation",
}


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
        estimator: keyword arguments for the estimator (``weighting``, ``cov``, ``clusters``, ``options``).
        moment_names: one label per moment, for every table.
        true_params: the data-generating values when the data are simulated (a column in the tables).
        fixed: parameters held fixed, ``name -> value`` (reported, not estimated).
        meta: anything the problem's ``report`` needs later (baseline solutions, frames, ...).
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
