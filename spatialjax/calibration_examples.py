"""Model-free calibration problems: the worked examples of ``calibration/`` (issue 9).

* :class:`LinearIV` (``problem = "linear_iv"``): linear instrumental-variables GMM on a data
  file. Model ``y_i = x_i' beta + e_i`` with instruments ``z_i`` and moment conditions
  ``E[z_i (y_i - x_i' beta)] = 0``, so ``g_i(beta) = z_i (y_i - x_i' beta)`` (``k`` = number of
  instruments, ``p`` = number of regressors, ``k >= p``). The two-step efficient GMM estimate has
  the closed form ``beta = (X'Z W Z'X)^{-1} X'Z W Z'y`` with ``W = S(beta_1)^{-1}``,
  ``S = (1/n) sum_i g_i g_i'`` (Hansen 1982; Hayashi 2000, eq. 3.5.12), which the tests check.
  Parameters are named after the regressors (``const`` for the intercept).

Each problem is a class following the protocol of :mod:`spatialjax.calibrate` (``CONFIG_SCHEMA``,
``PARAMETERS``, ``check_config``, ``build_problem``, ``report``), registered in
:data:`spatialjax.calibrate.PROBLEMS` as ``"module:Class"``.
"""

from __future__ import annotations

from pathlib import Path

from spatialjax.calibrate import Problem, Spec, parameter_setup
from spatialjax.errors import ParameterError

__all__ = ["LinearIV"]

CONST = "const"


class LinearIV:
    """Linear IV by GMM: ``g_i(beta) = z_i (y_i - x_i' beta)`` on the rows of ``[data] file``."""

    CONFIG_SCHEMA = {
        "data": {
            "file": Spec("path", required=True, description="CSV or Parquet file, one row per observation"),
            "outcome": Spec("str", required=True, description="column of y"),
            "regressors": Spec("list[str]", required=True, description="columns of x (parameters are named after them)"),
            "instruments": Spec("list[str]", required=True,
                                description="columns of z: the exogenous regressors and the excluded instruments"),
            "constant": Spec("bool", default=True,
                             description="add an intercept ('const') to the regressors and to the instruments"),
        },
    }

    @staticmethod
    def PARAMETERS(cfg: dict) -> dict:  # noqa: N802 (protocol name)
        d = cfg["data"]
        names = ([CONST] if d["constant"] else []) + list(d["regressors"])
        return {n: ("intercept" if n == CONST else f"coefficient on {n}") for n in names}

    @staticmethod
    def check_config(cfg: dict, file: str) -> None:
        d = cfg["data"]
        for key in ("regressors", "instruments"):
            cols = d[key]
            if not cols and not (key == "regressors" and d["constant"]):
                raise ParameterError(f"{file}: data.{key}", "must name at least one column")
            dup = sorted({c for c in cols if cols.count(c) > 1})
            if dup:
                raise ParameterError(f"{file}: data.{key}", f"columns listed twice: {dup}")
            if d["constant"] and CONST in cols:
                raise ParameterError(f"{file}: data.{key}", f"{CONST!r} is added by constant = true; remove it")
        p = len(d["regressors"]) + d["constant"]
        k = len(d["instruments"]) + d["constant"]
        if k < p:
            raise ParameterError(f"{file}: data.instruments", f"under-identified: {k} instruments for {p} "
                                                              "regressors (need at least as many)")

    @staticmethod
    def build_problem(cfg: dict, base_dir: Path) -> Problem:
        import jax.numpy as jnp
        import numpy as np

        from spatialjax.io import read_table

        d = cfg["data"]
        path = Path(d["file"]) if Path(d["file"]).is_absolute() else Path(base_dir) / d["file"]
        cols = list(dict.fromkeys([d["outcome"], *d["regressors"], *d["instruments"]]))
        df = read_table(path, {c: "float" for c in cols})
        n = len(df)
        ones = [np.ones(n)] if d["constant"] else []
        X = np.column_stack(ones + [df[c].to_numpy(float) for c in d["regressors"]])
        Z = np.column_stack(ones + [df[c].to_numpy(float) for c in d["instruments"]])
        if n <= Z.shape[1]:
            raise ParameterError(f"{path.name}", f"{n} rows for {Z.shape[1]} moments: need more observations")
        setup = parameter_setup(cfg)
        names = setup.names

        def g(theta, data):
            beta = jnp.stack([jnp.asarray(v, dtype=jnp.float64) for v in setup.full(theta).values()])
            e = data["y"] - data["X"] @ beta
            return data["Z"] * e[:, None]

        zn = ([CONST] if d["constant"] else []) + list(d["instruments"])
        return Problem(kind="micro", moments=g, theta0=setup.theta0,
                       data={"y": jnp.asarray(df[d["outcome"]].to_numpy(float)), "X": jnp.asarray(X),
                             "Z": jnp.asarray(Z)},
                       bounds=setup.bounds or None, moment_names=[f"E[{z}*e]" for z in zn],
                       true_params=setup.true or None, fixed=setup.fixed, columns=df, data_file=path.name,
                       n_obs=n, meta={"regressors": names, "instruments": zn})
