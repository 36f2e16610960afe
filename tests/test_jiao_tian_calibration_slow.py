"""Slow Jiao-Tian calibration tests (``pytest -m slow``): the full-solution mode on the 60-city
replica built from ``calibration/jiao_tian_full_solution60.toml`` (one problem and one fit per
module, shared by the config, recovery and implicit-gradient tests), parametric housing in the
full-solution mode (moments and an estimation), and a small Monte Carlo over replica seeds for the
coverage of the inversion-mode confidence intervals (the larger study, with the decomposition of
the shortfall, is ``benchmarks/mc_jiao_tian_coverage.py``).

Cost: compilation dominates (the full-solution moments, their gradient and the estimator's
Jacobian each compile once per module; conftest drops JAX's caches between modules), so the
three full-solution tests share one build and one fit, and the Monte Carlo's inversion-mode
estimates reuse the estimator's compiled functions of the config build's inversion-mode first
step (same moment function, shapes and bounds).
"""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spatialjax  # noqa: F401  (x64)
from spatialjax import gmm
from spatialjax.models import jiao_tian_calibration as jc
from spatialjax.models import jiao_tian_data as jd

pytestmark = pytest.mark.slow

T_SHIFTERS = ("log_population", "productivity_shifter")
START = dict(theta=3.5, gamma=0.02, delta_d=0.3, delta_I=0.0)
BOUNDS = {"theta": (2.2, 20.0), "gamma": (0.0, 0.2)}
CONFIG = pathlib.Path(__file__).parents[1] / "calibration" / "jiao_tian_full_solution60.toml"


@pytest.fixture(scope="module")
def fs60():
    """calibration/jiao_tian_full_solution60.toml loaded and built (inversion-mode first step,
    feasible-start check) and estimated with the config's estimation options, as the CLI does."""
    from spatialjax import calibrate

    raw, cfg, mod = calibrate.load_config(CONFIG)
    pr = mod.build_problem(cfg, CONFIG.parent)
    est = cfg["estimation"]
    opts = dict(pr.estimator["options"], moment_names=pr.moment_names,
                **{k: est[k] for k in ("optimizer", "max_iter", "gtol", "xtol", "gn_tol") if est.get(k) is not None})
    jc.clear_warm_cache()
    r = gmm.estimate(pr.moments, pr.theta0, pr.data, weighting=est.get("weighting", "two-step"), bounds=pr.bounds,
                     options=opts)
    return dict(cfg=cfg, problem=pr, result=r, stats=jc.warm_cache_stats())


def test_full_solution60_config_builds(fs60):
    """calibration/jiao_tian_full_solution60.toml validates and builds a full-solution problem
    (parametric technology pi_*, inverted housing, no rho_*) with a feasible start."""
    cfg, pr = fs60["cfg"], fs60["problem"]
    assert cfg["model"]["mode"] == "full-solution" and cfg["model"]["housing"] == "inverted"
    assert pr.meta["mode"] == "full-solution" and pr.meta["rho_names"] == ()
    assert set(pr.theta0) == set(jc.PARAM_NAMES) | {"pi_const", "pi_log_population", "pi_productivity_shifter"}
    assert pr.meta["start_feasible"], pr.meta["start_gamma_shrinks"]
    # 3 gravity/income moments + (1 + 5 instruments) x (L^m, L^p, w)
    assert len(pr.moment_names) == 3 + 6 * 3 and pr.moment_names[3] == "E[1 (log Lm data - model)]"


def test_full_solution_recovery_replica60(fs60):
    """Every objective evaluation solves the 60-city equilibrium (warm start from the previous
    evaluation, homotopy from the data-inverted economy otherwise); estimates of theta, gamma,
    delta^d within 2 SE of the truth, delta^I within 2.5 SE.

    replica60 (jiao_tian_data.generate_replica, seed 60) draws delta^I high in its link counts:
    the inversion mode on the same data puts it at 2.18 SE (test_jiao_tian_calibration.py), and
    the full-solution mode, whose delta^I comes from the same PPML gravity scores, at 2.01 SE
    (0.0102 +- 0.0101 vs -0.010, measured 2026-12-03); hence the 2.5-SE bound for delta^I, as
    there. Inner solves are counted: measured (CLI run of the same config) 421 objective
    evaluations, 2 failed."""
    pr, r, stats = fs60["problem"], fs60["result"], fs60["stats"]
    assert r.converged, r.summary()
    print("warm-cache stats", stats, "gamma-start shrinks", pr.meta["start_gamma_shrinks"],
          "evaluations", r.convergence.get("n_objective_evals"), "failed", r.convergence.get("n_failed_evals"))
    # failed inner solves are counted, by the cache and by the estimator, and are few
    assert stats["failed"] >= 0 and stats["warm"] + stats["homotopy"] > 10 * max(stats["failed"], 1), stats
    assert r.convergence["n_failed_evals"] < 0.05 * r.convergence["n_objective_evals"], r.convergence
    assert r.J_df == 21 - 7 and r.J_pvalue > 0.001
    tv = jc.true_values(pr.meta["data"])
    bound = {"theta": 2.0, "gamma": 2.0, "delta_d": 2.0, "delta_I": 2.5}
    for k in jc.PARAM_NAMES:
        est, se = float(r.params[k]), float(r.se[k])
        assert np.isfinite(se) and se > 0
        assert abs(est - tv[k]) < bound[k] * se, f"{k}: {est} vs truth {tv[k]} (se {se})"


def test_full_solution_G_matches_finite_differences(fs60):
    """G (implicit differentiation through jt.solve, as the estimator computes it) equals central
    differences of the re-solved mean moments at the estimates (warm re-solves), for the
    structural parameters and a technology coefficient: rtol 1e-4 (the differences' error is
    ~1e-6 relative at h = 1e-6; the solves' tolerance is 1e-10). The same compiled function gives
    the solved equilibrium at the estimates: a regular root whose L^m tracks the data."""
    pr, r = fs60["problem"], fs60["result"]
    fixed = {k: jnp.asarray(v) for k, v in pr.meta["fixed"].items()}

    @jax.jit
    def run(p):
        g, ok, sol = jc.full_solution_moments({**fixed, **p}, pr.data, pi_names=pr.meta["pi_names"],
                                              return_solution=True)
        return g.mean(0), ok, sol.Lm

    f = lambda p: run(p)[0]  # noqa: E731
    p = {k: jnp.asarray(float(r.params[k])) for k in r.param_names}
    _, ok, Lm = run(p)
    assert bool(ok)
    assert np.corrcoef(np.log(np.asarray(Lm)), np.log(np.asarray(pr.data["Lm"])))[0, 1] > 0.95
    G = np.asarray(r.G)
    checked = 0
    for j, k in enumerate(r.param_names):
        if k not in ("theta", "gamma", "delta_I", "pi_log_population"):
            continue
        h = 1e-6 * max(1.0, abs(float(p[k])))
        fd = np.asarray((f({**p, k: p[k] + h}) - f({**p, k: p[k] - h})) / (2 * h))
        assert np.all(np.isfinite(fd)), k
        np.testing.assert_allclose(G[:, j], fd, rtol=1e-4, atol=1e-6 * np.max(np.abs(fd)), err_msg=k)
        checked += 1
    assert checked == 4


def test_full_solution_estimation_with_parametric_housing_recovers_the_truth():
    """A full-solution *estimation* with housing = "parametric" (log T_n = x' pi and log H_n = x^H' rho,
    9 parameters, 18 moments): on a 30-city stand-in with small fundamentals noise (xi_sd = 0.005;
    the mode matches moments that hold only up to O(var xi), see the module docstring) the fit
    converges and recovers theta, gamma, delta^d, delta^I, rho within 2.5 SE. Measured 2026-12-04:
    z = -0.40, 0.37, 2.11, 0.23, -0.25, 0.28; J = 2.51 (df 9); 260 inner solves, 1 failed (rejected and
    counted); 40 s. With the stand-in's default xi_sd = 0.05, gamma runs into its bound 0 and the fit
    stops not converged (reported, never a success)."""
    data, truth = jc.standin_replica(30, 1, xi_sd=0.005)
    pr = jc.problem_from_data(data, mode="full-solution", housing="parametric", technology_shifters=("z1", "z2"),
                              housing_shifters=("h1", "h2"), theta0=START, bounds=BOUNDS)
    assert pr.meta["start_feasible"]
    r = gmm.estimate(pr.moments, pr.theta0, pr.data, bounds=pr.bounds, options=pr.estimator["options"])
    assert r.converged, (r.status, r.message)
    assert r.J_df == 9 and 0 <= r.J < 21.7  # chi2(9) 99th percentile
    tv = {**{k: truth[k] for k in jc.PARAM_NAMES}, "rho_h1": truth["rho"]["h1"], "rho_h2": truth["rho"]["h2"]}
    z = {k: (float(r.params[k]) - v) / float(r.se[k]) for k, v in tv.items()}
    assert all(abs(v) < 2.5 for v in z.values()), z
    st = jc.warm_cache_stats()
    assert st["failed"] <= 0.02 * (st["warm"] + st["homotopy"] + st["failed"]), st


def test_full_solution_parametric_housing_standin20():
    """housing = "parametric": log H_n = x^H_n' rho enters the solved economy. On a 20-city
    stand-in (log H exactly linear in h1, h2, rho = (0.4, 0.2)):

    * the rho start (OLS of the inverted (35) log H_n at the true parameters) recovers rho to 0.05;
    * at a rho moved away from the data's (+0.25, -0.15) the solved equilibrium is a regular root
      and clears the housing market at the *parametric* H: by worker indifference H_n is
      proportional to W_n / w_n^(1/(1-alpha)) (35) in any equilibrium, so log of the inverted H
      at the solved (W, w) minus x^H' rho is constant across cities (sd < 1e-8), while at the
      data it is not (sd > 0.05): rho is not ignored in favour of the data-inverted H;
    * the moments move with rho (central differences of the mean fit moments are nonzero).

    gamma is fixed at the truth (no gamma-shrink start check), so only this test's own function
    compiles."""
    data, truth = jc.standin_replica(20, 1)
    est = {k: truth[k] for k in ("theta", "delta_d", "delta_I")}
    pr = jc.problem_from_data(data, mode="full-solution", housing="parametric", technology_shifters=("z1", "z2"),
                              housing_shifters=("h1", "h2"), theta0=est, fixed={"gamma": truth["gamma"]},
                              start_from_inversion=False, warm_cache=False)
    assert pr.meta["housing"] == "parametric" and pr.meta["rho_names"] == ("rho_h1", "rho_h2")
    assert set(pr.theta0) == set(est) | {"pi_const", "pi_z1", "pi_z2", "rho_h1", "rho_h2"}
    rho0 = np.array([pr.theta0["rho_h1"], pr.theta0["rho_h2"]])
    np.testing.assert_allclose(rho0, [truth["rho"]["h1"], truth["rho"]["h2"]], atol=0.05)

    d = pr.data
    fixed = {k: jnp.asarray(v) for k, v in pr.meta["fixed"].items()}

    @jax.jit
    def run(th):
        g, ok, sol = jc.full_solution_moments({**fixed, **th}, d, pi_names=pr.meta["pi_names"],
                                              rho_names=pr.meta["rho_names"], warm_cache=False, return_solution=True)
        return g.mean(0), ok, sol.W, sol.w, jnp.max(jnp.abs(sol.solve.residual))

    th = {k: jnp.asarray(v) for k, v in pr.theta0.items()}
    th["rho_h1"] = th["rho_h1"] + 0.25
    th["rho_h2"] = th["rho_h2"] - 0.15
    gbar, ok, W, w, res = run(th)
    assert bool(ok) and float(res) < 1e-8, (bool(ok), float(res))
    logH_param = np.asarray(d["xH"]) @ np.array([float(th["rho_h1"]), float(th["rho_h2"])])
    alpha = pr.meta["alpha"]
    gap_solved = np.log(np.asarray(jc.invert_housing(alpha, W, w))) - logH_param
    gap_data = np.log(np.asarray(jc.invert_housing(alpha, jnp.asarray(data.W), jnp.asarray(data.w)))) - logH_param
    assert np.std(gap_solved) < 1e-8, np.std(gap_solved)
    assert np.std(gap_data) > 0.05, np.std(gap_data)
    h = 1e-5
    gp = np.asarray(run({**th, "rho_h1": th["rho_h1"] + h})[0])
    gm = np.asarray(run({**th, "rho_h1": th["rho_h1"] - h})[0])
    dg = (gp - gm) / (2 * h)
    assert np.all(np.isfinite(dg)) and np.max(np.abs(dg[3:])) > 1e-3, dg
    assert np.max(np.abs(dg[:3])) == 0.0  # gravity and income moments do not involve H


def test_monte_carlo_coverage_inversion_mode(tmp_path_factory):
    """Inversion mode over 4 replica seeds (jiao_tian_data.generate_replica on the 60 largest
    clusters): 16 nominal-95% intervals. Under independence the number covering the truth is
    Binomial(16, 0.95) (mean 15.2); P(X <= 12) = 0.007, so >= 13 is required (the four intervals
    of one seed are correlated, which widens the band; the test is deliberately loose). The SEs
    must also match the spread of the estimates: sd(estimates) / mean(SE) in [0.25, 2.5] for
    theta and delta^d (with 4 draws the sd has 3 degrees of freedom: under correct SEs
    P(ratio < 0.25) = 0.020 and P(ratio > 2.5) = 0.0003; an SE too small by 3x fails). The
    8-seed and larger studies are in the benchmark (``--monte-carlo``)."""
    geo = jd.geography(60)
    covered, total = 0, 0
    est = {k: [] for k in jc.PARAM_NAMES}
    ses = {k: [] for k in jc.PARAM_NAMES}
    for seed in range(1, 5):
        rep = jd.generate_replica(geo, seed=seed)
        assert rep.converged, rep.status
        tmp = rep.write(tmp_path_factory.mktemp(f"jt_mc_{seed}"))
        data = jd.load(tmp["cities"].parent)
        tv = jc.true_values(data)
        pr = jc.problem_from_data(data, technology_shifters=T_SHIFTERS, theta0=START, bounds=BOUNDS)
        r = gmm.estimate(pr.moments, pr.theta0, pr.data, bounds=pr.bounds, options=pr.estimator["options"])
        assert r.converged, r.summary()
        for k in jc.PARAM_NAMES:
            e, s = float(r.params[k]), float(r.se[k])
            est[k].append(e)
            ses[k].append(s)
            covered += int(abs(e - tv[k]) <= 1.96 * s)
            total += 1
    assert total == 16
    print(f"coverage {covered}/{total}; sd/mean-SE:", {k: round(float(np.std(est[k], ddof=1) / np.mean(ses[k])), 2)
                                                   for k in jc.PARAM_NAMES})
    assert covered >= 13, f"coverage {covered}/{total}"
    for k in ("theta", "delta_d"):
        ratio = np.std(est[k], ddof=1) / np.mean(ses[k])
        assert 0.25 < ratio < 2.5, f"{k}: sd of estimates / mean SE = {ratio:.2f}"
    assert math.isfinite(np.mean(est["gamma"]))
