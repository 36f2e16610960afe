"""Oh (2025) theory model (Sections 2-3): equilibrium BVP, planner, Propositions 1-5, Corollary 1.

Economies are small (n = 20 cells; 10/40 for refinement) so that the file runs within its budget; every
tolerance is stated next to its assertion. The baseline (``TheoryParams()``): workers x ~ U[1, 3],
firms y ~ U[1, 2], M_w = 1, M_f = 0.05 (so that unemployment is 3-4 %), beta = 0.1, alpha = 0.5,
delta_v = 1 (1 - beta~ = 0.0036: "delta_v large"), isoelastic congestion with unit elasticities.
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import spatialjax  # noqa: F401
from spatialjax.errors import ParameterError
from spatialjax.models.oh import theory as th

N = 20


@pytest.fixture(scope="module")
def base():
    p = th.TheoryParams()
    return p, th.solve_equilibrium(p, n_grid=N, refine=True)


@pytest.fixture(scope="module")
def rho0():
    """The rho -> 0 economy of Section 3.2: equilibrium and planner's optimum on the same cells."""
    p = th.TheoryParams(rho=0.0)
    eq = th.solve_equilibrium(p, n_grid=N, refine=False)
    pl = th.solve_planner(p, n_grid=N, refine=False, start=eq)
    return p, eq, pl


@pytest.fixture(scope="module")
def hosios():
    """Hosios (epsilon_lambda = 1 - alpha = 1 - beta = 0.5), b = 0, rho = 0: Corollary 1's assumptions."""
    p = th.TheoryParams(rho=0.0, alpha=0.5, beta=0.5, b=0.0)
    eq = th.solve_equilibrium(p, n_grid=N, refine=False)
    pl = th.solve_planner(p, n_grid=N, refine=False, start=eq)
    return p, eq, pl


# ---------------------------------------------------------------------------------------
# Equilibrium: PAM, boundary conditions, market clearing, refinement
# ---------------------------------------------------------------------------------------


def test_baseline_is_a_pam_equilibrium(base):
    p, r = base
    assert r.converged and r.status == "successful", r.summary()
    assert r.residual < 1e-10
    # Proposition 1: PAM -- both assignments strictly increasing, and the values have increasing
    # differences (A_w, Abar_f increasing), so the first-order conditions pick the global maximum
    assert np.all(np.diff(r.x_nodes) > 0) and np.all(np.diff(r.y_nodes) > 0)
    assert np.all(np.diff(r.A_w) > 0) and np.all(np.diff(r.Af_bar) > 0)
    assert r.pam_ok
    # global incentive compatibility: no cell type gains from any other cell (relative gain <= 1e-9)
    assert r.ic_gain_w <= 1e-9 and r.ic_gain_f <= 1e-9
    # boundary conditions x(0) = x_min, x(1) = x_max, y(0) = y_min, y(1) = y_max, exactly
    assert r.x_nodes[0] == 1.0 and r.x_nodes[-1] == 3.0
    assert r.y_nodes[0] == 1.0 and r.y_nodes[-1] == 2.0


def test_market_clearing_and_flow_balance(base):
    p, r = base
    h = 1.0 / N
    assert abs(h * r.L.sum() - float(p.M_w)) < 1e-10  # int L = M_w (6)
    assert abs(h * r.N.sum() - float(p.M_f)) < 1e-10 * float(p.M_f) * 10  # int N = M_f
    lam = float(p.A) * r.theta ** (1 - float(p.alpha))
    np.testing.assert_allclose(r.u, float(p.delta) / (float(p.delta) + lam), rtol=1e-13)  # (7)
    np.testing.assert_allclose(r.N, r.theta * r.u * r.L, rtol=1e-13)  # V = N, theta = V/(uL)
    # densities (1): int_0^ell L = M_w Q_w(x(ell)) at every node
    cum = np.concatenate([[0.0], np.cumsum(h * r.L)])
    np.testing.assert_allclose(np.asarray(p.Q_w.cdf(jnp.asarray(r.x_nodes))), cum / float(p.M_w), atol=1e-12)
    # prices (6) and wage (10) = the bargaining wage (3)/(A.1) at the local types
    np.testing.assert_allclose(r.r, r.L / 1.0, rtol=1e-13)  # C_r'(H) = H/H_w with H_w = 1, eta_w = 1
    np.testing.assert_allclose(r.wage_schedule(r.x), r.wage, rtol=1e-12)
    assert np.all(r.wage_schedule(r.x * 1.1) > r.wage)  # wages increase in the worker's own type
    assert np.all(r.u > 0.02) and np.all(r.u < 0.06)


def test_grid_refinement_is_second_order(base):
    """The collocation error shrinks about 4x per halving of the cells (second order); the reported
    grid_error is the n vs 2n difference."""
    p, r20 = base
    r10 = th.solve_equilibrium(p, n_grid=10, refine=False)
    r40 = th.solve_equilibrium(p, n_grid=40, refine=False, z0=th._refine_z(r20.state.z, N))
    e1 = th._compare_refined(p, r10.state.z, r20.state.z)
    e2 = th._compare_refined(p, r20.state.z, r40.state.z)
    assert e2 < e1
    assert 3.0 < e1 / e2 < 5.5, (e1, e2)
    assert r20.grid_error == pytest.approx(e2, rel=1e-6)
    assert r20.grid_error < 2e-3


# ---------------------------------------------------------------------------------------
# Propositions 1 and 2: the urban wage premium needs delta_v large
# ---------------------------------------------------------------------------------------


def test_prop2_density_and_wages_increase_for_large_delta_v(base):
    p, r = base
    assert float(p.one_minus_beta_tilde) < 0.01
    assert np.all(np.diff(r.L) > 0)  # population density increases in ell
    assert np.all(np.diff(r.wage) > 0)  # wages w(x(ell), y(ell), ell) increase in ell
    assert r.urban_wage_premium > 0.5  # d log w / d log L across locations


def test_prop1_small_delta_v_breaks_the_urban_wage_premium(base):
    """With delta_v small (1 - beta~ = 0.72) firms' threat point B_w is large: the sorting conditions
    then require density to *fall* with ell, wages still rise, so denser places pay less (no urban wage
    premium); the collocation root is moreover not an equilibrium (low types gain from the cheap
    top cells), and it is flagged, not returned as one."""
    p_large, r_large = base
    p = p_large.replace(delta_v=0.001)
    r = th.solve_equilibrium(p, n_grid=N, refine=False)
    assert r.residual < 1e-10  # the discrete first-order conditions are solved ...
    assert float(p.one_minus_beta_tilde) > 0.7
    assert np.all(np.diff(r.L) < 0)  # ... but density decreases in ell
    assert r.urban_wage_premium < 0 < r_large.urban_wage_premium
    assert not r.converged and r.status == "rejected" and r.message.startswith("not incentive compatible: workers")
    assert r.ic_gain_w > 0.01


def test_pam_violation_is_flagged_not_returned(base):
    """A collocation state whose job opportunities A_w fall in ell violates PAM (the values no longer have
    increasing differences); the report says so and converged is False."""
    p, r = base
    z = np.asarray(r.state.z).copy()
    # a tightness profile that falls steeply in ell makes lambda, hence A_w, fall
    z[N:] = z[N:] + np.linspace(6.0, -6.0, N)
    fake = th.EqState(z=jnp.asarray(z), residual=jnp.asarray(0.0), code=jnp.asarray(0), steps=jnp.asarray(0),
                      sigma_min=jnp.asarray(1.0))
    bad = th.TheoryResult(p, fake, N)
    assert np.any(np.diff(bad.A_w) <= 0)
    assert not bad.pam_ok and bad.status == "rejected" and not bad.converged and bad.message.startswith("PAM violated")


# ---------------------------------------------------------------------------------------
# Planner (Section 3.2) and Proposition 3
# ---------------------------------------------------------------------------------------


def test_planner_is_a_maximum_satisfying_A12_and_corrected_A13(rho0):
    p, eq, pl = rho0
    assert pl.converged and pl.status == "successful", pl.summary()
    assert pl.residual < 1e-9 and pl.hessian_max_eig < 0
    # the same conditions on 2n cells: residuals shrink at second order; the printed (A.13), with its
    # spurious factor epsilon_lambda (MODELS.md), does not vanish
    pl40 = th.solve_planner(p, n_grid=2 * N, refine=False, start=None)
    c20, c40 = pl.conditions, pl40.conditions
    assert c20["A12"] < 0.05 and c20["A13"] < 0.05
    assert 3.0 < c20["A12"] / c40["A12"] < 5.5
    assert 3.0 < c20["A13"] / c40["A13"] < 5.5
    assert c40["A13_printed"] > 0.05 and c40["A13_printed"] > 20 * c40["A13"]
    # (11) with C'' rather than the printed C': h_bar^2 C_r'' L' L + C_v'' N' N ~ 0, i.e. for unit
    # elasticities L^2/H_w + N^2/H_f is constant across ell (to O(h^2))
    inv = pl40.L**2 / 1.0 + pl40.N**2 / 0.05
    assert np.ptp(inv) / inv.mean() < 0.01


def test_prop3_equilibrium_is_more_concentrated_than_the_optimum(rho0):
    p, eq, pl = rho0
    assert eq.converged
    phi_eq = np.asarray(th.concentration_terms(p, eq.state))
    phi_pl = np.asarray(th.concentration_terms(p, pl.state))
    # (A.16): changes in congestion costs are strictly positive everywhere in equilibrium ...
    assert np.all(phi_eq > 0)
    # ... and (A.12) zero at the optimum, to O(h^2): at n = 20 the planner's largest |Phi| (next to the
    # steep bottom cells) is 15 % of the equilibrium's smallest value, its median below 1 %
    assert np.max(np.abs(phi_pl)) < 0.2 * phi_eq.min()
    assert np.median(np.abs(phi_pl)) < 0.01 * phi_eq.min()
    # in aggregate: higher congestion costs, more people in the densest places, lower net output
    assert eq.congestion > pl.congestion
    assert np.mean(eq.L**2) > np.mean(pl.L**2)
    assert eq.L[-2:].mean() > pl.L[-2:].mean()  # top decile of locations
    assert eq.net_output < pl.net_output


def test_corollary1_transfers_implement_the_optimum(rho0):
    """Far from Hosios (beta = 0.1, epsilon_lambda = 0.5) the location transfers make the planner's
    allocation satisfy every first-order condition: the equilibrium with them, solved from the cold
    start, reproduces it to solver tolerance. Global incentive compatibility is checked for every
    type and cell (MODELS.md: it need not hold) and reported."""
    p, eq, pl = rho0
    tr = th.transfers(p, pl)
    assert abs(np.sum(tr["t_w"] * pl.L)) < 1e-10 and abs(np.sum(tr["t_f"] * pl.N)) < 1e-10
    et = th.solve_with_transfers(p, tr["t_w"], tr["t_f"])
    assert et.residual < 1e-10
    np.testing.assert_allclose(et.L, pl.L, rtol=1e-8)
    np.testing.assert_allclose(et.N, pl.N, rtol=1e-8)
    np.testing.assert_allclose(et.x_nodes, pl.x_nodes, rtol=1e-8)
    assert abs(et.net_output - pl.net_output) < 1e-9
    # the report of global incentive compatibility with transfers is consistent with the status
    assert (et.status == "successful") == (et.ic_gain_w <= th.IC_TOL and et.ic_gain_f <= th.IC_TOL and et.pam_ok)
    assert et.status in ("successful", "rejected")
    assert (et.status == "rejected") == bool(et.message)


def test_corollary1_closed_form_at_hosios(hosios):
    """Hosios (epsilon_lambda = 1 - alpha = 1 - beta) and b = 0: the transfers' slopes equal Corollary 1's
    t_w' = -(1-beta)(1-u)u/(1-(1-beta)(1-u)) y x' and t_f' = -beta (1-u)(L/V) x y' (to O(h) relative,
    stated 10 % at n = 20), and both transfers decrease in ell. Even here the location-only transfers
    are not globally incentive compatible: the lowest firm types would move to a cell where they do not
    hire (negative surplus, max{., 0} in (5)) but pay less overhead net of the transfer."""
    p, eq, pl = hosios
    assert pl.converged
    c = th.corollary1_transfers(p, pl)
    assert c["hosios"]
    for k in ("tw", "tf"):
        num, paper = c[f"{k}_slope"], c[f"{k}_slope_paper"]
        assert np.all(num < 0) and np.all(paper < 0)
        assert np.max(np.abs(num - paper)) / np.max(np.abs(paper)) < 0.1, (k, num, paper)
    tr = th.transfers(p, pl)
    assert np.all(np.diff(tr["t_w"]) < 0) and np.all(np.diff(tr["t_f"]) < 0)
    et = th.solve_with_transfers(p, tr["t_w"], tr["t_f"])
    np.testing.assert_allclose(et.L, pl.L, rtol=1e-8)
    assert et.ic_gain_w <= th.IC_TOL  # workers: globally optimal
    assert et.status == "rejected" and et.ic_gain_f > 0.05  # firms: not
    assert et.message.startswith("not incentive compatible: firms")
    k, j = et.ic_worst_f
    assert k == 0 and j > 0
    assert float(pl.y[k]) - float(p.b) - et.B_f[j] < 0  # the deviating firm would not hire


def test_prop3_per_type_claim(rho0, hosios):
    """Proposition 3 says each type locates higher than the planner would designate. At Hosios every
    worker and firm type does (compared as allocations); at beta = 0.1 every firm type does, but the
    lowest worker types sit *lower* than in the optimum (MODELS.md: the per-worker claim fails far from
    Hosios), while the aggregate claim (test above) still holds."""
    _, eq, pl = hosios
    c = th.compare_locations(eq, pl)
    assert c["share_w"] == 1.0 and c["share_f"] == 1.0
    _, eq, pl = rho0
    c = th.compare_locations(eq, pl)
    assert c["share_f"] == 1.0
    assert 0.8 < c["share_w"] < 1.0 and c["gap_w"][0] < 0 < c["gap_w"][-1]


# ---------------------------------------------------------------------------------------
# Proposition 4 (neoclassical benchmark) and Proposition 5 (observational equivalence)
# ---------------------------------------------------------------------------------------


def test_prop4_neoclassical_benchmark_has_flat_density():
    p = th.TheoryParams(M_f=1.0, H_f=1.0)
    nb = th.neoclassical_benchmark(p, n_grid=N, seed_tilt=0.5)
    assert nb.converged and nb.residual < 1e-10
    # (2) flat density, to solver tolerance, found from a tilted start
    assert nb.density_spread < 1e-9
    np.testing.assert_allclose(nb.L, nb.N, rtol=1e-10)
    # (1) PAM and (3) wages equal to a single nationwide market's (Becker) wage, to O(h^2)
    assert np.all(np.diff(nb.x) > 0) and np.all(np.diff(nb.y) > 0)
    assert nb.wage_gap < 2e-3
    with pytest.raises(ParameterError) as e:
        th.neoclassical_benchmark(th.TheoryParams(), n_grid=N)
    assert e.value.field == "M_f"


def test_prop5_one_sided_sorting_economy_has_the_same_cross_section(base):
    """Proposition 5: a one-sided sorting economy (homogeneous firms, local TFP A_bar(ell) = y(ell)/y_min,
    business-services cost backed out from the cross-section as in A.8), solved forward from a cold
    start, reproduces the two-sided economy's wages, densities and unemployment rates."""
    p, r = base
    os_ = th.one_sided_equivalent(p, r)
    assert os_.equilibrium.residual < 1e-10
    assert os_.gap_wage < 1e-8 and os_.gap_L < 1e-8 and os_.gap_u < 1e-8
    # the two economies differ: in one productivity is embodied in firms, in the other in places
    assert np.ptp(os_.equilibrium.y) == 0.0 and np.ptp(r.y) > 0.5
    assert np.ptp(np.asarray(os_.params.A_bar)) > 0.5


# ---------------------------------------------------------------------------------------
# Differentiability, distributions, bad input, reports
# ---------------------------------------------------------------------------------------


def test_implicit_gradient_of_output_matches_finite_differences(base):
    p, r = base
    z0 = r.state.z

    def Y(dv, beta):
        q = p.replace(delta_v=dv, beta=beta)
        return th.aggregate_output(q, th.equilibrium_state(q, N, z0=z0))

    g = jax.jit(jax.grad(Y, argnums=(0, 1)))(jnp.asarray(1.0), jnp.asarray(0.1))

    def f(dv, beta):  # finite differences through the same compiled solve as solve_equilibrium
        q = p.replace(delta_v=dv, beta=beta)
        st_ = th._eq_state_jit(q, N, t_w=jnp.zeros(N), t_f=jnp.zeros(N), z0=z0)
        assert int(st_.code) == 0
        return float(th._report_arrays(q, st_.z)["output"])

    hd, hb = 1e-4, 1e-5
    fd_dv = (f(1.0 + hd, 0.1) - f(1.0 - hd, 0.1)) / (2 * hd)
    fd_b = (f(1.0, 0.1 + hb) - f(1.0, 0.1 - hb)) / (2 * hb)
    assert abs(float(g[0])) > 1e-6 and abs(float(g[1])) > 1e-3
    assert float(g[0]) == pytest.approx(float(fd_dv), rel=1e-5)
    assert float(g[1]) == pytest.approx(float(fd_b), rel=1e-5)


PARETO_CUSTOM = th.CustomDistribution(lambda x: (1 - x ** -2.5) / (1 - 2.0 ** -2.5),
                                      lambda x: 2.5 * x ** -3.5 / (1 - 2.0 ** -2.5), 1.0, 2.0)
DISTS = [th.Uniform(1.0, 3.0), th.TruncatedLognormal(0.3, 0.4, 1.0, 3.0), th.Pareto(2.5, 1.0, 3.0),
         th.CustomDistribution(lambda x: (x**2 - 1.0) / 8.0, lambda x: x / 4.0, 1.0, 3.0)]


@eqx.filter_jit
def _roundtrip(Q, p):
    x = Q.icdf(p[None])[0]
    xm = jnp.clip(x, Q.lo + 1e-3, Q.hi - 1e-3)
    return x, Q.cdf(x), jax.grad(Q.cdf)(xm), Q.pdf(xm)


@settings(max_examples=15, deadline=None)
@given(p=st.floats(0.0, 1.0))
def test_distributions_quantile_cdf_and_density(p):
    for Q in DISTS:
        x, F, dF, f = (float(v) for v in _roundtrip(Q, jnp.asarray(p)))
        assert float(Q.lo) - 1e-12 <= x <= float(Q.hi) + 1e-12
        assert F == pytest.approx(p, abs=1e-10)  # Q(Q^{-1}(p)) = p
        assert dF == pytest.approx(f, rel=1e-8)  # the density is the derivative of the CDF
    # the numerically inverted CustomDistribution equals the closed-form Pareto quantile
    par = th.Pareto(2.5, 1.0, 2.0)
    q = jnp.asarray([p])
    assert float(PARETO_CUSTOM.icdf(q)[0]) == pytest.approx(float(par.icdf(q)[0]), rel=1e-12, abs=1e-12)


def test_other_distributions_solve():
    """Truncated lognormal workers and (user-supplied, numerically inverted) truncated Pareto firms give a
    PAM equilibrium that clears both markets; the node types are the closed-form Pareto quantiles of the
    firm population shares."""
    p = th.TheoryParams(Q_w=th.TruncatedLognormal(0.3, 0.4, 1.0, 3.0), Q_f=PARETO_CUSTOM)
    r = th.solve_equilibrium(p, n_grid=10, refine=False)
    assert r.converged and r.pam_ok and r.residual < 1e-10, r.summary()
    assert abs(r.N.sum() / 10 - float(p.M_f)) < 1e-12
    shares = np.concatenate([[0.0], np.cumsum(r.N)]) / r.N.sum()
    np.testing.assert_allclose(r.y_nodes, np.asarray(th.Pareto(2.5, 1.0, 2.0).icdf(jnp.asarray(shares))), rtol=1e-10)


@pytest.mark.parametrize("kw, field", [
    (dict(M_w=-1.0), "M_w"), (dict(M_f=0.0), "M_f"), (dict(beta=1.0), "beta"), (dict(beta=0.0), "beta"),
    (dict(alpha=1.5), "alpha"), (dict(delta=float("nan")), "delta"), (dict(rho=-0.1), "rho"),
    (dict(A=float("inf")), "A"), (dict(b=1.5), "b"), (dict(h_bar=0.0), "h_bar"), (dict(eta_w=-1.0), "C_r.eta"),
    (dict(Q_w="uniform"), "Q_w"), (dict(gamma=1.0), "gamma"),
])
def test_bad_parameters_raise_parameter_error(kw, field):
    with pytest.raises(ParameterError) as e:
        th.TheoryParams(**kw)
    assert e.value.field == field


def test_bad_distributions_and_options_raise():
    for make, field in [(lambda: th.Uniform(2.0, 1.0), "Uniform.lo"), (lambda: th.Uniform(0.0, 1.0), "Uniform.lo"),
                        (lambda: th.TruncatedLognormal(0.0, -1.0, 1.0, 2.0), "TruncatedLognormal.sigma"),
                        (lambda: th.Pareto(2.0, 3.0, 3.0), "Pareto.lo"),
                        (lambda: th.Pareto(float("nan"), 1.0, 3.0), "Pareto.shape"),
                        (lambda: th.CustomDistribution(lambda x: x, lambda x: 1.0 + 0 * x, 1.0, 2.0), "CustomDistribution.cdf")]:
        with pytest.raises(ParameterError) as e:
            make()
        assert e.value.field == field
    p = th.TheoryParams()
    for kw, field in [(dict(n_grid=2), "n_grid"), (dict(method="shooting"), "method"),
                      (dict(t_w=np.zeros(3)), "t_w"), (dict(t_f=np.array([np.nan] * N)), "t_f")]:
        kw.setdefault("n_grid", N)
        with pytest.raises(ParameterError) as e:
            th.solve_equilibrium(p, **kw)
        assert e.value.field == field


def test_reports_summary_json(base, rho0):
    p, r = base
    s = r.summary()
    assert isinstance(s, str) and "successful" in s and str(r) == s
    d = json.loads(r.to_json())
    assert d["status"] == "successful" and d["converged"] is True and len(d["L"]) == N
    assert d["residual"] == pytest.approx(r.residual)
    _, _, pl = rho0
    assert "(A.12)" in pl.summary() and json.loads(pl.to_json())["hessian_max_eig"] < 0
