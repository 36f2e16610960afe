"""Tests of spatialjax.gmm on linear IV (closed forms, linearmodels), weak identification,
sensitivity/HJdP, bounds, inner failures, multistart, outputs and bad input.

Every reference here is computed independently of the estimator: closed forms written with
NumPy in the test, ``linearmodels.iv.IVGMM`` (whose conventions match ours: uncentred S,
no debiasing, J with the W of the last step), or finite differences.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spatialjax  # noqa: F401  (x64)
from spatialjax import gmm
from spatialjax.errors import ParameterError

N = 2000


def _iv_data(seed=0, n=N, invalid=0.0):
    """y = 1 + 2 x + u; x endogenous (corr(u, v) = 0.5 scale); instruments 1, z1, z2, z3;
    heteroskedastic u. ``invalid`` > 0 makes z3 correlated with u (misspecified moments)."""
    rng = np.random.default_rng(seed)
    Z = np.column_stack([np.ones(n), rng.standard_normal((n, 3))])
    v = rng.standard_normal(n)
    x = Z[:, 1] + 0.5 * Z[:, 2] + 0.3 * Z[:, 3] + v
    u = (0.5 * v + rng.standard_normal(n)) * np.exp(0.3 * Z[:, 1]) + invalid * Z[:, 3]
    X = np.column_stack([np.ones(n), x])
    y = X @ np.array([1.0, 2.0]) + u
    return {"y": y, "X": X, "Z": Z}


def g_iv(theta, d):
    b = jnp.stack([theta["a"], theta["b"]])
    e = d["y"] - d["X"] @ b
    return d["Z"] * e[:, None]


TH0 = {"a": 0.0, "b": 0.0}


def closed_form(d, W):
    X, Z, y = d["X"], d["Z"], d["y"]
    return np.linalg.solve(X.T @ Z @ W @ Z.T @ X, X.T @ Z @ W @ Z.T @ y)


def S_robust(d, b):
    gi = d["Z"] * (d["y"] - d["X"] @ b)[:, None]
    return gi.T @ gi / len(d["y"])


def sandwich(d, W, S):
    n = len(d["y"])
    G = -d["Z"].T @ d["X"] / n
    B = np.linalg.inv(G.T @ W @ G)
    return B @ G.T @ W @ S @ W @ G @ B / n


@pytest.fixture(scope="module")
def iv():
    return _iv_data(0)


@pytest.fixture(scope="module")
def two_step(iv):
    return gmm.estimate(g_iv, TH0, iv, weighting="two-step", cov="robust")


def test_two_step_equals_closed_form(iv, two_step):
    r = two_step
    b1 = closed_form(iv, np.eye(4))
    W2 = np.linalg.inv(S_robust(iv, b1))
    b2 = closed_form(iv, W2)
    assert r.status == "converged" and r.converged
    np.testing.assert_allclose(r.theta, b2, rtol=0, atol=1e-10)
    assert set(r.params) == {"a", "b"} and abs(float(r.params["b"]) - b2[1]) < 1e-10
    np.testing.assert_allclose(r.W, W2, rtol=1e-9)
    # robust sandwich with S at the final estimates
    V = sandwich(iv, W2, S_robust(iv, b2))
    np.testing.assert_allclose(r.cov, V, rtol=1e-8)
    np.testing.assert_allclose(r.se_flat, np.sqrt(np.diag(V)), rtol=1e-8)
    np.testing.assert_allclose([float(r.se["a"]), float(r.se["b"])], np.sqrt(np.diag(V)), rtol=1e-8)
    # J = n gbar' W gbar with the W of the last step
    gb = (iv["Z"] * (iv["y"] - iv["X"] @ b2)[:, None]).mean(0)
    assert r.J == pytest.approx(N * gb @ W2 @ gb, rel=1e-8)
    assert r.J_df == 2
    from scipy import stats

    assert r.J_pvalue == pytest.approx(stats.chi2.sf(r.J, 2), rel=1e-10)
    # G by autodiff equals -Z'X/n
    np.testing.assert_allclose(r.G, -iv["Z"].T @ iv["X"] / N, rtol=1e-12)
    # t statistics and 95% intervals
    np.testing.assert_allclose(r.tstat, r.theta / r.se_flat, rtol=1e-12)
    np.testing.assert_allclose(r.ci_high - r.theta, 1.959963984540054 * r.se_flat, rtol=1e-9)
    assert r.convergence["stop_reason"] in ("gradient", "step")
    assert [s["name"] for s in r.convergence["stages"]] == ["first", "second"]


def test_matches_linearmodels_ivgmm(iv, two_step):
    # linearmodels IVGMM: weight_type="robust" is uncentred and not debiased by default; its first
    # step is 2SLS unless initial_weight is given, so we pass the identity (our W1). J uses the
    # W of the last step, as ours.
    from linearmodels.iv import IVGMM

    res = IVGMM(iv["y"], iv["X"][:, :1], iv["X"][:, 1:], iv["Z"][:, 1:], weight_type="robust").fit(
        cov_type="robust", iter_limit=2, initial_weight=np.eye(4))
    np.testing.assert_allclose(two_step.theta, np.asarray(res.params), rtol=1e-9)
    np.testing.assert_allclose(two_step.se_flat, np.asarray(res.std_errors), rtol=1e-7)
    assert two_step.J == pytest.approx(float(res.j_stat.stat), rel=1e-7)
    assert two_step.J_df == int(res.j_stat.df)


def test_one_step_weightings_closed_form(iv):
    b1 = closed_form(iv, np.eye(4))
    r = gmm.estimate(g_iv, TH0, iv, weighting="identity")
    np.testing.assert_allclose(r.theta, b1, atol=1e-10)
    np.testing.assert_allclose(r.cov, sandwich(iv, np.eye(4), S_robust(iv, b1)), rtol=1e-8)
    assert math.isnan(r.J_pvalue)  # J is not chi2 with a non-efficient W
    assert r.J == pytest.approx(N * r.gbar @ r.gbar, rel=1e-10)
    Wd = np.diag(1 / np.diag(S_robust(iv, b1)))
    rd = gmm.estimate(g_iv, TH0, iv, weighting="diagonal")
    np.testing.assert_allclose(rd.theta, closed_form(iv, Wd), atol=1e-10)
    rng = np.random.default_rng(3)
    A = rng.standard_normal((4, 4))
    Wf = A @ A.T + 4 * np.eye(4)
    rf = gmm.estimate(g_iv, TH0, iv, weighting="fixed", options={"W": Wf})
    np.testing.assert_allclose(rf.theta, closed_form(iv, Wf), atol=1e-10)
    np.testing.assert_allclose(rf.W, Wf)


def test_lm_optimizer_equals_closed_form(iv, two_step):
    r = gmm.estimate(g_iv, TH0, iv, options={"optimizer": "lm"})
    np.testing.assert_allclose(r.theta, two_step.theta, atol=1e-10)
    assert r.convergence["optimizer"] == "lm"


def test_fd_jacobian_option(iv, two_step):
    # options["jacobian"] = "fd" (only when asked): central differences for G and the gradient
    r = gmm.estimate(g_iv, TH0, iv, options={"jacobian": "fd"})
    np.testing.assert_allclose(r.G, two_step.G, rtol=1e-7)
    np.testing.assert_allclose(r.theta, two_step.theta, atol=1e-7)


def test_clustered_se_closed_form(iv):
    n = N
    clusters = np.arange(n) // 20  # 100 clusters of 20
    b1 = closed_form(iv, np.eye(4))

    def S_cl(b):
        gi = iv["Z"] * (iv["y"] - iv["X"] @ b)[:, None]
        sums = np.zeros((100, 4))
        np.add.at(sums, clusters, gi)
        return sums.T @ sums / n

    W2 = np.linalg.inv(S_cl(b1))
    b2 = closed_form(iv, W2)
    r = gmm.estimate(g_iv, TH0, iv, cov="cluster", clusters=clusters)
    np.testing.assert_allclose(r.theta, b2, atol=1e-10)
    np.testing.assert_allclose(r.S, S_cl(b2), rtol=1e-10)
    np.testing.assert_allclose(r.cov, sandwich(iv, W2, S_cl(b2)), rtol=1e-8)
    # G/(G-1): W scales by (G-1)/G (same estimates), the sandwich by G/(G-1)
    rc = gmm.estimate(g_iv, TH0, iv, cov="cluster", clusters=clusters, options={"cluster_correction": "G/(G-1)"})
    np.testing.assert_allclose(rc.theta, b2, atol=1e-10)
    np.testing.assert_allclose(rc.cov, r.cov * 100 / 99, rtol=1e-8)
    # cluster ids may be any labels
    rl = gmm.estimate(g_iv, TH0, iv, cov="cluster", clusters=np.array([f"c{c}" for c in clusters]))
    np.testing.assert_allclose(rl.cov, r.cov, rtol=1e-10)


def test_hac_S_equals_newey_west(iv):
    n = N
    r = gmm.estimate(g_iv, TH0, iv, weighting="identity", cov="hac")
    L = int(math.floor(4 * (n / 100) ** (2 / 9)))
    assert r.convergence["hac_lags"] == L == 7
    gi = iv["Z"] * (iv["y"] - iv["X"] @ r.theta)[:, None]
    S = gi.T @ gi / n
    for lag in range(1, L + 1):
        Gam = sum(np.outer(gi[t], gi[t - lag]) for t in range(lag, n)) / n
        S += (1 - lag / (L + 1)) * (Gam + Gam.T)
    np.testing.assert_allclose(r.S, S, rtol=1e-10)
    r3 = gmm.estimate(g_iv, TH0, iv, weighting="identity", cov="hac", options={"hac_lags": 3})
    assert r3.convergence["hac_lags"] == 3
    S3 = gi.T @ gi / n
    for lag in (1, 2, 3):
        Gam = gi[lag:].T @ gi[:-lag] / n
        S3 += (1 - lag / 4) * (Gam + Gam.T)
    np.testing.assert_allclose(r3.S, S3, rtol=1e-10)


def test_iterated_is_its_own_fixed_point(iv, two_step):
    r = gmm.estimate(g_iv, TH0, iv, weighting="iterated")
    assert r.status == "converged"
    fixed = closed_form(iv, np.linalg.inv(S_robust(iv, r.theta)))
    np.testing.assert_allclose(r.theta, fixed, atol=1e-9)
    assert np.max(np.abs(r.theta - two_step.theta)) > 1e-6  # a different estimator
    assert sum(s["name"] == "round" for s in r.convergence["stages"]) >= 2


def test_cue_gradient_zero_and_differs_from_two_step(iv, two_step):
    r = gmm.estimate(g_iv, TH0, iv, weighting="cue")
    assert r.status == "converged"

    def Q(b):  # CUE objective written independently (NumPy): gbar' S(b)^{-1} gbar, S uncentred
        gi = iv["Z"] * (iv["y"] - iv["X"] @ b)[:, None]
        gb = gi.mean(0)
        return gb @ np.linalg.solve(gi.T @ gi / N, gb)

    # central-difference gradient and Hessian: a Newton step from the estimate is negligible
    h = 1e-4
    E = np.eye(2) * h
    b = r.theta
    grad = np.array([(Q(b + E[i]) - Q(b - E[i])) / (2 * h) for i in range(2)])
    hess = np.array([[(Q(b + E[i] + E[j]) - Q(b + E[i] - E[j]) - Q(b - E[i] + E[j]) + Q(b - E[i] - E[j])) / (4 * h * h)
                      for j in range(2)] for i in range(2)])
    assert np.max(np.abs(np.linalg.solve(hess, grad))) < 1e-8
    # the same check moves the two-step estimate (the CUE objective is not minimised there)
    b = two_step.theta
    grad2 = np.array([(Q(b + E[i]) - Q(b - E[i])) / (2 * h) for i in range(2)])
    assert np.max(np.abs(np.linalg.solve(hess, grad2))) > 1e-5
    assert np.max(np.abs(r.theta - two_step.theta)) > 1e-5
    assert r.J == pytest.approx(N * Q(r.theta), rel=1e-8)
    np.testing.assert_allclose(r.W, np.linalg.inv(S_robust(iv, r.theta)), rtol=1e-8)


def test_J_rejects_misspecified_not_correct():
    good = gmm.estimate(g_iv, TH0, _iv_data(11))
    bad = gmm.estimate(g_iv, TH0, _iv_data(11, invalid=0.5))
    assert good.J_pvalue > 0.05
    assert bad.J_pvalue < 0.01


def test_wald_and_delta_method(two_step):
    r = two_step
    w = r.wald([[0.0, 1.0]], [2.0])
    assert w.statistic == pytest.approx(((r.theta[1] - 2.0) / r.se_flat[1]) ** 2, rel=1e-10)
    assert w.df == 1
    R = np.array([[1.0, 0.0], [0.0, 1.0]])
    rr = np.array([1.0, 2.0])
    d = r.theta - rr
    w2 = r.wald(R, rr)
    assert w2.statistic == pytest.approx(d @ np.linalg.solve(r.cov, d), rel=1e-10) and w2.df == 2
    from scipy import stats

    assert w2.pvalue == pytest.approx(stats.chi2.sf(w2.statistic, 2), rel=1e-10)
    dm = r.delta_method(lambda p: p["a"] * p["b"])
    jac = np.array([r.theta[1], r.theta[0]])
    assert dm.value[0] == pytest.approx(r.theta[0] * r.theta[1], rel=1e-12)
    assert dm.se[0] == pytest.approx(math.sqrt(jac @ r.cov @ jac), rel=1e-10)
    with pytest.raises(ParameterError, match="R"):
        r.wald(np.ones((1, 3)))


def test_sensitivity_by_hand(iv, two_step):
    r = two_step
    G, W = r.G, r.W
    Lam = -np.linalg.inv(G.T @ W @ G) @ G.T @ W
    np.testing.assert_allclose(r.sensitivity, Lam, rtol=1e-10)
    fr = r.sensitivity_frame()
    assert list(fr.index) == ["a", "b"] and list(fr.columns) == r.moment_names
    # exactly identified: Lambda = -G^{-1}
    d2 = {"y": iv["y"], "X": iv["X"], "Z": iv["Z"][:, :2]}
    re = gmm.estimate(g_iv, TH0, d2, weighting="identity")
    np.testing.assert_allclose(re.sensitivity, -np.linalg.inv(re.G), rtol=1e-10)
    assert re.J_df == 0 and math.isnan(re.J_pvalue)
    # HJdP: dropping a moment of an exactly identified model leaves theta unidentified
    assert np.all(np.isinf(re.hjdp["remove"]))
    assert re.hjdp["not_identified_without"] == [0, 1]


def test_hjdp_measures_by_hand(two_step):
    r = two_step
    G, Om = r.G, r.S / N
    Oi = np.linalg.inv(Om)
    V0 = np.linalg.inv(G.T @ Oi @ G)
    for j in range(4):
        keep = [i for i in range(4) if i != j]
        Vj = np.linalg.inv(G[keep].T @ np.linalg.inv(Om[np.ix_(keep, keep)]) @ G[keep])
        np.testing.assert_allclose(r.hjdp["remove"][:, j], np.diag(Vj) / np.diag(V0) - 1, rtol=1e-8, atol=1e-12)
    assert np.all(r.hjdp["remove"] >= -1e-12)  # dropping a moment never helps efficient GMM

    # noise: elasticity of var(theta_i) wrt Omega_jj, by central differences of (G'Omega^{-1}G)^{-1}
    def var(Om_):
        return np.diag(np.linalg.inv(G.T @ np.linalg.inv(Om_) @ G))

    for j in range(4):
        h = 1e-5 * Om[j, j]
        E = np.zeros((4, 4))
        E[j, j] = h
        dV = (var(Om + E) - var(Om - E)) / (2 * h)
        np.testing.assert_allclose(r.hjdp["noise"][:, j], dV * Om[j, j] / var(Om), rtol=1e-5, atol=1e-10)
    assert r.hjdp_frame("noise").shape == (2, 4)


def test_hjdp_redundant_moment_changes_nothing():
    # minimum distance with a third moment that does not depend on theta and is uncorrelated
    A = np.array([[1.0, 0.3], [0.2, 1.5], [0.0, 0.0]])

    def m(th):
        return jnp.asarray(A) @ jnp.stack([th["x"], th["y"]]) + jnp.array([0.0, 0.0, 1.0])

    cov = np.array([[0.04, 0.01, 0.0], [0.01, 0.09, 0.0], [0.0, 0.0, 0.25]])
    r = gmm.minimum_distance(m, {"x": 0.0, "y": 0.0}, np.array([1.0, 2.0, 1.1]), cov_m_hat=cov)
    np.testing.assert_allclose(r.hjdp["remove"][:, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(r.hjdp["noise"][:, 2], 0.0, atol=1e-12)
    assert np.all(np.isinf(r.hjdp["remove"][:, :2]))  # the other two are both needed


def test_weak_identification_names_direction():
    rng = np.random.default_rng(5)
    n = 500
    x = rng.standard_normal(n)
    z = np.column_stack([np.ones(n), x, x ** 2])
    y = 1.5 * x + 0.3 * rng.standard_normal(n)

    def g(th, d):  # beta and H_f enter only through their sum
        e = d["y"] - (th["beta"] + th["H_f"]) * d["x"]
        return d["z"] * e[:, None]

    r = gmm.estimate(g, {"beta": 0.2, "H_f": 0.1}, {"y": y, "x": x, "z": z})
    assert r.status == "weakly_identified"
    assert not np.any(np.isfinite(r.se_flat)) and not np.any(np.isfinite(r.cov))
    d = r.weak_identification["direction"]
    v = np.array([d["beta"], d["H_f"]])
    np.testing.assert_allclose(np.abs(v), [1 / math.sqrt(2)] * 2, atol=1e-6)
    assert v[0] * v[1] < 0
    assert "beta" in r.weak_identification["text"] and "H_f" in r.weak_identification["text"]
    # JAX orders dict keys: the flattened order is (H_f, beta)
    assert r.param_names == ["H_f", "beta"]
    assert "weakly identified direction: 0.707*H_f - 0.707*beta" in r.summary()
    # the sum is still estimated consistently
    assert float(r.params["beta"] + r.params["H_f"]) == pytest.approx(1.5, abs=0.05)


def test_log_bound_not_active_equals_unbounded(iv, two_step):
    rb = gmm.estimate(g_iv, {"a": 0.5, "b": 0.5}, iv, bounds={"b": (0.0, None)})
    np.testing.assert_allclose(rb.theta, two_step.theta, atol=1e-9)
    np.testing.assert_allclose(rb.cov, two_step.cov, rtol=1e-7)
    # delta method by hand: cov_u from G_u = G diag(dtheta/du), then D cov_u D
    u_b = math.log(rb.theta[1])
    D = np.diag([1.0, math.exp(u_b)])
    np.testing.assert_allclose(rb.transform_jacobian, np.diag(D), rtol=1e-10)
    Gu = rb.G @ D
    B = np.linalg.inv(Gu.T @ rb.W @ Gu)
    Vu = B @ Gu.T @ rb.W @ (rb.S / N) @ rb.W @ Gu @ B
    np.testing.assert_allclose(rb.cov, D @ Vu @ D, rtol=1e-8)
    # logit on an interval and an explicit transform give the same estimates
    rl = gmm.estimate(g_iv, {"a": 0.5, "b": 0.5}, iv, bounds={"a": (-5.0, 5.0)}, options={"transforms": {"b": "log"}})
    np.testing.assert_allclose(rl.theta, two_step.theta, atol=1e-9)


def test_singular_S_is_flagged_not_pseudo_inverted(iv):
    def g_dup(th, d):  # the moment z1*e twice: S is exactly singular
        m = g_iv(th, d)
        return jnp.concatenate([m, m[:, 1:2]], axis=1)

    r = gmm.estimate(g_dup, TH0, iv)
    assert r.status == "singular_S" and not r.converged
    assert "singular" in r.message
    assert np.all(np.isnan(r.se_flat)) and np.isnan(r.J_pvalue)
    assert [s["name"] for s in r.convergence["stages"]] == ["first"]  # no second step on a bad W
    # the first step with the identity on 5 moments = weight 2 on the duplicated one
    np.testing.assert_allclose(r.theta, closed_form(iv, np.diag([1.0, 2.0, 1.0, 1.0])), atol=1e-9)


def test_bounds_as_pytree_and_callback(iv, two_step):
    seen = []
    r = gmm.estimate(g_iv, {"a": 0.5, "b": 0.5}, iv, bounds={"a": None, "b": (0.0, 10.0)},
                     options={"callback": seen.append})
    np.testing.assert_allclose(r.theta, two_step.theta, atol=1e-9)
    assert r.transform_jacobian[0] == 1.0 and r.transform_jacobian[1] != 1.0
    assert len(seen) == r.convergence["iterations"]
    assert {"stage", "iteration", "objective", "grad_norm", "time_per_eval", "n_failed_evals"} <= set(seen[0])
    assert seen[-1]["stage"] == "second"


def test_iterated_max_rounds(iv):
    r = gmm.estimate(g_iv, TH0, iv, weighting="iterated", options={"max_rounds": 1})
    assert r.status == "max_rounds_reached" and not r.converged


def test_active_bound_stays_inside(iv):
    r = gmm.estimate(g_iv, {"a": 0.5, "b": 0.5}, iv, weighting="identity", bounds={"b": (None, 1.5)})
    assert r.theta[1] == pytest.approx(1.5, abs=1e-7)  # the unconstrained estimate is ~2.03
    assert r.status == "at_bound" and "'b'" in r.message and r.converged
    assert np.all(np.isnan(r.se_flat))


def test_inner_failure_region_avoided_and_counted(iv, two_step):
    # the moment function "fails" (ok=False, like an inner solve that did not converge) in a band
    # 0.5 < a < 1 with b > 1.5 that the second BFGS trial point from (0, 0) lands in
    # (trial points (0, 0), (0.34, 1.0), (0.96, 2.04), ... when nothing fails); the estimate is outside.
    def bad_region(th):
        return (th["a"] > 0.5) & (th["a"] < 1.0) & (th["b"] > 1.5)

    def g(th, d):
        return g_iv(th, d), ~bad_region(th)

    r = gmm.estimate(g, TH0, iv)
    assert r.status == "converged"
    assert r.convergence["n_failed_evals"] > 0
    np.testing.assert_allclose(r.theta, two_step.theta, atol=1e-9)

    # non-finite values count the same way
    def g_nan(th, d):
        return jnp.where(bad_region(th), jnp.nan, g_iv(th, d))

    rn = gmm.estimate(g_nan, TH0, iv)
    assert rn.status == "converged" and rn.convergence["n_failed_evals"] > 0
    np.testing.assert_allclose(rn.theta, two_step.theta, atol=1e-9)


def test_inner_failure_everywhere_is_failed(iv):
    def g(th, d):
        return g_iv(th, d), jnp.asarray(False)

    r = gmm.estimate(g, TH0, iv)
    assert r.status == "failed" and not r.converged
    assert np.all(np.isnan(r.theta)) and np.all(np.isnan(r.se_flat)) and math.isnan(r.J)
    assert r.convergence["n_failed_evals"] >= 1
    js = json.loads(r.to_json())
    assert js["parameters"][0]["estimate"] is None


def test_multistart_finds_global_minimum():
    def m(th):  # two local minima: theta = 1 (Q = 0) and theta ~ -1 (Q ~ 1)
        t = th["t"]
        return jnp.stack([t ** 2 - 1.0, 0.5 * (t - 1.0)])

    r1 = gmm.minimum_distance(m, {"t": -1.2}, np.zeros(2))
    assert r1.theta[0] < 0  # a single start from -1.2 stays in the local minimum
    r = gmm.minimum_distance(m, {"t": -1.2}, np.zeros(2),
                             options={"multistart": 6, "start_box": {"t": (-2.0, 2.0)}, "seed": 1})
    assert r.theta[0] == pytest.approx(1.0, abs=1e-8)
    objs = r.convergence["multistart"]
    assert len(objs) == 6 and r.objective == pytest.approx(min(objs), abs=1e-14)
    assert max(objs) > 0.5  # the local minimum was found by some start
    assert "multistart objectives" in r.summary()


def test_adam_optimizer_small_problem():
    A = np.array([[2.0, 0.5], [0.1, 1.0], [1.0, 1.0]])
    m_hat = np.array([1.0, 0.4, 1.2])

    def m(th):
        return jnp.asarray(A) @ th

    r = gmm.minimum_distance(m, jnp.zeros(2), m_hat, options={"optimizer": "adam", "learning_rate": 0.1,
                                                              "max_iter": 3000, "gtol": 1e-8})
    ref = np.linalg.lstsq(A, m_hat, rcond=None)[0]
    np.testing.assert_allclose(r.theta, ref, atol=1e-6)
    assert r.param_names == ["theta[0]", "theta[1]"]


def test_names_from_pytree_paths():
    import equinox as eqx

    class P(eqx.Module):
        gamma: jax.Array
        pi: jax.Array

    def m(th):
        return jnp.concatenate([jnp.atleast_1d(th.gamma), th.pi, th.pi ** 2])

    th0 = P(gamma=jnp.asarray(0.5), pi=jnp.array([0.1, 0.2, 0.3]))
    r = gmm.minimum_distance(m, th0, np.array([0.4, 0.1, 0.2, 0.3, 0.01, 0.04, 0.09]),
                             W=np.eye(7))
    assert r.param_names == ["gamma", "pi[0]", "pi[1]", "pi[2]"]
    assert isinstance(r.params, P)
    np.testing.assert_allclose(np.asarray(r.params.pi), [0.1, 0.2, 0.3], atol=1e-8)
    assert r.status == "converged_no_se" and np.all(np.isnan(r.se_flat))
    assert "no cov_m_hat" in r.message
    nested = {"outer": {"inner": 1.0}, "v": jnp.zeros(2)}
    rn = gmm.minimum_distance(lambda t: jnp.stack([t["outer"]["inner"], t["v"][0], t["v"][1]]), nested,
                              np.array([2.0, 1.0, 0.5]), W=np.eye(3))
    assert rn.param_names == ["outer.inner", "v[0]", "v[1]"]
    # bounds as a PyTree with theta0's structure (pairs as leaves, None = unbounded)
    rb = gmm.minimum_distance(lambda t: jnp.stack([t["outer"]["inner"], t["v"][0], t["v"][1]]), nested,
                              np.array([2.0, 1.0, 0.5]), W=np.eye(3), bounds={"outer": {"inner": (0.0, None)}, "v": None})
    assert rb.transform_jacobian[0] != 1.0 and list(rb.transform_jacobian[1:]) == [1.0, 1.0]
    np.testing.assert_allclose(rb.theta, [2.0, 1.0, 0.5], atol=1e-8)


def test_outputs_json_frames_summary(two_step):
    r = two_step
    s = r.summary()
    assert str(r) == s
    for word in ("a", "b", "J", "p-value", "two-step", "robust", "2000", "stop reason", "Moments", "95% CI"):
        assert word in s
    js = json.loads(r.to_json())
    assert js["status"] == "converged" and js["J_df"] == 2
    assert js["parameters"][1]["name"] == "b"
    assert js["parameters"][1]["estimate"] == pytest.approx(r.theta[1], rel=1e-15)
    fr = r.to_frame()
    assert list(fr.columns) == ["parameter", "estimate", "se", "t", "ci_low", "ci_high"]
    assert fr.loc[1, "se"] == pytest.approx(r.se_flat[1])
    mf = r.moments_frame()
    assert len(mf) == 4 and {"data", "model", "se_data", "se_model"} <= set(mf.columns)
    np.testing.assert_allclose(mf["se_data"], np.sqrt(np.diag(r.S) / N), rtol=1e-12)
    d = r.to_dict()
    assert d["convergence"]["n_objective_evals"] >= d["convergence"]["iterations"]


def test_true_params_column(iv):
    r = gmm.estimate(g_iv, TH0, iv, options={"true_params": {"a": 1.0, "b": 2.0}})
    assert list(r.to_frame()["true"]) == [1.0, 2.0]
    assert "true" in r.summary()


def test_to_json_writes_atomically(tmp_path, two_step):
    p = tmp_path / "out" / "res.json"
    two_step.to_json(p)
    assert json.loads(p.read_text())["J"] == pytest.approx(two_step.J)
    assert not list(p.parent.glob(".*tmp*"))


# ---------------------------------------------------------------------------------------
# Bad input: each a ParameterError naming the field, raised before any work
# ---------------------------------------------------------------------------------------


def _raises(field, fn):
    with pytest.raises(ParameterError) as e:
        fn()
    assert e.value.field == field, (e.value.field, str(e.value))
    return str(e.value)


def test_bad_input(iv, tmp_path):
    E = gmm.estimate
    _raises("g", lambda: E(lambda t, d: g_iv(t, d)[:, 0], TH0, iv))  # (n,)
    _raises("g", lambda: E(lambda t, d: g_iv(t, d).mean(0), TH0, iv))  # (k,)
    bad = dict(iv)
    bad["y"] = iv["y"].copy()
    bad["y"][3] = np.nan
    assert "data" in _raises("data['y']", lambda: E(g_iv, TH0, bad))
    _raises("options.W", lambda: E(g_iv, TH0, iv, weighting="fixed", options={"W": np.diag([1, 1, 1, 0.0])}))
    Wn = np.eye(4)
    Wn[0, 1] = 0.5
    assert "symmetric" in _raises("options.W", lambda: E(g_iv, TH0, iv, weighting="fixed", options={"W": Wn}))
    _raises("options.W", lambda: E(g_iv, TH0, iv, weighting="fixed"))
    _raises("options.W1", lambda: E(g_iv, TH0, iv, options={"W1": np.ones((4, 4))}))
    _raises("clusters", lambda: E(g_iv, TH0, iv, cov="cluster", clusters=np.arange(10)))
    _raises("clusters", lambda: E(g_iv, TH0, iv, cov="cluster"))
    _raises("weighting", lambda: E(g_iv, TH0, iv, weighting="optimal"))
    _raises("cov", lambda: E(g_iv, TH0, iv, cov="bootstrap"))
    msg = _raises("options.tolerance", lambda: E(g_iv, TH0, iv, options={"tolerance": 1e-6}))
    assert "gtol" in msg  # the allowed keys are listed
    _raises("options.optimizer", lambda: E(g_iv, TH0, iv, options={"optimizer": "nelder-mead"}))
    _raises("theta0.b", lambda: E(g_iv, {"a": 0.0, "b": np.inf}, iv))
    _raises("bounds.b", lambda: E(g_iv, TH0, iv, bounds={"b": (1.0, 1.0)}))
    _raises("theta0.b", lambda: E(g_iv, TH0, iv, bounds={"b": (1.0, 3.0)}))
    _raises("bounds.c", lambda: E(g_iv, TH0, iv, bounds={"a": (0, 1), "c": (0, 1)}))
    _raises("options.transforms.b", lambda: E(g_iv, TH0, iv, options={"transforms": {"b": "exp"}}))
    _raises("options.hac_lags", lambda: E(g_iv, TH0, iv, cov="hac", options={"hac_lags": -1}))
    _raises("options.start_box", lambda: E(g_iv, TH0, iv, options={"multistart": 3}))
    _raises("options.resume", lambda: E(g_iv, TH0, iv, options={"resume": True}))
    _raises("g", lambda: E(lambda t, d: d["Z"][:, :1] * t["a"], TH0, iv))  # k < p
    MD = gmm.minimum_distance
    m = lambda t: jnp.stack([t["a"], t["b"], t["a"] * t["b"]])  # noqa: E731
    _raises("m", lambda: MD(m, TH0, np.ones(4)))
    _raises("m_hat", lambda: MD(m, TH0, np.array([1.0, np.nan, 2.0])))
    _raises("W", lambda: MD(m, TH0, np.ones(3), W=np.diag([1.0, 1.0, 0.0])))
    _raises("cov_m_hat", lambda: MD(m, TH0, np.ones(3), cov_m_hat=np.eye(2)))
    _raises("cov_m_hat", lambda: MD(m, TH0, np.ones(3), cov_m_hat={"sample": np.ones((5, 3))}))
    _raises("cov_m_hat.data", lambda: MD(m, TH0, np.ones(3), cov_m_hat={"data": np.ones((5, 2))}))
    _raises("options.W1", lambda: MD(m, TH0, np.ones(3), options={"W1": np.eye(3)}))
    # nothing was written for a refused call
    ck = tmp_path / "ck.json"
    _raises("weighting", lambda: E(g_iv, TH0, iv, weighting="x", options={"checkpoint": str(ck)}))
    assert not ck.exists()


class _NoStepProblem:
    """A problem on which every trial step fails (``ok`` False), so the BFGS line search finds
    no acceptable step; its Gauss-Newton step at the current point is ``gn``."""

    def __init__(self, gn):
        self.gn = np.asarray(gn, float)
        self.gn_calls = 0

    def value_grad(self, u, W):
        return math.inf, None, False

    def gauss_newton_step(self, u, W, g):
        self.gn_calls += 1
        return self.gn


@pytest.mark.parametrize("gn, reason", [([1e-12, -3e-12], "step"), ([1e-5, 0.0], "line_search"),
                                        ([np.nan, 0.0], "line_search")])
def test_failed_line_search_is_converged_only_with_a_negligible_gauss_newton_step(gn, reason):
    """A line search that finds no acceptable step stops as converged ("step") only where the
    Gauss-Newton step is below gn_tol (1 + max|u|); otherwise (or non-finite) "line_search"."""
    opt = {"gtol": 1e-8, "xtol": 1e-10, "ftol": 0.0, "gn_tol": 1e-9, "max_ls": 4, "max_iter": 50}
    prob = _NoStepProblem(gn)
    st = {"method": "bfgs", "u": np.array([0.5, -1.0]), "f": 1.0, "g": np.array([1e-6, 2e-6]), "ok": True,
          "it": 0, "H": np.eye(2), "scaled": True, "done": False, "reason": None}
    st = gmm._bfgs_step(prob, st, np.eye(2), opt)
    assert st["done"] and st["reason"] == reason and prob.gn_calls == 1
    assert st["gauss_newton_step"] == pytest.approx(np.max(np.abs(gn)), nan_ok=True)
    np.testing.assert_array_equal(st["u"], [0.5, -1.0])  # no step was taken


def test_variance_moments_replace_g_rows_in_S_only(iv):
    """options["variance_moments"] = h: S (second-step weight and sandwich) from h's rows, the
    objective, gbar and G from g's. Reference: the two-step closed form with S built from
    h_i = g_i / sqrt(1 - lev_i) (HC2 with the instruments' leverage), written here in NumPy."""
    Z = iv["Z"]
    lev = np.einsum("ij,jk,ik->i", Z, np.linalg.inv(Z.T @ Z), Z)
    c = 1.0 / np.sqrt(1.0 - lev)
    d = dict(iv, c=c)

    def h(theta, dd):
        return g_iv(theta, dd) * dd["c"][:, None]

    def S_h(b):
        hi = Z * ((iv["y"] - iv["X"] @ b) * c)[:, None]
        return hi.T @ hi / N

    r = gmm.estimate(g_iv, TH0, d, weighting="two-step", options={"variance_moments": h})
    b1 = closed_form(iv, np.eye(4))
    W2 = np.linalg.inv(S_h(b1))
    b2 = closed_form(iv, W2)
    assert r.converged
    np.testing.assert_allclose(r.theta, b2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(r.W, W2, rtol=1e-9)
    np.testing.assert_allclose(r.cov, sandwich(iv, W2, S_h(b2)), rtol=1e-8)
    gb = (Z * (iv["y"] - iv["X"] @ b2)[:, None]).mean(0)  # J from g's mean, h's S
    assert r.J == pytest.approx(N * gb @ W2 @ gb, rel=1e-8)
    # the HC2 rows are larger, so the SEs are (by about the mean leverage, p/n = 0.2 %)
    plain = gmm.estimate(g_iv, TH0, iv, weighting="two-step")
    assert np.all(r.se_flat > plain.se_flat)
    # bad h: wrong shape, not callable (named, before any work)
    with pytest.raises(ParameterError, match="options.variance_moments.*shape of g"):
        gmm.estimate(g_iv, TH0, d, options={"variance_moments": lambda t, dd: g_iv(t, dd)[:, :2]})
    with pytest.raises(ParameterError, match="options.variance_moments.*callable"):
        gmm.estimate(g_iv, TH0, d, options={"variance_moments": 3.0})


def test_df_correction_matches_linearmodels_debiased_and_uses_t_intervals(iv, two_step):
    """options["df_correction"] = K: cov * n/(n-p-K) and t(n-p-K) intervals; estimates, W and J
    unchanged. With K = 0 the SEs equal linearmodels' IVGMM with debiased=True (n/(n-k))."""
    from linearmodels.iv import IVGMM
    from scipy import stats

    r0 = gmm.estimate(g_iv, TH0, iv, options={"df_correction": 0})
    res = IVGMM(iv["y"], iv["X"][:, :1], iv["X"][:, 1:], iv["Z"][:, 1:], weight_type="robust").fit(
        cov_type="robust", iter_limit=2, initial_weight=np.eye(4), debiased=True)
    np.testing.assert_allclose(r0.theta, two_step.theta, atol=1e-12)
    np.testing.assert_allclose(r0.se_flat, np.asarray(res.std_errors), rtol=1e-7)
    assert r0.J == pytest.approx(two_step.J, rel=1e-12)
    r3 = gmm.estimate(g_iv, TH0, iv, options={"df_correction": 3})
    np.testing.assert_allclose(r3.cov, two_step.cov * N / (N - 2 - 3), rtol=1e-10)
    np.testing.assert_allclose(r3.ci_high - r3.theta, stats.t.ppf(0.975, N - 5) * r3.se_flat, rtol=1e-10)
    assert r3.small_sample == {"n": N, "p": 2, "K": 3, "df": N - 5, "scale": N / (N - 5)}
    assert "t(1995) intervals" in r3.summary() and r3.to_dict()["small_sample"]["df"] == N - 5
    assert two_step.small_sample is None
    # clustered: n is the number of clusters (100 of 20 observations)
    clusters = np.arange(N) // 20
    rc = gmm.estimate(g_iv, TH0, iv, cov="cluster", clusters=clusters)
    rc1 = gmm.estimate(g_iv, TH0, iv, cov="cluster", clusters=clusters, options={"df_correction": 1})
    np.testing.assert_allclose(rc1.cov, rc.cov * 100 / 97, rtol=1e-10)
    np.testing.assert_allclose(rc1.ci_low, rc1.theta - stats.t.ppf(0.975, 97) * rc1.se_flat, rtol=1e-10)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ParameterError, match="options.df_correction"):
            gmm.estimate(g_iv, TH0, iv, options={"df_correction": bad})
    with pytest.raises(ParameterError, match="no degrees of freedom"):
        gmm.estimate(g_iv, TH0, iv, cov="cluster", clusters=clusters, options={"df_correction": 98})
