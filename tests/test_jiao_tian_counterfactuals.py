"""Jiao-Tian counterfactuals (Sections 5.3-5.4, Appendices H-K), the welfare-gradient map and the
headline gradients, on a small stand-in calibrated economy (24 cities, Table 5 parameters, q on the
log-Mbps scale of eq. (27)), built by the same inversions (35)-(36) as the calibration."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import spatialjax  # noqa: F401  (x64)
from spatialjax.errors import ParameterError
from spatialjax.models import jiao_tian as jt
from spatialjax.models import jiao_tian_counterfactuals as cf

N = 24


@pytest.fixture(scope="module")
def base():
    b = cf.synthetic_baseline(N, 3)
    assert b.sol.status == "successful"
    return b


@pytest.fixture(scope="module")
def ni(base):
    return cf.no_internet(base, steps=3)


def _with_tau(p, logtau):
    return eqx.tree_at(lambda q: q.tau, p, jnp.exp(logtau * (1 - jnp.eye(p.N))))


# ---------------------------------------------------------------------------------------
# Continuation: zero shock, path end, failures
# ---------------------------------------------------------------------------------------


def test_zero_shock_returns_baseline(base):
    r = cf.no_internet(base, delta_I=0.0, steps=3)
    assert r.status == "successful"
    np.testing.assert_allclose(r.y, np.asarray(base.sol.y), rtol=0, atol=1e-12)
    assert abs(r.d_log_Uw) < 1e-12 and abs(r.d_log_Um) < 1e-12
    assert np.max(np.abs(r.d_skill_share)) < 1e-12
    assert abs(r.decomposition["direct_workers"]) < 1e-12 and abs(r.decomposition["reorg_managers"]) < 1e-12


def test_path_end_is_the_warm_solve_and_an_equilibrium(base, ni):
    assert ni.status == "successful" and ni.s_reached == 1.0 and ni.n_solves >= 3
    logtau = jnp.log(base.params.tau) - base.delta_I * jnp.outer(base.q, base.q)
    p1 = _with_tau(base.params, logtau)
    warm = jt.solve(p1, y0=base.sol)
    assert warm.status == "successful"
    np.testing.assert_allclose(ni.y, np.asarray(warm.y), rtol=0, atol=1e-9)
    assert float(jnp.max(jnp.abs(jt.residual(jnp.asarray(ni.y), p1)))) < 1e-10
    # the tau~ of the counterfactual is jt's (misprint-corrected) no-internet costs
    np.testing.assert_allclose(np.asarray(p1.tau), np.asarray(jt.counterfactual_no_internet(
        base.params.tau, base.q, base.delta_I)), rtol=1e-13)


def test_internet_effect_signs(ni):
    # delta^I < 0: the internet lowers fragmentation costs, a technological improvement that
    # raises both groups' welfare (Section 5.3) and concentrates skills in large cities (Table 7).
    assert ni.d_log_Uw > 0 and ni.d_log_Um > 0
    assert ni.slope > 0
    assert ni.workers_pct == pytest.approx((math.exp(ni.d_log_Uw) - 1) * 100, rel=1e-14)


def test_branch_failures_are_reported_not_replaced(base):
    r = cf.no_internet(base, steps=2, max_jump=1e-9, max_halvings=2)
    assert r.status == "branch_jump" and r.s_reached < 1.0 and not r.converged
    assert math.isnan(r.slope) and math.isnan(r.d_log_Uw)
    r2 = cf.no_internet(base, steps=2, degeneracy_rtol=10.0, max_halvings=1)
    assert r2.status == "degenerate" and r2.s_reached == 0.0
    assert "degenerate" in r2.summary() and "fold" not in r2.status
    df = cf.paper_comparison([r2])
    assert df["note"].str.contains("OURS FAILED").all()


def test_bad_inputs_raise(base):
    with pytest.raises(ParameterError, match="steps"):
        cf.no_internet(base, steps=0)
    with pytest.raises(ParameterError, match="^q"):
        cf.Baseline(params=base.params, sol=base.sol, q=jnp.ones(N + 1), dist=base.dist, log_lam=0.0,
                    delta_d=0.23, delta_I=-0.01)
    with pytest.raises(ParameterError, match="epsilon"):
        cf.solve_elastic(base.params, -0.1, base.sol)
    with pytest.raises(ParameterError, match="digital_divide_quantile"):
        cf.digital_divide(base, quantile=1.5)


# ---------------------------------------------------------------------------------------
# Table 8 decomposition
# ---------------------------------------------------------------------------------------


def test_appendix_J_output_is_team_income(base, ni):
    """S_nc of Appendix J (with the arguments in the order its derivation gives) is tau_nc times the
    team output w_c L^p_nc / beta of the model, up to one constant across all pairs."""
    p = base.params
    s = base.sol
    Lm_nc = s.x * s.Lm[:, None]
    S = (s.Lm[:, None] ** p.gamma * (s.Phi[:, None] * p.tau ** p.theta * s.w[None, :] ** (p.beta * p.theta))
         ** (1 / p.theta) * s.Lp_nc ** p.beta * Lm_nc ** (1 - p.beta))
    Y = s.w[None, :] * s.Lp_nc / p.beta
    ratio = np.asarray(S / (p.tau * Y))
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-10)
    # and the manager side of the team identity: E[pi_n] L^m_nc = (1 - beta) Y_nc
    np.testing.assert_allclose(np.asarray(s.Epi[:, None] * Lm_nc), np.asarray((1 - p.beta) * Y), rtol=1e-10)


def test_decomposition_without_reorganisation_is_all_direct(base):
    """A uniform productivity gain T -> lam T reorganises nothing (x, L^m, L^p unchanged; w scales
    by lam^(1/theta)), and with frozen teams each team's output scales by lam^(1/theta). So the
    direct effect (37)-(39) must equal the total, alpha/theta log lam for both groups."""
    lam = 1.3
    p_no = base.params
    p_with = eqx.tree_at(lambda q: q.T, p_no, p_no.T * lam)
    s_with = jt.solve(p_with, y0=base.sol)
    assert s_with.status == "successful"
    np.testing.assert_allclose(np.asarray(s_with.Lm), np.asarray(base.sol.Lm), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(s_with.Lp), np.asarray(base.sol.Lp), rtol=1e-9)
    d = cf.welfare_decomposition(p_with, s_with, p_no, base.sol, r=lam ** (1 / float(p_no.theta)))
    expect = float(p_no.alpha) / float(p_no.theta) * math.log(lam)
    for who in ("workers", "managers"):
        assert d[f"total_{who}"] == pytest.approx(expect, rel=1e-9)
        assert d[f"direct_{who}"] == pytest.approx(expect, rel=1e-12)
        assert abs(d[f"reorg_{who}"]) < 1e-9 * expect


def test_no_internet_decomposition_adds_up(ni):
    d = ni.decomposition
    assert d["total_workers"] == pytest.approx(ni.d_log_Uw, rel=1e-14)
    assert d["direct_workers"] + d["reorg_workers"] == pytest.approx(d["total_workers"], rel=1e-14)
    # the direct effect of cheaper fragmentation is a gain for both groups (Table 8's first row)
    assert d["direct_workers"] > 0 and d["direct_managers"] > 0


# ---------------------------------------------------------------------------------------
# Sensitivity (Tables 10, 11)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.005, 0.015])
def test_gamma_reinversion_keeps_the_baseline_allocation(base, gamma):
    p, y = cf.recalibrate(base, gamma=gamma, keep_openness=False)
    assert float(jnp.max(jnp.abs(jt.residual(y, p)))) < 1e-12
    o = jt.equilibrium_objects(p, base.sol.w, base.sol.Lm)
    np.testing.assert_allclose(np.asarray(o.Lp), np.asarray(base.sol.Lp), rtol=1e-11)
    assert float(p.gamma) == gamma and not np.allclose(np.asarray(p.T), np.asarray(base.params.T), rtol=1e-6)


def test_recalibrate_at_the_estimates_is_the_baseline_and_keeps_openness(base):
    p, y = cf.recalibrate(base)
    for f in ("T", "H", "tau"):
        np.testing.assert_allclose(np.asarray(getattr(p, f)), np.asarray(getattr(base.params, f)), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(y), np.asarray(base.sol.y), rtol=0, atol=1e-10)
    th = float(base.params.theta) * 1.1
    p2, y2 = cf.recalibrate(base, theta=th)
    assert float(jnp.max(jnp.abs(jt.residual(y2, p2)))) < 1e-12
    np.testing.assert_allclose(np.asarray(p2.tau ** -th), np.asarray(base.params.tau ** -base.params.theta),
                               rtol=1e-12)


def test_sensitivity_tables(base, ni):
    rg = cf.sensitivity_gamma(base, (0.005, float(base.params.gamma)), steps=3)
    assert [r.status for r in rg] == ["successful"] * 2
    # at the estimated gamma the re-inverted economy is the baseline: same numbers as no_internet
    assert rg[1].slope == pytest.approx(ni.slope, rel=1e-7)
    assert rg[1].d_log_Uw == pytest.approx(ni.d_log_Uw, rel=1e-7)
    assert rg[0].paper == {"slope": 0.0030, "workers": 3.62, "managers": 3.39}  # Table 10
    rd = cf.sensitivity_delta_I(base, (-0.005, base.delta_I, -0.015), steps=3)
    assert rd[1].d_log_Um == pytest.approx(ni.d_log_Um, rel=1e-12)
    # a stronger internet elasticity is a bigger internet effect (Table 11's pattern)
    assert rd[0].d_log_Uw < rd[1].d_log_Uw < rd[2].d_log_Uw
    assert rd[0].d_log_Um < rd[1].d_log_Um < rd[2].d_log_Um
    assert rd[2].paper["workers"] == 4.60


# ---------------------------------------------------------------------------------------
# Elastic housing (Appendix K)
# ---------------------------------------------------------------------------------------


def test_elastic_eps0_is_the_inelastic_model(base):
    y = base.sol.y + 0.01 * jnp.sin(jnp.arange(2 * N + 2.0))
    np.testing.assert_array_equal(np.asarray(cf.elastic_residual(y, base.params, 0.0)),
                                  np.asarray(jt.residual(y, base.params)))
    p1 = _with_tau(base.params, jnp.log(base.params.tau) - base.delta_I * jnp.outer(base.q, base.q))
    e = cf.solve_elastic(p1, 0.0, base.sol)
    s = jt.solve(p1, y0=base.sol)
    assert e.converged and s.status == "successful"
    np.testing.assert_allclose(np.asarray(e.y), np.asarray(s.y), rtol=0, atol=1e-11)
    np.testing.assert_allclose(np.asarray(cf.elastic_params(base.params, base.sol, 0.0).H),
                               np.asarray(base.params.H), rtol=1e-12)


def test_elastic_jacobian_and_recalibrated_baseline(base):
    eps = 0.135
    pe = cf.elastic_params(base.params, base.sol, eps)
    assert float(jnp.max(jnp.abs(cf.elastic_residual(base.sol.y, pe, eps)))) < 1e-12
    y = base.sol.y + 0.02 * jnp.cos(jnp.arange(2 * N + 2.0))
    Ja = jax.jit(cf.elastic_jacobian)(y, pe, eps)
    Jf = jax.jit(jax.jacfwd(cf.elastic_residual))(y, pe, eps)
    np.testing.assert_allclose(np.asarray(Ja), np.asarray(Jf), rtol=1e-9, atol=1e-11)


def test_elastic_housing_counterfactual(base, ni):
    r = cf.no_internet(base, steps=3, epsilon=0.135)
    assert r.status == "successful"
    assert r.paper["managers"] == 3.89  # Appendix K
    # the counterfactual is an equilibrium of the elastic model (and not of the inelastic one)
    pe = cf.elastic_params(base.params, base.sol, 0.135)
    p1 = _with_tau(pe, jnp.log(pe.tau) - base.delta_I * jnp.outer(base.q, base.q))
    assert float(jnp.max(jnp.abs(cf.elastic_residual(jnp.asarray(r.y), p1, 0.135)))) < 1e-10
    assert abs(r.d_log_Uw - ni.d_log_Uw) > 1e-6


# ---------------------------------------------------------------------------------------
# Digital divide, statistics
# ---------------------------------------------------------------------------------------


def test_digital_divide_policy_q(base):
    q = np.asarray(base.q)
    q1 = cf.digital_divide_q(q, 0.25)
    low = q < np.quantile(q, 0.25)
    np.testing.assert_array_equal(q1[~low], q[~low])
    np.testing.assert_allclose(q1[low], np.median(q))
    r = cf.digital_divide(base, steps=3)
    assert r.status == "successful" and r.effect_sign == 1 and r.settings["n_upgraded"] == int(low.sum())
    # better internet for some cities lowers costs: welfare rises for both groups
    assert r.d_log_Uw > 0 and r.d_log_Um > 0


def test_ols_slope_matches_statsmodels_hc1():
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.3 * x + rng.normal(size=50) * (1 + np.abs(x))
    b, a, se, r2 = cf.ols_slope(y, x)
    fit = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HC1")
    assert b == pytest.approx(fit.params[1], rel=1e-12)
    assert se == pytest.approx(fit.bse[1], rel=1e-10)
    assert r2 == pytest.approx(fit.rsquared, rel=1e-12)


def test_ols_slope_fe_matches_statsmodels_state_dummies_clustered():
    """Column (2) of Tables 7/12: state fixed effects, SEs clustered by state; statsmodels with
    explicit state dummies and cov_type="cluster" (its default small-sample correction) is the
    independent reference."""
    import pandas as pd
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(1)
    n, G = 120, 9
    g = rng.integers(0, G, size=n)
    x = rng.normal(size=n) + 0.5 * g
    y = 0.2 * x + 0.3 * g + rng.normal(size=n) * (1 + 0.1 * g)
    states = np.array([f"S{k}" for k in g], dtype=object)
    b, se, r2 = cf.ols_slope_fe(y, x, states)
    df = pd.DataFrame(dict(y=y, x=x, s=states))
    fit = smf.ols("y ~ x + C(s)", df).fit(cov_type="cluster", cov_kwds={"groups": g})
    assert b == pytest.approx(fit.params["x"], rel=1e-11)
    assert se == pytest.approx(fit.bse["x"], rel=1e-9)
    # the slope differs from the pooled one here (the groups shift both x and y)
    assert abs(b - cf.ols_slope(y, x)[0]) > 0.05
    # one state only: no within-state slope to report
    assert all(np.isnan(v) for v in cf.ols_slope_fe(y, x, ["S"] * n))
    with pytest.raises(ParameterError, match="groups"):
        cf.ols_slope_fe(y, x, states[:-1])


def test_no_internet_reports_the_state_fixed_effects_slope(base, ni):
    import dataclasses

    # without states: NaN, said in the table's notes
    assert np.isnan(ni.slope_state_fe)
    states = np.array(["A", "B", "C", "D"] * (N // 4), dtype=object)
    b2 = dataclasses.replace(base, states=states)
    r = cf.no_internet(b2, steps=3)
    ref, ref_se, _ = cf.ols_slope_fe(r.d_skill_share, r.log_size, states)
    assert r.slope_state_fe == pytest.approx(ref, rel=1e-12) and np.isfinite(r.slope_state_fe_se)
    assert r.slope == pytest.approx(ni.slope, rel=1e-9)        # the pooled slope is unchanged
    assert r.row()["paper_slope_state_fe"] == cf.PAPER["no_internet"]["slope_state_fe"]
    comp = cf.paper_comparison([r])
    assert "slope with state fixed effects" in set(comp["quantity"])
    with pytest.raises(ParameterError, match="states"):
        dataclasses.replace(base, states=states[:-1])


def test_delta_method_se():
    V = np.array([[4.0, 1.0, 0.0], [1.0, 9.0, 0.0], [0.0, 0.0, 1.0]])
    g = {"theta": 1.0, "gamma": -2.0}  # delta_d absent: the number does not depend on it
    assert cf.delta_method_se(g, V, ["theta", "gamma", "delta_d"]) == pytest.approx(math.sqrt(4 - 4 + 36))
    with pytest.raises(ParameterError, match="cov"):
        cf.delta_method_se(g, V[:2, :2], ["theta", "gamma", "delta_d"])


# ---------------------------------------------------------------------------------------
# Gradients: the welfare-gradient map and headline numbers
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wg(base):
    return cf.welfare_gradient(base, fd_cities=[0, 5, N - 1], fd_step=1e-4)


def test_welfare_gradient_map_matches_finite_differences(wg):
    assert wg.status == "successful" and len(wg.fd_check) == 3
    for c in wg.fd_check:
        assert c["rel_err"] < 1e-5, c
    assert np.all(np.isfinite(wg.d_logUw_dq)) and np.any(wg.d_logUw_dq != 0)


def test_welfare_gradient_frame(base, wg):
    df = wg.frame(base)
    for col in ("city", "name", "lat", "lon", "d_logUw_dq", "d_logUm_dq", "rank"):
        assert col in df.columns
    assert sorted(df["rank"]) == list(range(1, N + 1))
    assert df["d_logU_dq"].is_monotonic_decreasing
    w = (float(base.params.Lp_total) * df["d_logUw_dq"] + float(base.params.Lm_total) * df["d_logUm_dq"]) / (
        float(base.params.Lp_total) + float(base.params.Lm_total))
    np.testing.assert_allclose(df["d_logU_dq"], w, rtol=1e-13)


def test_headline_gradients_match_finite_differences(base, ni):
    r = cf.headline_gradients(base, ni, cov=np.diag([0.04, 1e-6, 4e-6]), param_names=["theta", "gamma", "delta_I"])
    chk = r.settings["headline_check"]
    assert chk["slope"] == pytest.approx(ni.slope, rel=1e-8)
    assert chk["workers_pct"] == pytest.approx(ni.workers_pct, rel=1e-8)
    g = r.gradients
    h = 1e-5
    # delta_I: the Table 11 map
    lo, hi = cf.sensitivity_delta_I(base, (base.delta_I - h, base.delta_I + h), steps=2)
    assert g["slope"]["delta_I"] == pytest.approx((hi.slope - lo.slope) / (2 * h), rel=1e-4)
    assert g["managers_pct"]["delta_I"] == pytest.approx((hi.managers_pct - lo.managers_pct) / (2 * h), rel=1e-4)
    # gamma: the Table 10 map (T re-inverted)
    g0 = float(base.params.gamma)
    lo, hi = cf.sensitivity_gamma(base, (g0 - h, g0 + h), steps=2)
    assert g["workers_pct"]["gamma"] == pytest.approx((hi.workers_pct - lo.workers_pct) / (2 * h), rel=1e-4)
    # theta: openness tau^(-theta) held fixed, T and H re-inverted
    th0, ht = float(base.params.theta), 1e-4
    vals = []
    for th in (th0 - ht, th0 + ht):
        p, y = cf.recalibrate(base, theta=th)
        vals.append(cf.no_internet(base, steps=2, params0=p, y_base=y))
    # the regressor is the data's log city size, held fixed as the calibration changes
    sl = [cf.ols_slope(v.d_skill_share, ni.log_size)[0] for v in vals]
    assert g["slope"]["theta"] == pytest.approx((sl[1] - sl[0]) / (2 * ht), rel=1e-4)
    assert g["managers_pct"]["theta"] == pytest.approx((vals[1].managers_pct - vals[0].managers_pct) / (2 * ht),
                                                       rel=1e-4)
    se = math.sqrt(0.04 * g["slope"]["theta"] ** 2 + 1e-6 * g["slope"]["gamma"] ** 2
                   + 4e-6 * g["slope"]["delta_I"] ** 2)
    assert r.delta_se["slope"] == pytest.approx(se, rel=1e-12)


def test_headline_gradient_is_nan_off_the_root(base, ni):
    import copy

    bad = copy.copy(ni)
    bad.settings = dict(ni.settings)
    bad.y = ni.y + 1e-3  # not an equilibrium of the counterfactual economy
    cf.headline_gradients(base, bad)
    assert all(math.isnan(v) for g in bad.gradients.values() for v in g.values())
    assert bad.settings["headline_gradient_status"].startswith("failed")


# ---------------------------------------------------------------------------------------
# run_all
# ---------------------------------------------------------------------------------------


def test_run_all_rejects_bad_config_before_writing(base, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(ParameterError, match="counterfactuals.no_such_key"):
        cf.run_all(base, out, config={"no_such_key": 1})
    with pytest.raises(ParameterError, match="counterfactuals.steps"):
        cf.run_all(base, out, config={"steps": "3"})
    with pytest.raises(ParameterError, match="cov"):
        cf.run_all(base, out, cov=np.eye(2), param_names=["theta", "gamma", "delta_I"])
    assert not out.exists()


def test_run_all_writes_every_output(base, tmp_path):
    cfg = {"steps": 2, "sensitivity_gamma": [0.005], "sensitivity_delta_I": [-0.005], "fd_check_cities": 1}
    paths = cf.run_all(base, tmp_path, cov=np.diag([0.04, 1e-4, 1e-6, 4e-6]),
                       param_names=["theta", "delta_d", "gamma", "delta_I"], config=cfg, progress=False)
    for k in ("counterfactuals", "paper_comparison", "welfare_gradient", "counterfactual_slopes_png",
              "welfare_gradient_map_png", "paper_comparison_txt", "counterfactuals_json"):
        assert paths[k].exists(), k
    df = pd.read_csv(paths["counterfactuals"])
    assert list(df["name"]) == ["no_internet", "no_internet_gamma=0.005", "no_internet_delta_I=-0.005",
                                "digital_divide", "no_internet_elastic_housing"]
    assert (df["status"] == "successful").all()
    row = df.set_index("name").loc["no_internet"]
    assert row["paper_slope"] == 0.0031 and np.isfinite(row["slope_se_delta"]) and row["slope_se_delta"] > 0
    assert np.isfinite(row["direct_workers_logpts"])
    cmp_df = pd.read_csv(paths["paper_comparison"])
    assert {"Table 7 / Section 5.3", "Table 8", "Table 10", "Table 11", "Table 12 / Appendix K"} <= set(cmp_df["table"])
    assert cmp_df["ours_on"].str.contains("model-generated").all() and cmp_df["note"].notna().all()
    wgdf = pd.read_csv(paths["welfare_gradient"])
    assert list(wgdf.columns[:4]) == ["city", "name", "lat", "lon"] and len(wgdf) == N
    for k in ("counterfactual_slopes_png", "welfare_gradient_map_png"):
        assert paths[k].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "model-generated on real US geography" in paths["paper_comparison_txt"].read_text()
    assert not list(tmp_path.glob(".*.tmp-*"))  # atomic writes leave no temporaries


def test_costs_at_the_bound_stay_at_one(base):
    """Pairs with tau_nc = 1 (the bound; the calibration clips fitted log tau < 0 there) cannot get
    cheaper: the digital divide and the gradient map keep them at 1 instead of building an
    invalid tau < 1 (which jt.Params rejects)."""
    logtau = np.asarray(jnp.log(base.params.tau)).copy()
    q = np.asarray(base.q)
    i, j = int(np.argmin(q)), int(np.argsort(q)[1])  # both under-served: the policy lowers their cost
    logtau[i, j] = logtau[j, i] = 0.0
    pr = base.params
    b2 = cf.baseline_from_allocation(alpha=pr.alpha, beta=pr.beta, theta=pr.theta, gamma=pr.gamma, dist=base.dist,
                                     q=base.q, delta_d=base.delta_d, delta_I=base.delta_I, w=base.sol.w,
                                     Lm=base.sol.Lm, tau=jnp.exp(jnp.asarray(logtau)))
    assert b2.sol.status == "successful" and float(b2.params.tau[i, j]) == 1.0
    r = cf.digital_divide(b2, steps=2)
    assert r.status == "successful" and r.settings["n_bounded"] == 2
    wg = cf.welfare_gradient(b2, fd_cities=[i])
    assert wg.fd_check[0]["rel_err"] < 1e-5


def test_printed_numbers_match_the_published_tables():
    """cf.PAPER (the comparison column) against data_moments/jiao_tian/published (typed from the paper
    independently by the data layer)."""
    from spatialjax.models import jiao_tian_data as jd

    def v(table, quantity, column):
        df = jd.published(table)
        return float(df[(df["quantity"] == quantity) & (df["column"] == column)]["value"].iloc[0])

    P = cf.PAPER
    assert P["no_internet"]["slope"] == v("table7", "city_size", "1")
    assert P["no_internet"]["slope_state_fe"] == v("table7", "city_size", "2")
    for who in ("workers", "managers"):
        assert P["no_internet"][who] == v("table8", "total", who)
        assert P["decomposition"][f"direct_{who}"] == v("table8", "direct_fragmentation_cost", who)
        assert P["decomposition"][f"reorg_{who}"] == v("table8", "spatial_reorganization", who)
        assert P["digital_divide"][who] == v("text", f"digital_divide_{who}_welfare", "Section 5.4")
        assert P["elastic_housing"][who] == v("text", f"elastic_housing_{who}_welfare", "Appendix K")
    for g, (sl, w, m) in P["gamma"].items():
        col = f"{g:.3f}"
        assert (sl, w, m) == (v("table10", "slope", col), v("table10", "workers_welfare", col),
                              v("table10", "managers_welfare", col))
    for d, (sl, w, m) in P["delta_I"].items():
        col = f"{d:.3f}"
        assert (sl, w, m) == (v("table11", "slope", col), v("table11", "workers_welfare", col),
                              v("table11", "managers_welfare", col))
    assert P["elastic_housing"]["slope"] == v("table12", "city_size", "1")
    assert P["digital_divide"]["slope"] == v("text", "digital_divide_slope", "Section 5.4 / Figure 8")
    # Table 8 adds up in log points (direct + reorganisation = total), the unit we compare in
    for who in ("workers", "managers"):
        assert P["decomposition"][f"direct_{who}"] + P["decomposition"][f"reorg_{who}"] == pytest.approx(
            P["no_internet"][who], abs=1e-12)


# ---------------------------------------------------------------------------------------
# A fold on the path is reported as a fold, at the s where the branch turns back
# ---------------------------------------------------------------------------------------


def _fold_economy(n=24, D=0.01):
    """24 cities, 12 big (T^(1/theta) = 1.5) and 12 small, Figure-2 parameters (theta = 5, gamma = 0.1,
    alpha = beta = 0.4), uniform openness D = tau^(-theta): the branch that starts near autarky folds
    when the openness rises (MODELS.md §1; the mechanism of the us722 digital-divide failure, where
    one city's manager block folds at s = 0.0033 of the policy)."""
    T = jnp.array([1.5 ** 5] * (n // 2) + [1.0] * (n // 2))
    tau = np.full((n, n), D ** (-1 / 5))
    np.fill_diagonal(tau, 1.0)
    p = jt.Params(alpha=0.4, beta=0.4, theta=5.0, gamma=0.1, T=T, tau=jnp.asarray(tau), H=jnp.ones(n),
                  Lm_total=1.0, Lp_total=2.0)
    sol = jt.solve(p)
    b = cf.Baseline(params=p, sol=sol, q=jnp.ones(n), dist=jnp.ones((n, n)), log_lam=0.0, delta_d=0.0, delta_I=0.0)
    dl = jnp.full((n, n), -(math.log(0.5) - math.log(D)) / 5) * (1 - jnp.eye(n))  # openness 0.01 -> 0.5
    return b, dl


def test_fold_on_the_path_is_reported_with_its_s():
    from spatialjax.continuation import pseudo_arclength

    b, dl = _fold_economy()
    r = cf.run_counterfactual(b, dl, name="fold_case", description="openness 0.01 -> 0.5", steps=4)
    # before the fix this was "stalled" with no location: the halvings ran out at the fold
    assert r.status == "fold" and not r.converged
    assert r.message.startswith(f"fold at s = {r.fold_s:.6g}")
    assert r.s_reached < r.fold_s < min(p["s"] for p in r.path if p["status"] != "successful")
    assert math.isnan(r.slope) and math.isnan(r.d_log_Uw) and r.row()["fold_s"] == r.fold_s
    assert "fold at s" in r.summary() and r.to_dict()["message"] == r.message
    # independent check: a fresh pseudo-arclength run from the baseline finds the same turning point,
    # where dF/dy is singular (a genuine fold, not a solver failure)
    args = (b.params, jnp.log(b.params.tau), dl, jnp.asarray(0.0))
    br = pseudo_arclength(cf._shock_res, b.sol.y, args, 0.0, ds=0.05, ds_max=0.5, n_steps=80, lam_min=-0.5,
                          lam_max=1.0, jac=cf._shock_jac)
    assert len(br.folds) >= 1
    s_f, y_f = br.folds[0]
    # the two runs take different steps; the secant refinement of the turning point is accurate to
    # second order in the step (measured: 2e-6 apart), far inside the distance to the failed step
    assert abs(s_f - r.fold_s) < 1e-4
    J = np.asarray(cf._shock_jac(jnp.asarray(y_f), s_f, args))
    sv = np.linalg.svd(J, compute_uv=False)
    J0 = np.asarray(cf._shock_jac(b.sol.y, 0.0, args))
    sv0 = np.linalg.svd(J0, compute_uv=False)
    # sigma_min -> 0 like sqrt(s* - s) at a fold, so the refined point's s-error of ~1e-6 leaves
    # sigma_min / sigma_max ~ 1e-4 (measured 1.3e-4, vs 0.03 at the baseline): one singular direction
    assert sv[-1] / sv[0] < 1e-2 * sv0[-1] / sv0[0] and sv[-2] / sv[0] > 1e-2 * sv0[-1] / sv0[0]
    # with the locator switched off the old status comes back (the failure is the solver's)
    r0 = cf.run_counterfactual(b, dl, name="fold_case", description="", steps=4, locate_folds=False)
    assert r0.status != "fold" and math.isnan(r0.fold_s) and r0.message == ""
