"""Model-free calibration problems: the worked examples of ``calibration/`` (issue 9).

* :class:`LinearIV` (``problem = "linear_iv"``): linear instrumental-variables GMM on a data
  file. Model ``y_i = x_i' beta + e_i`` with instruments ``z_i`` and moment conditions
  ``E[z_i (y_i - x_i' beta)] = 0``, so ``g_i(beta) = z_i (y_i - x_i' beta)`` (``k`` = number of
  instruments, ``p`` = number of regressors, ``k >= p``). The two-step efficient GMM estimate has
  the closed form ``beta = (X'Z W Z'X)^{-1} X'Z W Z'y`` with ``W = S(beta_1)^{-1}``,
  ``S = (1/n) sum_i g_i g_i'`` (Hansen 1982; Hayashi 2000, eq. 3.5.12), which the tests check.
  Parameters are named after the regressors (``const`` for the intercept).
* :class:`ToyEquilibrium` (``problem = "toy_equilibrium"``): minimum distance on the solved
  allocation of a small spatial equilibrium (below), so the moment Jacobian is an implicit
  derivative through :func:`spatialjax.solver.solve_root`. The data are simulated from the
  config's ``true`` values (a simulation study).

Each problem is a class following the protocol of :mod:`spatialjax.calibrate` (``CONFIG_SCHEMA``,
``PARAMETERS``, ``check_config``, ``build_problem``, ``report``), registered in
:data:`spatialjax.calibrate.PROBLEMS` as ``"module:Class"``.
"""

from __future__ import annotations

from pathlib import Path

from spatialjax.calibrate import Problem, Spec, parameter_setup
from spatialjax.errors import ParameterError

__all__ = ["LinearIV", "ToyEquilibrium"]

CONST = "const"


class LinearIV:
    """Linear IV by GMM: ``g_i(beta) = z_i (y_i - x_i' beta)`` on the rows of ``[data] file``."""

    KIND = "micro"

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


class ToyEquilibrium:
    """Minimum distance on a toy spatial equilibrium with ``J`` regions (logit location choice).

    Region ``j`` has observed characteristics ``x_j`` (productivity shifter) and ``z_j``
    (amenity), drawn once from N(0, 1) with ``[simulation] seed``. With population ``L_j``:

        (T1)  log w_j = a0 + a1 x_j - alpha log L_j                  (wages; alpha > 0 congestion)
        (T2)  V_j     = log w_j + c z_j - beta log L_j               (utility; beta > 0 housing)
        (T3)  L_j     = Lbar exp(kappa V_j) / sum_k exp(kappa V_k)   (logit choice, kappa > 0)

    The equilibrium solves ``F(y) = y - log Lbar - kappa V(y) + logsumexp(kappa V(y)) = 0`` in
    ``y = log L`` (:func:`spatialjax.solver.solve_root`, Newton); its Jacobian
    ``I + kappa (alpha + beta) (I - 1 s')`` (``s`` the shares) is regular for
    ``kappa (alpha + beta) > 0``, so the equilibrium is unique. The moments are the solved
    allocation ``m(theta) = (log L*, log w*)`` (``2J`` values); the targets are the mean of
    ``R`` noisy observations ``o_r = m(theta_true) + sd * eps_r`` and their covariance is estimated
    from the observations (``cov_m_hat = {"data": o}``, so the efficient W is ``cov^{-1}``).
    A failed inner solve returns ``ok = False`` and the estimator rejects that evaluation.
    """

    KIND = "minimum_distance"

    CONFIG_SCHEMA = {
        "model": {
            "regions": Spec("int", default=8, range=(2, 200), description="number of regions J"),
            "Lbar": Spec("float", default=1.0, range=(0, None), open=True, description="total population"),
        },
        "simulation": {
            "replications": Spec("int", default=200, range=(2, None), description="noisy observations R"),
            "noise_sd": Spec("float", default=0.05, range=(0, None), open=True,
                             description="standard deviation of the observation noise"),
            "seed": Spec("int", default=0, range=(0, None), description="seed of characteristics and noise"),
        },
    }

    PARAMETERS = {
        "a0": "wage intercept (T1)",
        "a1": "wage loading on productivity x (T1)",
        "alpha": "wage congestion elasticity (T1), > 0",
        "beta": "housing congestion elasticity (T2), > 0",
        "c": "amenity loading on z (T2)",
        "kappa": "location-choice elasticity (T3), > 0",
    }

    @staticmethod
    def check_config(cfg: dict, file: str) -> None:
        for n, p in cfg["parameters"].items():
            if "true" not in p:
                raise ParameterError(f"{file}: parameters.{n}.true", "missing: the data are simulated from the "
                                                                     "true values (required for every parameter)")
        if cfg["estimation"].get("weighting") == "fixed":
            raise ParameterError(f"{file}: estimation.weighting", "\"fixed\" needs a weighting matrix; this problem "
                                                                  "has none (use \"two-step\" or \"identity\")")
        k, n_est = 2 * cfg["model"]["regions"], sum(p["estimate"] for p in cfg["parameters"].values())
        if k < n_est:
            raise ParameterError(f"{file}: model.regions", f"{k} moments for {n_est} parameters: under-identified")

    @staticmethod
    def characteristics(regions: int, seed: int):
        import numpy as np

        rng = np.random.default_rng(seed)
        return rng.standard_normal(regions), rng.standard_normal(regions), rng

    @staticmethod
    def residual(y, args):
        """``F(y)`` of the equilibrium (T1)-(T3) in ``y = log L``."""
        import jax.numpy as jnp
        from jax.scipy.special import logsumexp

        th, x, z, Lbar = args
        logw = th["a0"] + th["a1"] * x - th["alpha"] * y
        V = logw + th["c"] * z - th["beta"] * y
        return y - jnp.log(Lbar) - th["kappa"] * V + logsumexp(th["kappa"] * V)

    @classmethod
    def solve(cls, theta: dict, x, z, Lbar):
        """Solve the equilibrium; returns ``(log L*, log w*, SolveResult)``."""
        import jax.numpy as jnp

        from spatialjax.solver import solve_root

        y0 = jnp.full(x.shape, jnp.log(Lbar / x.shape[0]))
        sol = solve_root(cls.residual, y0, (theta, x, z, Lbar), tol=1e-12, max_steps=60)
        y = sol.value
        return y, theta["a0"] + theta["a1"] * x - theta["alpha"] * y, sol

    @classmethod
    def build_problem(cls, cfg: dict, base_dir: Path) -> Problem:
        import jax.numpy as jnp
        import numpy as np

        J, Lbar = cfg["model"]["regions"], cfg["model"]["Lbar"]
        sim = cfg["simulation"]
        x, z, rng = cls.characteristics(J, sim["seed"])
        x, z = jnp.asarray(x), jnp.asarray(z)
        setup = parameter_setup(cfg)
        true = {n: jnp.asarray(v) for n, v in setup.true.items()}
        yt, lwt, sol = _jitted_solve()(true, x, z, Lbar)
        if not bool(sol.converged):
            raise ParameterError("parameters.*.true", f"the equilibrium at the true values did not solve "
                                                      f"(status {sol.status}, residual {float(sol.residual):.2e})")
        m_true = np.concatenate([np.asarray(yt), np.asarray(lwt)])
        obs = m_true + sim["noise_sd"] * rng.standard_normal((sim["replications"], 2 * J))

        def m(theta):
            y, lw, s = cls.solve(setup.full(theta), x, z, Lbar)
            return jnp.concatenate([y, lw]), s.converged

        names = [f"log L_{j + 1}" for j in range(J)] + [f"log w_{j + 1}" for j in range(J)]
        return Problem(kind="minimum_distance", moments=m, theta0=setup.theta0, m_hat=obs.mean(axis=0),
                       cov_m_hat={"data": obs}, bounds=setup.bounds or None, moment_names=names,
                       true_params=setup.true, fixed=setup.fixed, n_obs=sim["replications"],
                       meta={"x": np.asarray(x), "z": np.asarray(z), "m_true": m_true, "observations": obs})


_JITTED: dict = {}


def _jitted_solve():
    """``ToyEquilibrium.solve`` under ``equinox.filter_jit``, created once (so repeated builds of
    the problem reuse one compilation)."""
    if "solve" not in _JITTED:
        import equinox as eqx

        _JITTED["solve"] = eqx.filter_jit(ToyEquilibrium.solve)
    return _JITTED["solve"]
