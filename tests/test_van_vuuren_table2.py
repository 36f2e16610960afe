"""van Vuuren (2016) Section 7 / Table 2: heterogeneous firms (spatialjax.models.van_vuuren).

The model is a reconstruction (the paper prints only (27)--(30) for it); see
data_moments/van_vuuren_table2.md.  What is tested, section by section:

(i)   the printed table against the paper's own flow identity (18): which printed cells are
      internally inconsistent (misprints, documented here and in the .md);
(ii)  every row of Table 2 (7 values of a, market and planner) re-derived independently of
      the module: a NumPy/SciPy implementation written from the equations (trapezoid rule
      on a 4001-point rank grid, ``scipy.optimize.fsolve`` from the *printed* values as
      starting points, ``scipy.optimize.minimize`` for the planner, Simpson for E_H[p]); the
      set of market equilibria (which configurations exist) and their values must agree
      with ``van_vuuren.table2()``;
(iii) the module's equilibria checked condition by condition on a 40 001-point grid (firm
      optimality, free entry, reservation wage, location, welfare);
(iv)  Table 2 as printed vs computed, cell by cell, with tolerances stated up front
      (:data:`TOL`).  A cell the reconstruction does not reproduce is a strict ``xfail``
      with the measured miss and its reason (no band fitted around the miss: if the
      reconstruction ever reproduces the cell, the xfail turns into a failure and the list
      must be updated).  Cells where the paper contradicts itself are not compared with the
      print; (ii) compares them with the re-derived value instead.

Pure regression pins of the module's own numbers live in tests/test_van_vuuren_regression.py.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import simpson
from scipy.optimize import fsolve, minimize

from spatialjax.errors import ParameterError
from spatialjax.io import data_path
from spatialjax.models import van_vuuren as vv

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


def _paper(a):
    return PAPER[np.isclose(PAPER.a, a)].iloc[0]


# ---------------------------------------------------------------------------------------
# (i) The printed table against the flow identity (18) with acceptance:
#     delta (1-u) = lam u s(du+u/2) (1 - p_low),  lam = alpha v  (nu = xi = 1).
# ---------------------------------------------------------------------------------------
def _v_implied(u, du, p, a):
    s = 1 - a * (du + u / 2)
    return DELTA * (1 - u) / (ALPHA * u * s * (1 - p))


# rounding of the printed 3 decimals moves the ratio by at most ~0.7 % (u: 0.0005/0.06)
FLOW_TOL = 0.01
MARKET_FLOW_MISPRINTS = {
    # a = 0.6: the printed s(du) = 0.857 does not match the printed du (1 - 0.6 (0.240 + 0.037)
    # = 0.834), so one of du, s(du), p is misprinted (ratio 0.962)
    0.6: "s(du) / du misprint",
    # a = 0.1: ratio 0.985; the printed du + u = 0.999 (a segregated city has du + u = 1)
    0.1: "du + u = 0.999",
}


@pytest.mark.parametrize("a", A_VALUES)
def test_printed_market_rows_and_flow_identity(a):
    """Five printed market rows satisfy (18) with acceptance to rounding: this is what pins
    "offers below p_low are rejected" and lam = alpha v in the reconstruction.  The other two
    are inconsistent beyond rounding (documented misprints, MARKET_FLOW_MISPRINTS)."""
    r = _paper(a)
    ratio = r.market_v / _v_implied(r.market_u, r.market_du, r.market_p_low, a)
    if a in MARKET_FLOW_MISPRINTS:
        assert abs(ratio - 1) > FLOW_TOL, ratio
    else:
        assert abs(ratio - 1) < FLOW_TOL, ratio


@pytest.mark.parametrize("a", A_VALUES)
def test_printed_planner_rows_violate_flow_identity(a):
    """The printed planner columns are not a steady state of the same flows: printed v is
    10-35 % below (above at a = 0.1) the v implied by its own u, du, p.  Planner u and v are
    therefore compared with the re-derived values (section ii), not with the print."""
    r = _paper(a)
    ratio = r.planner_v / _v_implied(r.planner_u, r.planner_du, r.planner_p_low, a)
    assert abs(ratio - 1) > 0.09, ratio


def test_printed_s_du_column_contradicts_printed_du_in_two_cells():
    s = lambda a, du, u: 1 - a * (du + u / 2)
    bad = []
    for r in PAPER.itertuples():
        for side in ("planner", "market"):
            got = s(r.a, getattr(r, f"{side}_du"), getattr(r, f"{side}_u"))
            if abs(got - getattr(r, f"{side}_s_du")) > 0.0015:   # rounding of du, u, s(du): < 0.0015
                bad.append((side, r.a))
    # planner a = 0.1: du = 0.390 gives 0.958, printed 0.903 (= segregated, du ~ 0.93);
    # market a = 0.6: du = 0.240 gives 0.834, printed 0.857.
    assert sorted(bad) == [("market", 0.6), ("planner", 0.1)]


# ---------------------------------------------------------------------------------------
# (ii) Independent re-derivation of every row (NumPy/SciPy; does not call the module)
# ---------------------------------------------------------------------------------------
# Table 2 parameters: panel B (nu = xi = 1, alpha = 8, delta = 0.1, rho = 0.05, b = 0.3,
# gamma = 0.3, psi = 1, s0 = 1) with tau = 0.15 (p. 28).
S0, PSI, RHO, B, GAMMA, TAU = 1.0, 1.0, 0.05, 0.3, 0.3, 0.15
N_FINE = 4001


def _cumtrap(y, x):
    return np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))])


def _trap(y, x):
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _logit(p):
    return np.log(p / (1 - p))


def _market(a, u, t, plow, n=N_FINE):
    """Section 7 market objects on a fine rank grid g = H(p) (trapezoid rule), t = du/(1-u).

    (18) with acceptance: lam = delta (1-u) / (u s(du+u/2) (1-plow)); (2): v = lam / alpha;
    (59): 1 - p(g) = delta (1-g)(1-u) / (lam D(g)), D(g) = u s(du+u/2) + (1-u) psi int_0^g s(d);
    wage posting K(p) = p - pi(p)/Phi(p), pi(p) = int_plow^p Phi, Phi = D / (rho+delta+lam psi s(d)(1-p));
    free entry gamma v = lam int pi dp; reservation wage (37): plow = b + tau du - a lam psi M
    (+ the (1-psi) term), M = int_lower I (du - d) dK, I = (1-p)/(rho+delta+lam psi s(d)(1-p));
    location (15)/(27): tau = a lam (1-psi) J_u + a lam psi (J_lo + J_gap)."""
    s = lambda d: S0 - a * d  # noqa: E731
    du = (1 - u) * t
    sbar = s(du + u / 2)
    lam = (1 - u) * DELTA / (u * sbar * (1 - plow))
    v = lam / ALPHA
    segs, ib0, pi0 = [], 0.0, 0.0
    for upper, g0, g1 in ((False, 0.0, t), (True, t, 1.0)):
        if g1 - g0 <= 1e-14:
            continue
        g = np.linspace(g0, g1, n)
        d = (1 - u) * g + (u if upper else 0.0)
        ib = ib0 + _cumtrap(s(d), g)
        ib0 = ib[-1]
        D = u * sbar + (1 - u) * PSI * ib
        p = 1 - DELTA * (1 - g) * (1 - u) / (lam * D)
        Bq = RHO + DELTA + lam * PSI * s(d) * (1 - p)
        Phi = D / Bq
        pi = pi0 + _cumtrap(Phi, p)
        pi0 = pi[-1]
        segs.append(dict(upper=upper, g=g, d=d, p=p, Phi=Phi, K=p - pi / Phi, pi=pi, I=(1 - p) / Bq))
    fe = lam * sum(_trap(sg["pi"], sg["p"]) for sg in segs)
    E = sum(_trap(sg["p"], sg["g"]) for sg in segs)
    lo = None if segs[0]["upper"] else segs[0]
    M = 0.0 if lo is None else _trap(lo["I"] * (du - lo["d"]), lo["K"])
    Jlo = 0.0 if lo is None else _trap(lo["I"], lo["K"])
    Jgap = (segs[1]["K"][0] - lo["K"][-1]) * lo["I"][-1] if len(segs) == 2 else 0.0
    Jhi = _trap(segs[-1]["I"], segs[-1]["K"]) if segs[-1]["upper"] else 0.0
    Ju = Jlo + Jgap + Jhi
    phi = B + TAU * du - a * lam * PSI * M + lam * (1 - PSI) * s(du) * Ju
    loc = TAU - a * lam * (1 - PSI) * Ju - a * lam * PSI * (Jlo + Jgap)
    omega = (1 - u) * E + u * B - GAMMA * v - TAU * ((1 - u ** 2) / 2 - du * u)
    return dict(u=u, t=t, du=du, v=v, lam=lam, p_low=plow, phi=phi, loc=loc, fe=fe - GAMMA * v, omega=omega,
                s_du=sbar, w_gap=(segs[1]["K"][0] - lo["K"][-1]) if len(segs) == 2 else 0.0)


def _fsolve(f, z0):
    with np.errstate(all="ignore"):
        z, _, ier, _ = fsolve(f, z0, full_output=True, xtol=1e-13)
        return z if ier == 1 and np.max(np.abs(f(z))) < 1e-9 else None


def _segregated(a, u0, p0):
    """t = 1: reservation wage and free entry in (u, plow); None if no root from (u0, p0)."""
    f = lambda z: (lambda o: [o["p_low"] - o["phi"], o["fe"] / o["lam"]])(_market(a, _sig(z[0]), 1.0, _sig(z[1])))  # noqa: E731
    z = _fsolve(f, [_logit(u0), _logit(p0)])
    return None if z is None else _market(a, _sig(z[0]), 1.0, _sig(z[1]))


def _interior(a, u0, t0, p0):
    f = lambda z: (lambda o: [o["p_low"] - o["phi"], o["fe"] / o["lam"], o["loc"]])(  # noqa: E731
        _market(a, _sig(z[0]), _sig(z[1]), _sig(z[2])))
    z = _fsolve(f, [_logit(u0), _logit(t0), _logit(p0)])
    return None if z is None else _market(a, _sig(z[0]), _sig(z[1]), _sig(z[2]))


def _location_along_t(a, ts):
    """Location residual (15)/(27) along t = du/(1-u), with (u, plow) solving the reservation
    wage and free entry at each t (warm-started along t; NaN where fsolve fails)."""
    out, z = [], [_logit(0.07), _logit(0.31)]
    for t in ts:
        f = lambda zz: (lambda o: [o["p_low"] - o["phi"], o["fe"] / o["lam"]])(_market(a, _sig(zz[0]), t, _sig(zz[1])))  # noqa: E731
        zz = _fsolve(f, z) if _fsolve(f, z) is not None else _fsolve(f, [_logit(0.07), _logit(0.31)])
        if zz is None:
            out.append(np.nan)
            continue
        z = zz
        out.append(_market(a, _sig(z[0]), t, _sig(z[1]))["loc"])
    return np.asarray(out)


def _rederived_market(a):
    """All market equilibria at a, found without the module: fsolve from the printed values and
    from generic starts, for both configurations that can exist with psi = 1 (integrated
    cannot: its inequality tau <= a lam (1 - psi) J_u = 0 fails for tau > 0)."""
    r = _paper(a)
    found = {}
    seg = None
    for u0, p0 in ((r.market_u, r.market_p_low), (0.1, 0.35), (0.2, 0.3)):
        seg = _segregated(a, u0, p0)
        if seg is not None:
            break
    if seg is not None and seg["loc"] >= 0 and seg["v"] > 0:   # segregated inequality (17)
        found["segregated"] = seg
    t_print = float(np.clip(r.market_du / (1 - r.market_u), 0.05, 0.95))
    for u0, t0, p0 in ((r.market_u, t_print, r.market_p_low), (0.07, 0.1, 0.31), (0.07, 0.5, 0.35)):
        e = _interior(a, u0, t0, p0)
        if e is not None and 1e-7 < e["t"] < 1 - 1e-7 and e["w_gap"] > 0:
            found["interior"] = e
            break
    return found


def _planner_omega(a, x, n=2001):
    """Steady-state flow welfare of the Section 7 planner at (u, t, plow): E_H[p] by Simpson."""
    u, t, plow = x
    s = lambda d: S0 - a * d  # noqa: E731
    du = (1 - u) * t
    sbar = s(du + u / 2)
    lam = (1 - u) * DELTA / (u * sbar * (1 - plow))
    E, ib0 = 0.0, 0.0
    for upper, g0, g1 in ((False, 0.0, t), (True, t, 1.0)):
        if g1 - g0 <= 0:
            continue
        g = np.linspace(g0, g1, n)
        shift = u if upper else 0.0
        ib = ib0 + (g - g0) * S0 - a * ((1 - u) * (g ** 2 - g0 ** 2) / 2 + shift * (g - g0))   # int s(d) dg, exact
        ib0 = ib[-1]
        p = 1 - DELTA * (1 - g) * (1 - u) / (lam * (u * sbar + (1 - u) * PSI * ib))
        E += simpson(p, x=g)
    return (1 - u) * E + u * B - GAMMA * lam / ALPHA - TAU * ((1 - u ** 2) / 2 - du * u)


def _rederived_planner(a):
    best = None
    for t0 in (0.02, 0.5, 0.98):
        with np.errstate(all="ignore"):
            res = minimize(lambda x: -_planner_omega(a, x), [0.07, t0, 0.3], method="L-BFGS-B",
                           bounds=[(1e-3, 0.95), (0.0, 1.0), (0.0, 0.95)],
                           options=dict(ftol=1e-15, gtol=1e-11, maxiter=1000))
        if best is None or res.fun < best.fun:
            best = res
    u, t, plow = best.x
    return dict(u=u, du=(1 - u) * t, t=t, p_low=plow, omega=-best.fun, v=(1 - u) * DELTA / (
        u * (1 - a * ((1 - u) * t + u / 2)) * (1 - plow)) / ALPHA, s_du=1 - a * ((1 - u) * t + u / 2))


@pytest.fixture(scope="module")
def rederived():
    return {a: dict(market=_rederived_market(a), planner=_rederived_planner(a)) for a in A_VALUES}


@pytest.mark.parametrize("a", A_VALUES)
def test_market_rows_match_independent_rederivation(tab, rederived, a):
    """Same configurations and, for each, the same (u, v, du, s(du), omega, p_low): the
    trapezoid error on 4001 points is ~1e-7, far below the 2e-6 asked for."""
    ind = rederived[a]["market"]
    rows = tab[np.isclose(tab.a, a) & (tab.side == "market")]
    assert sorted(rows.config) == sorted(ind), (a, rows.config.tolist(), sorted(ind))
    assert len(ind) == 1   # every row of Table 2 has a unique market equilibrium here
    for r in rows.itertuples():
        e = ind[r.config]
        for k in ("u", "v", "du", "s_du", "omega", "p_low"):
            assert getattr(r, k) == pytest.approx(e[k], abs=2e-6), (a, r.config, k)


@pytest.mark.parametrize("a", [0.25, 0.1])
def test_no_interior_market_equilibrium_in_the_segregated_rows(a):
    """Where the module finds only the segregated city, the location residual (15)/(27) stays
    positive along the whole curve where the reservation wage and free entry hold: no
    interior root exists (the paper prints an interior city at a = 0.25, see section iv)."""
    loc = _location_along_t(a, np.linspace(0.02, 0.98, 25))
    assert np.isfinite(loc).sum() >= 18, loc
    assert np.nanmin(loc) > 0.04, loc


@pytest.mark.parametrize("a", [1.0, 0.5])
def test_location_residual_changes_sign_once_in_the_interior_rows(tab, a):
    loc = _location_along_t(a, np.linspace(0.02, 0.98, 25))
    ok = np.isfinite(loc)
    assert ok.sum() >= 18
    assert np.sum(np.diff(np.sign(loc[ok])) != 0) == 1
    ts = np.linspace(0.02, 0.98, 25)[ok]
    m = _get(tab, a, "market")
    i = int(np.flatnonzero(np.diff(np.sign(loc[ok])))[0])
    assert ts[i] <= m.du / (1 - m.u) <= ts[i + 1]


@pytest.mark.parametrize("a", A_VALUES)
def test_planner_rows_match_independent_rederivation(tab, rederived, a):
    """omega* to 1e-7 (the objective is flat at the optimum, so the maximiser is compared
    at 1e-3); the configuration (t = 0, interior, t = 1) the same."""
    ind = rederived[a]["planner"]
    r = _get(tab, a, "planner")
    assert r.omega == pytest.approx(ind["omega"], abs=1e-7), a
    assert r.omega >= ind["omega"] - 1e-9   # the module's optimum is not worse than scipy's
    cfg = "segregated" if ind["t"] > 1 - 1e-6 else ("integrated" if ind["t"] < 1e-6 else "interior")
    assert r.config == cfg, (a, r.config, ind["t"])
    for k in ("u", "du", "p_low", "v", "s_du"):
        assert getattr(r, k) == pytest.approx(ind[k], abs=1e-3), (a, k)


# ---------------------------------------------------------------------------------------
# (iii) The module's equilibria against a fine-grid evaluation of each condition, one by one
#       (firm optimality, free entry, reservation wage, location, welfare)
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
# (iv) Table 2: printed vs computed, cell by cell
# ---------------------------------------------------------------------------------------
#: tolerances, stated before comparing: u, v within 5 % (MODELS.md: "expect a few percent
#: discrepancy on u and v"); du, s(du) within 0.03 and omega within 0.003 (as for Table 1 in
#: test_van_vuuren.py); p_low within 0.01 (printed to 3 decimals, ~3 % of p).
TOL = {"u": ("rel", 0.05), "v": ("rel", 0.05), "du": ("abs", 0.03), "s_du": ("abs", 0.03),
       "omega": ("abs", 0.003), "p_low": ("abs", 0.01)}
COLUMNS = {"market": ("config", "u", "v", "du", "s_du", "omega", "p_low"),
           # planner u, v: the printed planner rows are not a steady state of the flows
           # (test_printed_planner_rows_violate_flow_identity): compared with the re-derived
           # values only (test_planner_rows_match_independent_rederivation)
           "planner": ("config", "du", "s_du", "omega", "p_low")}
#: cells where the paper contradicts itself: not compared with the print (section ii
#: compares them with the re-derived value)
MISPRINTS = {
    ("market", 0.6, "s_du"): "printed s(du) = 0.857 but 1 - 0.6 (0.240 + 0.074/2) = 0.834",
    ("planner", 0.1, "du"): "printed du = 0.390 but the printed s(du) = 0.903 needs du + u/2 = 0.97 (segregated)",
    ("planner", 0.1, "config"): "printed du (interior) and s(du) (segregated) disagree",
}
_MD = "data_moments/van_vuuren_table2.md, 'Why the misses happen'"
_R = {
    "integrated": "psi = 1: an integrated market city is never an equilibrium under (15)/(27) "
                  f"(test_integrated_never_equilibrium_with_psi_one); ours is interior with a small du ({_MD}, 5)",
    "v": f"free entry: expected profit per vacancy ~10 % below gamma v / lam at the printed point, v 4-7 % low in every row ({_MD}, 3)",
    "location": "location (27) balances at about half the printed du in the interior rows; u, du, s(du) "
                f"and p_low follow ({_MD}, 4)",
    "omega": f"welfare level: E_H[p] / the welfare definition of the paper is not recoverable ({_MD}, 2)",
    "a025": "a = 0.25: the paper prints an interior city (du = 0.856); the location residual is positive for "
            "every t (test_no_interior_market_equilibrium_in_the_segregated_rows): only the segregated "
            f"city exists ({_MD}, 6)",
    "planner_du": "planner: the steady-state optimum has a small interior du (0.015-0.033) where the paper "
                  f"prints 0; the printed planner columns are not a steady state ({_MD}, 1)",
    "planner_p": f"planner p_low ~0.30 where the paper prints 0.29 (printed planner rows not a steady state, {_MD}, 1)",
    "planner_seg": "planner a = 0.25: the segregated corner beats every interior t (checked by the independent "
                   "maximisation, section ii); the paper prints interior du = 0.102",
}
#: (side, a, column) -> (reason key, measured miss): the cells this reconstruction does not reproduce
KNOWN_MISSES = {
    ('market', 1.0, 'config'): ('integrated', 'printed integrated, ours interior'),
    ('market', 1.0, 'u'): ('integrated', 'printed 0.06, ours 0.0669 (+11.6 %)'),
    ('market', 1.0, 'v'): ('v', 'printed 0.291, ours 0.2743 (-5.7 %)'),
    ('market', 1.0, 'du'): ('integrated', 'printed 0.0, ours 0.0530 (+0.0530)'),
    ('market', 1.0, 's_du'): ('integrated', 'printed 0.97, ours 0.9135 (-0.0565)'),
    ('market', 1.0, 'omega'): ('omega', 'printed 0.706, ours 0.7029 (-0.0031)'),
    ('market', 0.75, 'v'): ('v', 'printed 0.286, ours 0.2690 (-5.9 %)'),
    ('market', 0.75, 'du'): ('location', 'printed 0.152, ours 0.0767 (-0.0753)'),
    ('market', 0.75, 's_du'): ('location', 'printed 0.859, ours 0.9170 (+0.0580)'),
    ('market', 0.75, 'omega'): ('omega', 'printed 0.702, ours 0.7064 (+0.0044)'),
    ('market', 0.75, 'p_low'): ('location', 'printed 0.324, ours 0.3061 (-0.0179)'),
    ('market', 0.6, 'u'): ('location', 'printed 0.074, ours 0.0691 (-6.6 %)'),
    ('market', 0.6, 'v'): ('v', 'printed 0.281, ours 0.2659 (-5.4 %)'),
    ('market', 0.6, 'du'): ('location', 'printed 0.24, ours 0.1070 (-0.1330)'),
    ('market', 0.6, 'omega'): ('omega', 'printed 0.702, ours 0.7083 (+0.0063)'),
    ('market', 0.6, 'p_low'): ('location', 'printed 0.358, ours 0.3079 (-0.0501)'),
    ('market', 0.55, 'u'): ('location', 'printed 0.076, ours 0.0696 (-8.4 %)'),
    ('market', 0.55, 'v'): ('v', 'printed 0.28, ours 0.2649 (-5.4 %)'),
    ('market', 0.55, 'du'): ('location', 'printed 0.274, ours 0.1243 (-0.1497)'),
    ('market', 0.55, 's_du'): ('location', 'printed 0.829, ours 0.9125 (+0.0835)'),
    ('market', 0.55, 'omega'): ('omega', 'printed 0.702, ours 0.7089 (+0.0069)'),
    ('market', 0.55, 'p_low'): ('location', 'printed 0.343, ours 0.3088 (-0.0342)'),
    ('market', 0.5, 'u'): ('location', 'printed 0.079, ours 0.0704 (-10.9 %)'),
    ('market', 0.5, 'v'): ('v', 'printed 0.278, ours 0.2637 (-5.1 %)'),
    ('market', 0.5, 'du'): ('location', 'printed 0.329, ours 0.1498 (-0.1792)'),
    ('market', 0.5, 's_du'): ('location', 'printed 0.816, ours 0.9075 (+0.0915)'),
    ('market', 0.5, 'omega'): ('omega', 'printed 0.702, ours 0.7095 (+0.0075)'),
    ('market', 0.5, 'p_low'): ('location', 'printed 0.353, ours 0.3100 (-0.0430)'),
    ('market', 0.25, 'config'): ('a025', 'printed interior, ours segregated'),
    ('market', 0.25, 'du'): ('a025', 'printed 0.856, ours 0.9064 (+0.0504)'),
    ('market', 0.25, 'omega'): ('omega', 'printed 0.707, ours 0.7137 (+0.0067)'),
    ('market', 0.25, 'p_low'): ('a025', 'printed 0.43, ours 0.3636 (-0.0664)'),
    ('market', 0.1, 'v'): ('v', 'printed 0.261, ours 0.2432 (-6.8 %)'),
    ('market', 0.1, 'omega'): ('omega', 'printed 0.715, ours 0.7208 (+0.0058)'),
    ('market', 0.1, 'p_low'): ('location', 'printed 0.431, ours 0.4114 (-0.0196)'),
    ('planner', 1.0, 'config'): ('planner_du', 'printed integrated, ours interior'),
    ('planner', 1.0, 'p_low'): ('planner_p', 'printed 0.29, ours 0.3011 (+0.0111)'),
    ('planner', 0.75, 'config'): ('planner_du', 'printed integrated, ours interior'),
    ('planner', 0.75, 'p_low'): ('planner_p', 'printed 0.29, ours 0.3015 (+0.0115)'),
    ('planner', 0.6, 'config'): ('planner_du', 'printed integrated, ours interior'),
    ('planner', 0.6, 'du'): ('planner_du', 'printed 0.0, ours 0.0330 (+0.0330)'),
    ('planner', 0.6, 'p_low'): ('planner_p', 'printed 0.29, ours 0.3021 (+0.0121)'),
    ('planner', 0.55, 'p_low'): ('planner_p', 'printed 0.29, ours 0.3024 (+0.0124)'),
    ('planner', 0.25, 'config'): ('planner_seg', 'printed interior, ours segregated'),
    ('planner', 0.25, 'du'): ('planner_seg', 'printed 0.102, ours 0.9194 (+0.8174)'),
    ('planner', 0.25, 's_du'): ('planner_seg', 'printed 0.967, ours 0.7601 (-0.2069)'),
    ('planner', 0.25, 'omega'): ('omega', 'printed 0.71, ours 0.7144 (+0.0044)'),
    ('planner', 0.25, 'p_low'): ('planner_seg', 'printed 0.288, ours 0.3212 (+0.0332)'),
    ('planner', 0.1, 'omega'): ('omega', 'printed 0.716, ours 0.7213 (+0.0053)'),
    ('planner', 0.1, 'p_low'): ('planner_p', 'printed 0.276, ours 0.3983 (+0.1223)'),
}


def _miss(side, a, col, tab):
    r = _get(tab, a, side)
    if col == "config":
        printed = "integrated" if getattr(_paper(a), f"{side}_du") == 0 else (
            "segregated" if getattr(_paper(a), f"{side}_du") + getattr(_paper(a), f"{side}_u") > 0.995 else "interior")
        return printed, r.config, r.config == printed
    printed, ours = float(getattr(_paper(a), f"{side}_{col}")), float(getattr(r, col))
    kind, tol = TOL[col]
    gap = ours / printed - 1 if kind == "rel" else ours - printed
    return printed, ours, abs(gap) <= tol


def _cells():
    out = []
    for side, cols in COLUMNS.items():
        for a in A_VALUES:
            for col in cols:
                if (side, a, col) in MISPRINTS:
                    continue
                marks = ()
                if (side, a, col) in KNOWN_MISSES:
                    key, measured = KNOWN_MISSES[(side, a, col)]
                    marks = pytest.mark.xfail(strict=True, reason=f"measured {measured}: {_R[key]}")
                out.append(pytest.param(side, a, col, marks=marks, id=f"{side}-{a}-{col}"))
    return out


@pytest.mark.parametrize("side,a,col", _cells())
def test_table2_cell_against_printed(tab, side, a, col):
    printed, ours, ok = _miss(side, a, col, tab)
    assert ok, f"{side} a={a} {col}: printed {printed}, ours {ours} (tolerance {TOL.get(col, 'exact')})"


def test_known_misses_and_misprints_name_real_cells():
    for side, a, col in list(KNOWN_MISSES) + list(MISPRINTS):
        assert side in COLUMNS and a in A_VALUES and col in COLUMNS[side]
    assert not set(KNOWN_MISSES) & set(MISPRINTS)


# ---------------------------------------------------------------------------------------
# The printed values are package data: a missing file is an error, not a shorter table
# ---------------------------------------------------------------------------------------
def test_table2_missing_reference_file_is_an_error(monkeypatch, tmp_path):
    import spatialjax.io

    monkeypatch.setattr(spatialjax.io, "data_path", lambda name: tmp_path / name)
    with pytest.raises(FileNotFoundError, match="van_vuuren_table2.csv"):
        vv.table2(a_values=(1.0,))


def test_table2_reference_is_package_data_not_a_checkout_path():
    path = data_path("van_vuuren_table2.csv")
    assert path.parent.name == "data" and path.parent.parent.name == "spatialjax"
    assert len(PAPER) == 7 and set(PAPER.columns) >= {f"{s}_{k}" for s in ("planner", "market")
                                                       for k in ("u", "v", "du", "s_du", "omega", "p_low")}
