"""van Vuuren (2016) Section 7 / Table 2: heterogeneous firms (spatialjax.models.van_vuuren).

The model is a reconstruction (the paper prints only (27)--(30) for it); see
data_moments/van_vuuren_table2.md.  Tests: (i) the printed table against the paper's own
flow identity, (ii) our equilibrium against an independent fine-grid NumPy evaluation of the
same equations (firm optimality, free entry, reservation wage, location), (iii) Table 2
printed vs computed with stated tolerances, and re-derived values pinned where we miss.
"""


import numpy as np
import pandas as pd
import pytest

from spatialjax.errors import ParameterError
from spatialjax.models import van_vuuren as vv

from spatialjax.io import data_path

PAPER = pd.read_csv(data_path("van_vuuren_table2.csv"), comment="#")
A_VALUES = tuple(PAPER.a)
ALPHA, DELTA = 8.0, 0.1


@pytest.fixture(scope="module")
def tab():
    return vv.table2()


def _get(tab, a, side):
    r = tab[np.isclose(tab.a, a) & (tab.side == side)]
    assert len(r) == 1, (a, side, r.config.tolist())
    return r.iloc[0]


# ---------------------------------------------------------------------------------------
# (i) The printed table against the flow identity (18) with acceptance:
#     delta (1-u) = lam u s(du+u/2) (1 - p_low),  lam = alpha v  (nu = xi = 1).
# ---------------------------------------------------------------------------------------
def _v_implied(u, du, p, a):
    s = 1 - a * (du + u / 2)
    return DELTA * (1 - u) / (ALPHA * u * s * (1 - p))


@pytest.mark.parametrize("a", A_VALUES)
def test_printed_market_rows_satisfy_flow_identity(a):
    r = PAPER[np.isclose(PAPER.a, a)].iloc[0]
    ratio = r.market_v / _v_implied(r.market_u, r.market_du, r.market_p_low, a)
    if a in (0.6, 0.1):
        # a = 0.6: the printed s(du) = 0.857 does not match the printed du (1 - 0.6 (0.240 +
        # 0.037) = 0.834), so one of du, s(du), p is misprinted: ratio 0.962.  a = 0.1: 0.985.
        assert 0.95 < ratio < 0.99, ratio
    else:
        # the other five rows hold to rounding (ratios 1.001 .. 1.009): this is what pins
        # "offers below p_low are rejected" and lam = alpha v in the reconstruction
        assert abs(ratio - 1) < 0.01, ratio


@pytest.mark.parametrize("a", A_VALUES)
def test_printed_planner_rows_violate_flow_identity(a):
    """The printed planner columns are not a steady state of the same flows: printed v is
    10-35 % below (above at a = 0.1) the v implied by its own u, du, p.  We therefore do not
    match planner u, v and compare only omega* (test_table2_planner_omega)."""
    r = PAPER[np.isclose(PAPER.a, a)].iloc[0]
    ratio = r.planner_v / _v_implied(r.planner_u, r.planner_du, r.planner_p_low, a)
    assert abs(ratio - 1) > 0.09, ratio


def test_printed_s_du_column_contradicts_printed_du_in_two_cells():
    s = lambda a, du, u: 1 - a * (du + u / 2)
    bad = []
    for r in PAPER.itertuples():
        for side in ("planner", "market"):
            got = s(r.a, getattr(r, f"{side}_du"), getattr(r, f"{side}_u"))
            if abs(got - getattr(r, f"{side}_s_du")) > 0.0015:
                bad.append((side, r.a))
    # planner a = 0.1: du = 0.390 gives 0.958, printed 0.903 (= segregated, du ~ 0.93);
    # market a = 0.6: du = 0.240 gives 0.834, printed 0.857.
    assert sorted(bad) == [("market", 0.6), ("planner", 0.1)]


# ---------------------------------------------------------------------------------------
# (ii) Independent fine-grid NumPy evaluation of the equilibrium conditions
# ---------------------------------------------------------------------------------------
def _fine(eq, n=40001):
    P = eq.params
    a, psi, rho, delta = float(P.a), float(P.psi), float(P.rho), float(P.delta)
    u, du, lam = eq.u, eq.du, eq.lam
    t = du / (1 - u)
    s = lambda d: 1 - a * d
    sbar = s(du + u / 2)
    out = []
    pi0 = 0.0
    for upper, (g0, g1) in ((False, (0.0, t)), (True, (t, 1.0))):
        if g1 - g0 <= 0:
            continue
        g = np.linspace(g0, g1, n)
        d = (1 - u) * g + (u if upper else 0.0)
        # D(g) = u s(du+u/2) + (1-u) psi int_0^g s(d(g')) dg', by cumulative trapezoid here
        sd = s(d)
        base = out[-1]["Ibar"][-1] if out else 0.0
        Ibar = base + np.concatenate([[0.0], np.cumsum(0.5 * (sd[1:] + sd[:-1]) * np.diff(g))])
        D = u * sbar + (1 - u) * psi * Ibar
        p = 1 - delta * (1 - g) * (1 - u) / (lam * D)
        B = rho + delta + lam * psi * sd * (1 - p)
        Phi = D / B
        pi = pi0 + np.concatenate([[0.0], np.cumsum(0.5 * (Phi[1:] + Phi[:-1]) * np.diff(p))])
        pi0 = pi[-1]
        K = p - pi / Phi
        out.append(dict(g=g, d=d, p=p, Phi=Phi, pi=pi, K=K, I=(1 - p) / B, Ibar=Ibar, upper=upper))
    return out


def _trap(y, x):
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


@pytest.fixture(scope="module")
def eq_interior():
    (eq,) = vv.solve_market_hetero(vv.Params.panel_b(0.75, tau=vv.TABLE2_TAU))
    assert eq.config == "interior" and eq.converged
    return eq


@pytest.fixture(scope="module")
def eq_segregated():
    (eq,) = vv.solve_market_hetero(vv.Params.panel_b(0.1, tau=vv.TABLE2_TAU))
    assert eq.config == "segregated" and eq.converged
    return eq


@pytest.mark.parametrize("which", ["eq_interior", "eq_segregated"])
def test_equilibrium_conditions_on_fine_grid(which, request):
    eq = request.getfixturevalue(which)
    P = eq.params
    a, tau, b, gamma = float(P.a), float(P.tau), float(P.b), float(P.gamma)
    segs = _fine(eq)
    # (18) with acceptance
    s_bar = 1 - a * (eq.du + eq.u / 2)
    assert DELTA * (1 - eq.u) == pytest.approx(eq.lam * eq.u * s_bar * (1 - eq.plow), rel=1e-12)
    assert eq.lam == pytest.approx(ALPHA * eq.v, rel=1e-12)  # (2) with nu = xi = 1
    assert segs[0]["p"][0] == pytest.approx(eq.plow, abs=1e-9)
    assert segs[-1]["p"][-1] == pytest.approx(1.0, abs=1e-12)
    # wages increase with productivity within each segment; K(plow) = plow
    for sg in segs:
        assert np.all(np.diff(sg["K"]) > 0)
    assert segs[0]["K"][0] == pytest.approx(eq.plow, abs=1e-12)
    # free entry: gamma v = lam int pi(p) dp
    fe = eq.lam * sum(_trap(sg["pi"], sg["p"]) for sg in segs)
    assert fe == pytest.approx(gamma * eq.v, rel=1e-6)
    # reservation wage (37): plow = b + tau du - a lam M, M = int_lower I (du - d) dK
    lo = segs[0]
    M = _trap(lo["I"] * (eq.du - lo["d"]), lo["K"])
    assert eq.plow == pytest.approx(b + tau * eq.du - a * eq.lam * M, abs=1e-7)
    # location (27)/(15): tau - a lam int_phi^{w~} I dw  (= 0 interior, >= 0 segregated)
    J = _trap(lo["I"], lo["K"])
    if eq.config == "interior":
        hi = segs[1]
        J += (hi["K"][0] - lo["K"][-1]) * lo["I"][-1]  # the wage gap, weighted by I(p~-)
        assert hi["K"][0] > lo["K"][-1]
        assert tau - a * eq.lam * J == pytest.approx(0.0, abs=1e-7)
    else:
        assert tau - a * eq.lam * J == pytest.approx(eq.slack, abs=1e-7) and eq.slack > 0
    # welfare: omega = (1-u) E_H p + u b - gamma v - tau [(1-u^2)/2 - du u]
    E = sum(_trap(sg["p"], sg["g"]) for sg in segs)
    om = (1 - eq.u) * E + eq.u * b - gamma * eq.v - tau * ((1 - eq.u ** 2) / 2 - eq.du * eq.u)
    assert eq.omega == pytest.approx(om, abs=1e-8)


def test_firms_post_their_optimal_wage(eq_interior):
    """K(p) = argmax_w (p - w) Phi(w): no firm gains by posting another firm's wage."""
    segs = _fine(eq_interior, n=4001)
    p = np.concatenate([sg["p"] for sg in segs])
    K = np.concatenate([sg["K"] for sg in segs])
    Phi = np.concatenate([sg["Phi"] for sg in segs])
    for i in range(0, p.size, 97):
        prof = (p[i] - K) * Phi
        assert prof.max() <= prof[i] + 1e-6 * abs(prof[i]) + 1e-12, (i, prof.max(), prof[i])


def test_integrated_never_equilibrium_with_psi_one():
    # with psi = 1 the integrated inequality tau <= a lam (1 - psi) J_u fails for any tau > 0
    eqs = vv.solve_market_hetero(vv.Params.panel_b(1.0, tau=vv.TABLE2_TAU))
    assert [e.config for e in eqs] == ["interior"]
    assert any(r.startswith("integrated") and "slack -0.15" in r for r in eqs.rejected)


def test_planner_beats_market(tab):
    for a in A_VALUES:
        assert _get(tab, a, "planner").omega >= _get(tab, a, "market").omega - 1e-9, a


def test_planner_is_a_local_optimum():
    P = vv.Params.panel_b(0.75, tau=vv.TABLE2_TAU)
    pl = vv.solve_planner_hetero(P)
    assert pl.converged and pl.config == "interior"
    import jax.numpy as jnp
    t = pl.du / (1 - pl.u)
    base = float(vv._hetero_planner_omega(P, jnp.asarray(pl.u), jnp.asarray(t), jnp.asarray(pl.plow))[0])
    assert base == pytest.approx(pl.omega, abs=1e-12)
    for du_, dt, dp in [(1e-3, 0, 0), (-1e-3, 0, 0), (0, 1e-3, 0), (0, -1e-3, 0), (0, 0, 1e-3), (0, 0, -1e-3)]:
        o = float(vv._hetero_planner_omega(P, jnp.asarray(pl.u + du_), jnp.asarray(t + dt), jnp.asarray(pl.plow + dp))[0])
        assert o <= base + 1e-12


def test_rejects_wrong_params_type():
    with pytest.raises(ParameterError):
        vv.solve_market_hetero({"a": 1.0})
    with pytest.raises(ParameterError):
        vv.solve_planner_hetero({"a": 1.0})


# ---------------------------------------------------------------------------------------
# (iii) Table 2: printed vs computed
# ---------------------------------------------------------------------------------------
# Re-derived values (this reconstruction, _NH = 40 Gauss-Legendre nodes), pinned to 1e-3
# relative.  Printed values in the comments; see data_moments/van_vuuren_table2.md.
OURS_MARKET = {  # a: (config, u, v, du, omega, p_low)
    1.00: ("interior", 0.06693, 0.27432, 0.05304, 0.70288, 0.30462),    # printed integrated du = 0
    0.75: ("interior", 0.06806, 0.26903, 0.07668, 0.70642, 0.30615),    # printed du 0.152
    0.60: ("interior", 0.06909, 0.26593, 0.10698, 0.70834, 0.30788),    # printed du 0.240
    0.55: ("interior", 0.06962, 0.26486, 0.12434, 0.70895, 0.30877),    # printed du 0.274
    0.50: ("interior", 0.07036, 0.26373, 0.14977, 0.70953, 0.30997),    # printed du 0.329
    0.25: ("segregated", 0.09360, 0.24971, 0.90640, 0.71370, 0.36357),  # printed interior du 0.856
    0.10: ("segregated", 0.08806, 0.24318, 0.91194, 0.72080, 0.41142),  # printed du + u = 0.999
}
OURS_PLANNER = {  # a: (config, u, v, du, omega, p_low)
    1.00: ("interior", 0.05852, 0.30115, 0.01541, 0.70373, 0.30106),
    0.75: ("interior", 0.05957, 0.29422, 0.02326, 0.70724, 0.30154),
    0.60: ("interior", 0.06025, 0.29037, 0.03302, 0.70918, 0.30210),
    0.55: ("interior", 0.06051, 0.28911, 0.03829, 0.70980, 0.30238),
    0.50: ("interior", 0.06080, 0.28786, 0.04552, 0.71042, 0.30274),
    0.25: ("segregated", 0.08062, 0.27630, 0.91938, 0.71439, 0.32123),
    0.10: ("segregated", 0.07958, 0.26581, 0.92042, 0.72127, 0.39833),
}


@pytest.mark.parametrize("a", A_VALUES)
def test_table2_pinned_rederived_values(tab, a):
    for side, ref in (("market", OURS_MARKET[a]), ("planner", OURS_PLANNER[a])):
        r = _get(tab, a, side)
        assert r.config == ref[0], (side, a, r.config)
        for k, val in zip(("u", "v", "du", "omega", "p_low"), ref[1:]):
            assert getattr(r, k) == pytest.approx(val, rel=1e-3, abs=2e-5), (side, a, k)


@pytest.mark.parametrize("a", A_VALUES)
def test_table2_market_against_printed(tab, a):
    r = _get(tab, a, "market")
    # omega within 0.012 (ours is 0.002-0.011 higher for a <= 0.75, 0.003 lower at a = 1)
    assert abs(r.omega - r.paper_omega) < 0.012
    # v 4-7 % below print in every row (free entry gives less entry than the paper's)
    assert -0.075 < r.gap_v < -0.04
    if a in (0.75, 0.25, 0.1):
        assert abs(r.gap_u) < 0.05
    else:
        # u misses by 7-12 %: for a in [0.5, 0.6] our interior du is less than half the
        # printed one (location (27) balances earlier); at a = 1 the paper prints an
        # integrated city, impossible with psi = 1 under (15)/(27) (test above).
        assert 0.05 < abs(r.gap_u) < 0.12
    # s(du) where the configuration agrees and the printed cell is consistent
    if a == 0.1:
        assert abs(r.gap_s_du) < 0.002


@pytest.mark.parametrize("a", A_VALUES)
def test_table2_planner_against_printed(tab, a):
    r = _get(tab, a, "planner")
    # omega* within 0.008 in every row (printed planner u, v are not a steady state, see above)
    assert abs(r.omega - r.paper_omega) < 0.008
    assert r.omega > r.paper_omega - 0.004
    if a == 0.1:
        # printed du = 0.390 but printed s(du) = 0.903 = a segregated city: ours is segregated
        # with s(du + u/2) = 0.904
        assert r.config == "segregated" and abs(r.s_du - r.paper_s_du) < 0.002
    if a >= 0.5:
        # planner p_low close to the printed 0.29 and du small (printed 0 or 0.06)
        assert abs(r.gap_p_low) < 0.015 and r.du < 0.05


@pytest.mark.parametrize("a", A_VALUES)
def test_printed_market_omega_vs_welfare_identity(tab, a):
    """The printed market omega is not what the welfare identity gives for the printed
    (u, v, du, p) under our H (59): identity - printed = -0.003 (a = 1) .. +0.008; our solved
    omega sits within 0.0025 of that identity value, so the omega gap comes from E_H / the
    welfare definition, not from the equilibrium solve."""
    import jax.numpy as jnp

    r = PAPER[np.isclose(PAPER.a, a)].iloc[0]
    P = vv.Params.panel_b(a, tau=vv.TABLE2_TAU)
    u, du, pl, v = r.market_u, r.market_du, r.market_p_low, r.market_v
    E = float(vv._hetero_planner_omega(P, jnp.asarray(u), jnp.asarray(du / (1 - u)), jnp.asarray(pl))[2])
    ident = (1 - u) * E + u * 0.3 - 0.3 * v - 0.15 * ((1 - u ** 2) / 2 - du * u)
    assert -0.004 < ident - r.market_omega < 0.0095
    assert abs(_get(tab, a, "market").omega - ident) < 0.0025
