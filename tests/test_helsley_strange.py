"""Helsley & Strange (2012) coagglomeration model.

The paper prints no numbers (MODELS.md §5), so the tests are the Appendix closed forms
(A.18)-(A.25), the corrected (A.8), and Propositions 1-4 checked on randomly drawn parameters
that satisfy the assumptions. Every comparison states its tolerance.
"""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from spatialjax.errors import ConvergenceError, ParameterError
from spatialjax.models import helsley_strange as hs

RTOL = 1e-9


# ------------------------------------------------------------------ parameter strategies

@st.composite
def appendix_params_I2(draw, ratio_between_optima=True):
    """(A.1), I = 2, satisfying alpha > t, beta > gamma > 0, theta > 1, Assumptions 1 and 2
    (theta[i, i] > theta[i, k] and theta[k, k] > theta[i, k]); N on a ratio line that meets the
    contract curve between the type optima (footnote 14)."""
    alpha = draw(st.floats(0.5, 3.0))
    t = alpha * draw(st.floats(0.05, 0.9))
    beta = draw(st.floats(0.5, 3.0))
    gamma = beta * draw(st.floats(0.05, 0.9))
    d = [draw(st.floats(1.3, 3.0)) for _ in range(2)]
    th = np.diag(d)
    for i, k in ((0, 1), (1, 0)):
        th[i, k] = 1.0 + draw(st.floats(0.05, 0.95)) * (min(d[i], d[k]) - 1.0)
    p = hs.Params(alpha=alpha, beta=beta, gamma=gamma, t=t, theta=th)
    if ratio_between_optima:
        cf = hs.closed_form_I2(p)
        r1 = float(cf["type1"][1] / cf["type1"][0])
        r2 = float(cf["type2"][1] / cf["type2"][0])
        rho = r1 + draw(st.floats(0.05, 0.95)) * (r2 - r1)
        p = hs.Params(alpha=alpha, beta=beta, gamma=gamma, t=t, theta=th, N=[100.0, 100.0 * rho])
    return p


@st.composite
def appendix_params_I3(draw):
    """(A.1), I = 3, Assumptions 1 and 2, gamma small enough that type optima are interior maxima."""
    alpha = draw(st.floats(0.5, 2.0))
    t = alpha * draw(st.floats(0.05, 0.8))
    beta = draw(st.floats(0.8, 2.0))
    gamma = beta * draw(st.floats(0.0, 0.05))
    d = [draw(st.floats(1.3, 3.0)) for _ in range(3)]
    th = np.diag(d)
    for i, k in itertools.permutations(range(3), 2):
        th[i, k] = 1.0 + draw(st.floats(0.05, 0.95)) * (min(d[i], d[k]) - 1.0)
    N = [draw(st.floats(50.0, 150.0)) for _ in range(3)]
    return hs.Params(alpha=alpha, beta=beta, gamma=gamma, t=t, theta=th, N=N)


# ------------------------------------------------------------------ closed forms (A.18)-(A.25)

def test_default_type_optima_match_A18_A19():
    p = hs.default_params()
    cf = hs.closed_form_I2(p)
    # hand computation for the default economy: 1/(beta^2-gamma^2) = 4/3
    np.testing.assert_allclose(cf["type1"], [8 / 3, 7 / 3], rtol=1e-14)
    np.testing.assert_allclose(cf["type2"], [1.8, 2.2], rtol=1e-14)
    np.testing.assert_allclose(hs.type_optimum(p, 0), cf["type1"], rtol=RTOL)
    np.testing.assert_allclose(hs.type_optimum(p, 1), cf["type2"], rtol=RTOL)
    res = hs.solve_type_optimum(p, 0)
    assert bool(res.is_max) and float(res.foc_residual) < 1e-10
    # Hessian of V_i for (A.1), I = 2, c = tN is [[-beta, gamma], [gamma, -beta]]: max eig = gamma - beta
    assert float(res.hessian_max_eig) == pytest.approx(0.5 - 1.0, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(appendix_params_I2(ratio_between_optima=False), st.floats(0.0, 1.0))
def test_type_optima_and_contract_curve_match_closed_forms(p, lam):
    cf = hs.closed_form_I2(p)
    np.testing.assert_allclose(hs.type_optimum(p, 0), cf["type1"], rtol=RTOL)   # (A.18)
    np.testing.assert_allclose(hs.type_optimum(p, 1), cf["type2"], rtol=RTOL)   # (A.19)
    np.testing.assert_allclose(hs.contract_curve(p, lam), cf["contract"](lam), rtol=RTOL)  # (A.20)-(A.21)
    # (A.22)-(A.25): each type optimum is the intersection of its two loci
    for i, opt in ((0, cf["type1"]), (1, cf["type2"])):
        assert float(hs.type_optimal_loci_I2(p, i, 0, opt[1])) == pytest.approx(float(opt[0]), rel=1e-12)
        assert float(hs.type_optimal_loci_I2(p, i, 1, opt[0])) == pytest.approx(float(opt[1]), rel=1e-12)
    # intercepts in the text of Figure 3 (Assumptions 1 and 2): n*1_1(0) > n*1_2(0), n*1_1(0) > n*2_1(0),
    # n*2_2(0) > n*2_1(0), n*2_2(0) > n*1_2(0)
    z = lambda i, k: float(hs.type_optimal_loci_I2(p, i, k, 0.0))  # noqa: E731
    assert z(0, 0) > z(0, 1) and z(0, 0) > z(1, 0) and z(1, 1) > z(1, 0) and z(1, 1) > z(0, 1)


def test_loci_A22_A25_zero_the_marginal_utility():
    """On the locus n*^i_k(n_other), dV_i/dn_k = 0 (checked by autodiff of (A.1)/(III.6))."""
    p = hs.default_params()
    for i, k in itertools.product(range(2), range(2)):
        for other in (0.0, 0.7, 2.5):
            nk = hs.type_optimal_loci_I2(p, i, k, other)
            n = jnp.zeros(2).at[k].set(nk).at[1 - k].set(other)
            assert abs(float(hs.utility_jacobian(p, n)[i, k])) < 1e-13


def test_contract_curve_path_is_one_vmapped_solve_and_spans_type_optima():
    p = hs.default_params()
    lams = jnp.linspace(0.0, 1.0, 11)
    path = hs.contract_curve_path(p, lams)
    cf = hs.closed_form_I2(p)
    np.testing.assert_allclose(path, jax.vmap(cf["contract"])(lams), rtol=RTOL)
    # lambda = 1 is the type-1 optimum, lambda = 0 the type-2 optimum (text after (IV.5))
    np.testing.assert_allclose(path[-1], cf["type1"], rtol=RTOL)
    np.testing.assert_allclose(path[0], cf["type2"], rtol=RTOL)


# ------------------------------------------------------------------ the (A.8) misprint

def test_A8_misprint_corrected():
    """dg_i/dn_i - dg_k/dn_i = alpha (theta^i_i - theta^k_i) (MODELS.md), not the printed
    alpha (theta^i_i - theta^i_k), which repeats (A.7)."""
    th = np.array([[2.0, 1.2, 1.1], [1.6, 2.5, 1.3], [1.4, 1.7, 2.2]])
    p = hs.Params(alpha=1.3, beta=1.0, gamma=0.2, t=0.4, theta=th)
    rng = np.random.default_rng(3)
    for n in rng.uniform(0.2, 3.0, (5, 3)):
        Dg = np.asarray(jax.jacfwd(lambda m: hs.productivity(p, m))(jnp.asarray(n)))  # [i, k] = dg_i/dn_k
        for i, k in itertools.permutations(range(3), 2):
            diff = Dg[i, i] - Dg[k, i]
            assert diff == pytest.approx(1.3 * (th[i, i] - th[k, i]), abs=1e-12)
            printed = 1.3 * (th[i, i] - th[i, k])
            assert abs(diff - printed) > 0.05  # the printed (A.8) is wrong for this theta


def test_assumption2_uses_corrected_A8():
    # A1 holds (theta[i,i] > theta[i,k]) but A2 fails: industry 2 values type-1 workers more
    # (theta^2_1 = 2.5) than industry 1 does (theta^1_1 = 2). The printed (A.8) would say A2 holds.
    p = hs.Params(theta=[[2.0, 1.5], [2.5, 3.0]])
    a = hs.check_assumptions(p)
    assert a["A1 (III.2)"] and a["A1 closed form theta^i_i > theta^i_k (A.7)"]
    assert not a["A2 (III.3)"]
    assert not a["A2 closed form theta^i_i > theta^k_i (corrected A.8)"]
    assert hs.check_assumptions(hs.default_params())["A2 (III.3)"]


# ------------------------------------------------------------------ Proposition 1 / (A.12)-(A.13)

@settings(max_examples=25, deadline=None)
@given(appendix_params_I3())
def test_prop1_plurality_and_A12_A13_for_I3(p):
    th = np.asarray(p.theta)
    a, b, g = float(p.alpha), float(p.beta), float(p.gamma)
    for i in range(3):
        res = hs.solve_type_optimum(p, i)
        assert bool(res.is_max), res.status
        n = np.asarray(res.n)
        others = [k for k in range(3) if k != i]
        assert all(n[i] > n[k] for k in others)                          # Proposition 1
        for k in others:                                                  # (A.12)
            (s,) = [x for x in range(3) if x not in (i, k)]
            assert n[i] - n[k] == pytest.approx(a * (th[i, i] - th[i, k]) / (b + g * n[s]), rel=1e-8)
        k, k2 = others                                                    # (A.13)
        (s,) = [x for x in range(3) if x not in (k, k2)]
        assert n[k] - n[k2] == pytest.approx(a * (th[i, k] - th[i, k2]) / (b + g * n[s]), rel=1e-7, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(appendix_params_I2(ratio_between_optima=False))
def test_prop1_plurality_I2(p):
    n1, n2 = hs.type_optimum(p, 0), hs.type_optimum(p, 1)
    assert float(n1[0]) > float(n1[1])   # type-1 optimum below the 45-degree line (Figure 1)
    assert float(n2[1]) > float(n2[0])


# ------------------------------------------------------------------ Proposition 2

@settings(max_examples=25, deadline=None)
@given(appendix_params_I3(), st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3))
def test_prop2_pareto_efficient_clusters_are_unstable_for_every_type(p, w):
    lam = np.asarray(w) / np.sum(w)
    opt = hs.solve_contract_curve(p, lam)
    assert bool(opt.is_max), opt.status
    D = np.asarray(hs.utility_jacobian(p, opt.n))
    # FOC (IV.5): sum_i lam_i dV_i/dn_k = 0
    np.testing.assert_allclose(lam @ D, 0.0, atol=1e-10)
    # Assumption 2 => dV_k/dn_k > weighted average over i = 0: no type is stable (Proposition 2)
    assert np.all(np.diag(D) > 0)


@settings(max_examples=30, deadline=None)
@given(appendix_params_I2())
def test_cpe_matches_closed_form_and_is_not_nash(p):
    cpe = hs.constrained_pareto_efficient(p)
    assert cpe.converged and cpe.exists, cpe.status
    # closed form: (A.20)-(A.21) are affine in lambda; the ratio line (V.2) n2 = rho n1 fixes lambda
    cf = hs.closed_form_I2(p)
    rho = float(p.N[1] / p.N[0])
    f = lambda lam: float(cf["contract"](lam)[1] - rho * cf["contract"](lam)[0])  # noqa: E731
    lam_cf = f(0.0) / (f(0.0) - f(1.0))
    assert float(cpe.lam[0]) == pytest.approx(lam_cf, rel=1e-8)
    np.testing.assert_allclose(cpe.n, cf["contract"](lam_cf), rtol=1e-8)
    assert cpe.J == pytest.approx(float(jnp.sum(p.N)) / float(jnp.sum(cpe.n)), rel=1e-12)
    assert not cpe.is_nash and np.all(np.asarray(cpe.own_marginal) > 0)   # Proposition 2


def test_cpe_derivative():
    """d n^CPE / d(t, gamma) through the CPE solve equals the derivative of its closed form."""
    def closed(p):
        cf = hs.closed_form_I2(p)
        rho = p.N[1] / p.N[0]
        f0 = cf["contract"](0.0)[1] - rho * cf["contract"](0.0)[0]
        f1 = cf["contract"](1.0)[1] - rho * cf["contract"](1.0)[0]
        return cf["contract"](f0 / (f0 - f1))

    mk = lambda x: hs.Params(t=x[0], gamma=x[1], N=[100.0, 110.0])  # noqa: E731
    x = jnp.array([0.5, 0.4])
    np.testing.assert_allclose(jax.jacrev(lambda x: hs.cpe_allocation(mk(x)))(x),   # reverse mode: solve_root's implicit VJP
                               jax.jacfwd(lambda x: closed(mk(x)))(x), rtol=1e-8, atol=1e-12)
    with pytest.raises(ConvergenceError):
        hs.cpe_allocation(hs.Params(N=[100.0, 300.0]))   # ray misses the contract curve


def test_cpe_reports_when_ratio_ray_misses_contract_curve():
    # N2/N1 = 3 is outside [n*1_2/n*1_1, n*2_2/n*2_1] = [0.875, 1.22] (footnote 14)
    p = hs.Params(N=[100.0, 300.0])
    cpe = hs.constrained_pareto_efficient(p)
    assert not cpe.exists
    assert cpe.status == "empty" and cpe.converged and not cpe.exists
    assert "footnote 14" in cpe.message


# ------------------------------------------------------------------ symmetric Nash equilibria

def _nash_closed_form_I2(p):
    """Stability and autarky bounds along the ratio ray for (A.1), I = 2, c = tN."""
    a, b, g, t = (float(x) for x in (p.alpha, p.beta, p.gamma, p.t))
    th = np.asarray(p.theta)
    r = np.asarray(p.ratio)
    V0 = np.asarray(p.V0)
    stab, aut = [], []
    curv = b / 2 * (r @ r) - g * r[0] * r[1]
    for i in range(2):
        k = 1 - i
        slope = b * r[i] - g * r[k]  # d/dS of -dV_i/dn_i
        stab.append((a * th[i, i] - t) / slope if slope > 0 else np.inf)
        lin = a * th[i] @ r - t
        disc = lin ** 2 - 4 * curv * V0[i]
        aut.append((lin + math.sqrt(disc)) / (2 * curv) if disc >= 0 else -np.inf)
    return max(stab), min(aut), int(np.argmax(stab)), int(np.argmin(aut))


def test_default_nash_interval():
    p = hs.default_params()
    ns = hs.nash_interval(p)
    # hand computation: stability of type 1 binds at N^j = 1.5/0.25 = 6 (type 2: 1.3/0.25 = 5.2);
    # autarky of type 2 binds at 1.0/0.125 = 8 (type 1: 1.25/0.125 = 10)
    assert ns.exists and ns.components == 1
    assert ns.S_lo == pytest.approx(6.0, rel=1e-9) and ns.S_hi == pytest.approx(8.0, rel=1e-9)
    assert "stability of type 1" in ns.lower_bound and "autarky of type 2" in ns.upper_bound
    assert ns.J_range == pytest.approx((200 / 8, 200 / 6), rel=1e-9)
    # too-large clusters: Nash scales exceed the CPE scale 50/11 and the welfare-maximizing one (4.5)
    cpe = hs.constrained_pareto_efficient(p)
    assert cpe.S == pytest.approx(50 / 11, rel=1e-10)
    assert ns.S_lo > cpe.S and ns.S_eff == pytest.approx(4.5, rel=1e-7)


@settings(max_examples=20, deadline=None)
@given(appendix_params_I2(), st.floats(-0.5, 0.5))
def test_nash_interval_matches_closed_form_and_lies_beyond_cpe(p, v0):
    p = eqx.tree_at(lambda q: q.V0, p, jnp.full(2, v0))
    lo, hi, ilo, ihi = _nash_closed_form_I2(p)
    ns = hs.nash_interval(p)
    if not lo < hi:
        assert not ns.exists
        return
    # the grid (4001 points on (0, S_max]) cannot see an interval narrower than its spacing
    assume(hi - lo > max(3 * ns.S_max / 4001, 0.01 * hi))
    assert ns.exists
    assert ns.S_lo == pytest.approx(lo, rel=1e-8) and ns.S_hi == pytest.approx(hi, rel=1e-8)
    assert f"stability of type {ilo + 1}" in ns.lower_bound and f"autarky of type {ihi + 1}" in ns.upper_bound
    # independent check of the conditions just inside / outside the interval
    r = p.ratio
    for S, inside in ((lo * 1.001, True), (hi * 0.999, True), (lo * 0.999, False), (hi * 1.001, False)):
        n = S * r
        ok = bool(np.all(np.diag(hs.utility_jacobian(p, n)) < 0) and np.all(hs.utility(p, n) >= p.V0))
        assert ok == inside
    cpe = hs.constrained_pareto_efficient(p)
    assert ns.S_lo > cpe.S   # Nash clusters are too large (Section V.B, Figure 4)


# ------------------------------------------------------------------ Proposition 3

@settings(max_examples=25, deadline=None)
@given(appendix_params_I2(ratio_between_optima=False), st.floats(0.01, 0.95), st.randoms(use_true_random=False))
def test_prop3_specialized_interval(p, u, rnd):
    a, b, t = float(p.alpha), float(p.beta), float(p.t)
    th = np.asarray(p.theta)
    nS = (a * np.diag(th) - t) / b                    # argmax of V_i^i(n) = (theta_ii a - t) n - b n^2/2
    VS = (a * np.diag(th) - t) * nS - b / 2 * nS ** 2
    Vx = np.array([[(a * th[i, k] - t) * nS[k] - b / 2 * nS[k] ** 2 for k in range(2)] for i in range(2)])
    lo_v0 = np.max(np.where(np.eye(2, dtype=bool), -np.inf, Vx), axis=1)   # Assumption 3 needs V0 >= this
    assume(np.all(lo_v0 < VS - 1e-3))
    V0 = lo_v0 + u * (VS - lo_v0)
    p = eqx.tree_at(lambda q: q.V0, p, jnp.asarray(V0))
    sp = hs.specialized_equilibria(p)
    assert sp.converged and sp.second_order and sp.exists
    assert hs.check_assumptions(p)["A3 weak complementarities (VI.2)"]
    lin = a * np.diag(th) - t
    nA = (lin + np.sqrt(lin ** 2 - 2 * b * V0)) / b
    np.testing.assert_allclose(sp.n_S, nS, rtol=1e-9)
    np.testing.assert_allclose(sp.n_A, nA, rtol=1e-9)
    np.testing.assert_allclose(sp.lo, nS, rtol=1e-9)
    np.testing.assert_allclose(sp.hi, nA, rtol=1e-9)   # Proposition 3: [n^S, n^A]
    np.testing.assert_allclose(sp.V_cross, Vx, rtol=1e-9, atol=1e-12)
    # the singleton-block Nash interval of Section VII is the same [n^S, n^A]
    for i in range(2):
        ns = hs.nash_interval(p, [i])
        assert ns.S_lo == pytest.approx(nS[i], rel=1e-7) and ns.S_hi == pytest.approx(nA[i], rel=1e-8)
    # independent check of every equilibrium condition at random sizes in the intervals
    eye = np.eye(2)
    for _ in range(5):
        n = [nS[i] + rnd.random() * (nA[i] - nS[i]) for i in range(2)]
        for i in range(2):
            own = float(hs.utility(p, n[i] * eye[i])[i])
            assert float(hs.utility_jacobian(p, n[i] * eye[i])[i, i]) <= 1e-12      # stability
            assert own >= V0[i] - 1e-12                                             # autarky
            for k in range(2):
                if k != i:                                                          # (VI.1)
                    assert own >= float(hs.utility(p, n[k] * eye[k])[i]) - 1e-12


def test_default_specialized_has_nC_below_nA():
    """Default economy: Assumption 3 fails for type 1 (V_1^2(n_2^S) = 0.455 > V_1(0) = 0), so the
    equilibrium range is cut at n^C_1 < n^A_1 = 3 (Figure 5)."""
    sp = hs.specialized_equilibria(hs.default_params())
    np.testing.assert_allclose(sp.n_S, [1.5, 1.3], rtol=1e-10)
    np.testing.assert_allclose(sp.n_A, [3.0, 2.6], rtol=1e-10)
    assert float(sp.V_cross[0, 1]) == pytest.approx(1.5 * 1.3 - 0.5 * 1.69 - 0.65, rel=1e-12)
    nC = 1.5 + math.sqrt(1.5 ** 2 - 2 * 0.455)   # V_1^1(n) = 1.5 n - n^2/2 = 0.455
    assert float(sp.n_C[0]) == pytest.approx(nC, rel=1e-9)
    assert float(sp.hi[0]) == pytest.approx(nC, rel=1e-9) and float(sp.hi[1]) == pytest.approx(2.6, rel=1e-9)
    assert not bool(np.all(np.asarray(sp.assumption3)))


# ------------------------------------------------------------------ Proposition 4

def test_set_partitions_are_the_bell_numbers():
    for I, bell in ((1, 1), (2, 2), (3, 5), (4, 15), (5, 52)):
        ps = hs.set_partitions(range(I))
        assert len(ps) == bell and len(set(ps)) == bell
        for P in ps:
            assert sorted(itertools.chain(*P)) == list(range(I))


@settings(max_examples=8, deadline=None)
@given(appendix_params_I3(), st.floats(0.01, 0.3), st.randoms(use_true_random=False))
def test_prop4_stable_autarky_partitions_are_nash(p, margin, rnd):
    a, b, t = float(p.alpha), float(p.beta), float(p.t)
    th = np.asarray(p.theta)
    best_without_own = np.array([sum(max(a * th[i, s] - t, 0) ** 2 / (2 * b) for s in range(3) if s != i) for i in range(3)])
    p = eqx.tree_at(lambda q: q.V0, p, jnp.asarray(best_without_own + margin))
    assert hs.check_assumptions(p)["A4 own type essential (VII)"]
    # Assumption 4 checked by brute force on a grid of cities without own type (one vmapped call)
    g1 = np.linspace(0.0, 4.0, 21)
    pairs = np.array(list(itertools.product(g1, g1)))
    for i in range(3):
        others = [s for s in range(3) if s != i]
        n = np.zeros((len(pairs), 3))
        n[:, others] = pairs
        V = np.asarray(jax.vmap(lambda m: hs.utility(p, m))(jnp.asarray(n)))
        assert np.all(V[:, i] < float(p.V0[i]))
    table = hs.partition_equilibria(p)
    assert len(table.rows) == 5
    for row in table.rows:
        if not row.blocks_ok:
            continue
        assert row.is_equilibrium       # Proposition 4
        # independent deviation check at random scales inside each block's Nash interval
        for _ in range(3):
            cities = []
            for b_, ns in zip(row.blocks, row.nash):
                S = ns.S_lo + rnd.random() * (ns.S_hi - ns.S_lo)
                cities.append((b_, np.asarray(ns.n_lo) / ns.S_lo * S))
            for b_, n in cities:
                V = np.asarray(hs.utility(p, n))
                assert np.all(V[list(b_)] >= np.asarray(p.V0)[list(b_)] - 1e-9)
                for b2, n2 in cities:
                    if b2 != b_:
                        V2 = np.asarray(hs.utility(p, n2))
                        assert np.all(V2[list(b_)] < V[list(b_)])
    ranking = table.ranking()
    W = [r.W_eff for r in ranking]
    assert W == sorted(W, reverse=True)


def test_section_VII_example_inferior_partition_persists():
    """The I = 4 example of (VII.1)-(VII.2): types 1-3 and 2-4 are strong partners, 1-2 and 3-4
    weak ones. With Assumption 4, the bad matching {1,2}|{3,4} is a Nash equilibrium although
    {1,3}|{2,4} gives every type strictly more (Proposition 4)."""
    th = np.full((4, 4), 1.05)
    np.fill_diagonal(th, 4.0)
    th[0, 2] = th[2, 0] = th[1, 3] = th[3, 1] = 1.6
    p = hs.Params(alpha=1.0, beta=1.0, gamma=0.05, t=0.5, theta=th, V0=1.0, N=[100.0] * 4)
    assert hs.assumption4(p)   # best without own type: (1.1^2 + 2 * 0.55^2)/2 = 0.9075 < V_i(0) = 1
    table = hs.partition_equilibria(p)
    assert len(table.rows) == 15
    rows = {r.blocks: r for r in table.rows}
    bad, good = rows[((0, 1), (2, 3))], rows[((0, 2), (1, 3))]
    assert bad.is_equilibrium and good.is_equilibrium
    # in a pair city n = (S/2, S/2) (gamma term vanishes): stability of own type needs
    # S > 2(alpha theta_ii - t)/beta = 7; there V = (2 theta_ii - 1)(2 theta_ij - 1)/4
    assert bad.scales == pytest.approx((7.0, 7.0), rel=1e-8)
    for row, v in ((bad, 7 * 1.1 / 4), (good, 7 * 2.2 / 4)):
        for blk, S in zip(row.blocks, row.scales):
            n = np.zeros(4)
            n[list(blk)] = S / 2
            np.testing.assert_allclose(np.asarray(hs.utility(p, n))[list(blk)], v, rtol=1e-9)
    assert good.W_nash > bad.W_nash and good.W_eff > bad.W_eff
    ranks = [r.blocks for r in table.ranking()]
    assert ranks.index(((0, 2), (1, 3))) < ranks.index(((0, 1), (2, 3)))


def test_partition_table_default_I2():
    table = hs.partition_equilibria(hs.default_params())
    rows = {r.blocks: r for r in table.rows}
    mixed, spec = rows[((0, 1),)], rows[((0,), (1,))]
    assert mixed.is_equilibrium and spec.is_equilibrium
    # mixed city at its best Nash scale N^j = 6: V = (3, 1.5) (hand computation), W = 100*3 + 100*1.5
    assert mixed.scales[0] == pytest.approx(6.0, rel=1e-8)
    assert mixed.W_nash == pytest.approx(450.0, rel=1e-8)
    # specialized cities at n^S: V = (1.125, 0.845), W = 197
    assert spec.W_nash == pytest.approx(197.0, rel=1e-7)
    assert table.ranking()[0].blocks == ((0, 1),)
    s = table.summary()
    assert "{1,2}" in s and "{1} | {2}" in s


# ------------------------------------------------------------------ failure reporting and input checks

def test_second_order_failure_is_reported_not_silent():
    p = hs.Params(beta=0.5, gamma=0.8)   # beta < gamma: (A.1) not concave for I = 2 (after (A.19))
    res = hs.solve_type_optimum(p, 0)
    assert not bool(res.is_max) and not res.converged
    # the only stationary point of V_1 is at negative n (closed form (A.18) with beta^2 - gamma^2 < 0),
    # so the FOC has no root in logs: the engine's Newton cannot reduce the residual
    assert res.status in ("stalled", "max_steps_reached"), res.status
    assert "beta > gamma" in res.message
    with pytest.raises(ConvergenceError):
        hs.type_optimum(p, 0)
    out = jax.jit(lambda q: hs.type_optimum(q, 0))(p)   # traced: NaN instead of an exception
    assert bool(jnp.all(jnp.isnan(out)))


@pytest.mark.parametrize("kw, field", [
    (dict(alpha=float("nan")), "alpha"),
    (dict(beta=-1.0), "beta"),
    (dict(gamma=-0.1), "gamma"),
    (dict(t=0.0), "t"),
    (dict(theta=[[1.0, 2.0, 3.0]]), "theta"),
    (dict(theta=[[2.0, np.inf], [1.0, 2.0]]), "theta"),
    (dict(N=[1.0, -1.0]), "N"),
    (dict(N=[1.0, 2.0, 3.0]), "N"),
    (dict(V0=[0.0]), "V0"),
    (dict(alpha=[1.0, 2.0]), "alpha"),
    (dict(g=3), "g"),
])
def test_bad_params_name_the_field(kw, field):
    with pytest.raises(ParameterError) as e:
        hs.Params(**kw)
    assert e.value.field == field and field in str(e.value)


def test_bad_arguments_name_the_field():
    p = hs.default_params()
    with pytest.raises(ParameterError, match="^delta: unknown parameter") as e:
        hs.Params(delta=1.0)   # unknown key: named, not a bare TypeError
    assert "allowed: alpha, beta, gamma, t, theta, V0, N" in str(e.value)
    with pytest.raises(ParameterError, match="^T: unknown parameter"):
        hs.Params(T=[1.0] * 8)
    with pytest.raises(ParameterError, match="^theta: must be a number"):
        hs.Params(theta="5")
    with pytest.raises(ParameterError, match="^alpha: must be a number"):
        hs.Params(alpha=object())
    for bad in (2, -1, 0.5, True):
        with pytest.raises(ParameterError, match="^i:"):
            hs.type_optimum(p, bad)
    for lam in ([0.3, 0.3], [1.2, -0.2], [0.5, 0.5, 0.0], float("nan")):
        with pytest.raises(ParameterError, match="^lam:"):
            hs.contract_curve(p, lam)
    with pytest.raises(ParameterError, match="^members:"):
        hs.nash_interval(p, [5])
    with pytest.raises(ParameterError, match="^field:"):
        hs.sweep(lambda q: q.alpha, p, "delta", [1.0])
    with pytest.raises(ParameterError, match="^n0:"):
        hs.type_optimum(p, 0, n0=[1.0, -1.0])


def test_theta_breaking_the_appendix_assumption_is_rejected_up_front():
    """alpha theta^i_s > t (theta > 1, alpha > t in the Appendix): theta[1, 0] = 0.4 with
    alpha = 1, t = 0.5 makes type-2 optima corners; the constructor says so, naming theta."""
    with pytest.raises(ParameterError, match="^theta: breaks the Appendix assumption alpha theta") as e:
        hs.Params(theta=[[2.0, 1.5], [0.4, 1.8]])
    assert "theta[1, 0]" in str(e.value) and "t / alpha = 0.5" in str(e.value)
    with pytest.raises(ParameterError, match="^theta: breaks the Appendix"):
        hs.Params(alpha=0.2, t=0.5)   # alpha theta <= t for every entry of the default theta
    hs.Params(theta=[[2.0, 1.5], [0.6, 1.8]])   # 0.6 > t / alpha: accepted


@pytest.mark.parametrize("where, value, field", [
    (lambda q: q.beta, -1.0, "beta"),
    (lambda q: q.t, jnp.asarray(float("nan")), "t"),
    (lambda q: q.theta, jnp.array([[2.0, 1.5], [0.4, 1.8]]), "theta"),
    (lambda q: q.N, jnp.array([100.0, 100.0, 100.0]), "N"),
])
def test_every_public_solve_validates_params_built_by_tree_at(where, value, field):
    """eqx.tree_at bypasses the constructor; every public solve checks concrete params again."""
    bad = eqx.tree_at(where, hs.default_params(), value)
    for solve in (lambda q: hs.solve_type_optimum(q, 0), lambda q: hs.type_optimum(q, 0),
                  lambda q: hs.solve_contract_curve(q, 0.5), hs.constrained_pareto_efficient, hs.cpe_allocation,
                  hs.nash_interval, hs.specialized_equilibria, hs.partition_equilibria,
                  lambda q: hs.sweep(lambda r: r.alpha, q, "alpha", [1.0])):
        with pytest.raises(ParameterError) as e:
            solve(bad)
        assert e.value.field == field


# ------------------------------------------------------------------ user-supplied g and c, derivatives, sweeps

def test_user_supplied_g_and_c():
    base = hs.Params(alpha=1.2, beta=1.1, gamma=0.4, t=0.3, theta=[[2.2, 1.4], [1.3, 1.9]])

    def g_A1(params, n):  # (A.1) written by a user, parameters in aux
        a, b, gm, th = params.aux
        return a * th @ n - b / 2 * jnp.sum(n ** 2) + gm * jnp.prod(n)

    user = hs.Params(theta=None, N=[100.0, 100.0], aux=(1.2, 1.1, 0.4, jnp.asarray(base.theta)), g=g_A1,
                     c=lambda params, N: 0.3 * N)
    for i in range(2):
        np.testing.assert_allclose(hs.type_optimum(user, i), hs.type_optimum(base, i), rtol=1e-9)
    # a convex cost c(N) = t N^1.5: the optimum satisfies (IV.1) dg_i/dn_k = c'(N) for all k
    conv = hs.Params(alpha=1.2, beta=1.1, gamma=0.4, t=0.3, theta=base.theta, c=lambda q, N: q.t * N ** 1.5)
    n = hs.type_optimum(conv, 0)
    Dg = jax.jacfwd(lambda m: hs.productivity(conv, m))(n)
    np.testing.assert_allclose(Dg[0], 0.3 * 1.5 * jnp.sqrt(jnp.sum(n)), rtol=1e-10)
    assert float(jnp.sum(n)) < float(jnp.sum(hs.type_optimum(base, 0)))  # costlier city -> smaller optimum


def test_implicit_derivatives_match_closed_form():
    """d n^PE / d(alpha, t, gamma, lambda) through the Newton solve (implicit function theorem)
    equals the derivative of the closed form (A.20)-(A.21)."""
    def solved(x):
        return hs.contract_curve(hs.Params(alpha=x[0], t=x[1], gamma=x[2]), x[3])

    def closed(x):
        return hs.closed_form_I2(hs.Params(alpha=x[0], t=x[1], gamma=x[2]))["contract"](x[3])

    x = jnp.array([1.0, 0.5, 0.5, 0.3])
    np.testing.assert_allclose(jax.jacrev(solved)(x), jax.jacfwd(closed)(x), rtol=1e-9, atol=1e-12)


def test_sweep_over_t_is_vmapped_and_matches_closed_form():
    p = hs.default_params()
    ts = jnp.linspace(0.1, 0.9, 9)
    res = hs.sweep(lambda q: hs.type_optimum(q, 1), p, "t", ts)   # spatialjax.sweep.SweepResult
    out = np.asarray(res.values)
    assert res.all_ok and res.failed.size == 0
    ref = jnp.stack([hs.closed_form_I2(hs.Params(t=float(t)))["type2"] for t in ts])
    np.testing.assert_allclose(out, ref, rtol=1e-9)
    # scale of the type optimum falls with commuting cost t: dN*/dt = -2(beta+gamma)/(beta^2-gamma^2) < 0
    assert np.all(np.diff(out.sum(axis=1)) < 0)


def test_sweep_reports_the_failed_scenarios():
    """beta = 0.4 < gamma = 0.5 has no interior type optimum: that scenario (and only it) is failed,
    through the Optimum's converged flag; the others match (A.19)."""
    p = hs.default_params()
    betas = np.array([1.0, 0.4, 2.0])
    res = hs.sweep(lambda q: hs.solve_type_optimum(q, 1), p, "beta", betas)
    assert res.criterion == "converged flag of the outputs"
    assert res.failed.tolist() == [1] and res.ok.tolist() == [True, False, True]
    for k in (0, 2):
        np.testing.assert_allclose(np.asarray(res.values.n)[k], hs.closed_form_I2(hs.Params(beta=betas[k]))["type2"],
                                   rtol=1e-9)
    with pytest.raises(ParameterError, match="^beta:"):
        hs.sweep(lambda q: q.alpha, p, "beta", [1.0, -1.0])   # every scenario validated, before any work
    with pytest.raises(ParameterError, match="^values:"):
        hs.sweep(lambda q: q.alpha, p, "theta", [1.0, 2.0])


# ------------------------------------------------------------------ NaN-on-failure implicit derivatives

def _user(g, a):
    """A user economy with productivity g, parameter aux = a and no residential cost."""
    return hs.Params(theta=None, N=[100.0, 100.0], aux=a, g=g, c=lambda p, N: 0.0 * N)


def test_regular_gradients_match_finite_differences():
    h = 1e-5
    for f in (lambda t: hs.type_optimum(hs.Params(t=t), 0).sum(),
              lambda t: hs.contract_curve(hs.Params(t=t), 0.3)[1],
              lambda t: hs.cpe_allocation(hs.Params(t=t, N=[100.0, 110.0]))[1]):
        fd = (f(0.5 + h) - f(0.5 - h)) / (2 * h)
        assert float(jax.grad(f)(0.5)) == pytest.approx(float(fd), rel=1e-7)
    # and by hand: d(n_1 + n_2)/dt of (A.18) is -2(beta + gamma)/(beta^2 - gamma^2) = -4 at the default
    assert float(jax.grad(lambda t: hs.type_optimum(hs.Params(t=t), 0).sum())(0.5)) == pytest.approx(-4.0, rel=1e-10)


def test_gradient_at_a_singular_maximum_is_nan():
    """V_i = -sum_k (n_k - a)^4 / 4: the maximum n = (a, a) is a triple root of the FOC (Jacobian
    0 there). The engine converges and flags it singular; every derivative is NaN."""
    g = lambda p, n: -jnp.sum((n - p.aux) ** 4) / 4 * jnp.ones(2)  # noqa: E731
    opt = hs.solve_type_optimum(_user(g, jnp.asarray(2.0)), 0)
    assert opt.status == "singular" and not opt.converged
    np.testing.assert_allclose(opt.n, [2.0, 2.0], rtol=1e-3)
    assert float(opt.sigma_min) < 1e-6
    assert np.isnan(float(jax.grad(lambda a: hs.solve_type_optimum(_user(g, a), 0).n.sum())(2.0)))
    assert np.isnan(float(jax.jit(jax.grad(lambda a: hs.type_optimum(_user(g, a), 0).sum()))(2.0)))


def test_gradient_at_a_failed_solve_or_a_minimum_is_nan():
    # no interior optimum (beta < gamma): the FOC solve fails
    assert np.isnan(float(jax.jit(jax.grad(lambda t: hs.type_optimum(hs.Params(beta=0.5, gamma=0.8, t=t), 0).sum()))(0.5)))
    # V = sum_k (n_k - a)^2: the FOC is solved (regular root n = (a, a)) but it is a minimum, so the
    # optimum's derivative is NaN, not the root's derivative 1 + 1 = 2 (nor the 0 of a jnp.where)
    g = lambda p, n: jnp.sum((n - p.aux) ** 2) * jnp.ones(2)  # noqa: E731
    opt = hs.solve_type_optimum(_user(g, jnp.asarray(1.5)), 0)
    assert opt.status == "not_a_maximum"
    assert float(jax.grad(lambda a: hs.solve_type_optimum(_user(g, a), 0).n.sum())(1.5)) == pytest.approx(2.0, rel=1e-10)
    assert np.isnan(float(jax.jit(jax.grad(lambda a: hs.type_optimum(_user(g, a), 0).sum()))(1.5)))
    # the CPE when the ratio ray misses the contract surface (footnote 14)
    f = lambda t: hs.cpe_allocation(hs.Params(t=t, N=[100.0, 300.0]))[0]  # noqa: E731
    assert np.isnan(float(jax.jit(jax.grad(f))(0.5)))


def test_summaries_print_the_numbers():
    p = hs.default_params()
    s = hs.solve_type_optimum(p, 0).summary()
    assert "2.6667" in s and "status: successful" in s
    s = hs.constrained_pareto_efficient(p).summary()
    assert "4.54545" in s and "Proposition 2" in s
    s = hs.nash_interval(p).summary()
    assert "6.0000" in s and "8.0000" in s and "autarky of type 2" in s
    s = hs.specialized_equilibria(p).summary()
    assert "1.5000" in s and "2.6000" in s
