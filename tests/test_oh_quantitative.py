"""Oh (2025) quantitative model: the inverse problem of Section 4.2 and Table 2's moments.

Every equation is re-checked here from the primitives of Appendix B.1, independently of the
residual function of the solver (NumPy, written out again)."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spatialjax.errors import ParameterError
from spatialjax.models import oh
from spatialjax.models.oh import quantitative as q

P = oh.Params.table1()


@pytest.fixture(scope="module")
def standin():
    return q.standin_profile(P)


@pytest.fixture(scope="module")
def base(standin):
    return standin.solve(P)


def _np(v):
    return np.asarray(v, float)


def test_contract_names():
    for name in ("Params", "solve_inverse", "moments"):
        assert hasattr(oh, name)
    assert set(q.MOMENT_KEYS) == {"wage_q2", "wage_q3", "wage_q4", "housing_mean", "housing_q4_q1",
                                  "replacement_rate", "labor_share", "rent_q2", "rent_q3", "rent_q4"}
    p = oh.Params.table1()
    assert [float(getattr(p, k)) for k in ("rho", "alpha", "delta", "A", "h_bar", "omega", "eta_w", "b", "beta",
                                           "H_f", "eta_f", "T")] == [0.004, 0.5, 0.028, 0.62, 10.10, 0.11, 11.31,
                                                                     0.28, 0.04, 3.62, 14.68, 1028.35]


def test_inverse_61_by_61_solved_to_1e12(base):
    assert base.converged and base.status == "successful"
    assert base.z.shape == (61,)
    sizes = {k: int(np.size(v)) for k, v in base.equation_residuals.items()}
    assert sizes == {"wage_normalisation": 1, "worker_sorting": 19, "firm_sorting": 19, "housing_clearing": 20,
                     "lump_sum": 1, "zero_profit": 1}
    assert sum(sizes.values()) == 61
    assert float(base.residual) <= 1e-12
    for k, v in base.residuals.items():
        assert float(v) <= 1e-12, k
    # Normalisations: y(0) = 1, r(0) = 1, the lowest-bin wage is w1.
    assert float(base.y[0]) == 1.0 and float(base.r[0]) == 1.0
    assert abs(float(base.wage[0]) - float(base.w1)) <= 1e-12 * float(base.w1)
    # PAM: both schedules increase across bins; rents too.
    assert np.all(np.diff(_np(base.x)) > 0) and np.all(np.diff(_np(base.y)) > 0) and np.all(np.diff(_np(base.r)) > 0)
    s = base.summary()
    assert "worker_sorting" in s and "housing_clearing" in s and "61" in s
    d = json.loads(base.to_json())
    assert d["converged"] is True and len(d["x"]) == 20 and set(d["moments"]) == set(q.MOMENT_KEYS)
    assert str(base) == s


def test_equations_from_primitives(base):
    """Recompute every equation block with NumPy from B.1's primitives."""
    p = {k: float(getattr(P, k)) for k in P.FIELDS}
    x, y, r, L, u = (_np(getattr(base, k)) for k in ("x", "y", "r", "L", "u"))
    t_h, tau = _np(base.t_h), _np(base.tau_w)
    Pi, ce, Hw = float(base.Pi), float(base.c_e), float(base.H_w)
    rt = p["rho"] + p["delta"]
    lam = p["delta"] * (1 - u) / u
    theta = (lam / p["A"]) ** 2  # alpha = 0.5
    qq = lam / theta
    N = theta * u * L
    w = x * (p["b"] + p["beta"] * (rt + lam) * (y - p["b"]) / (rt + p["beta"] * lam))
    np.testing.assert_allclose(w, _np(base.wage), rtol=1e-13)
    g = 1 / p["eta_w"]
    # Housing: r from (A.24) at the housing stock, market clearing with the r on the h_bar term.
    H = _np(base.H)
    r_A24 = (1 + g + t_h) / (1 + g) * (H / Hw) ** g * (H / p["T"]) ** t_h
    np.testing.assert_allclose(r_A24, r, rtol=1e-12)
    T_r = (r * H / (1 + g + t_h) - H ** (1 + g) / ((1 + g) * Hw ** g)) / L
    np.testing.assert_allclose(T_r, _np(base.T_r), rtol=1e-10, atol=1e-12)
    I = (1 - tau) * ((1 - u) * w + u * p["b"] * x) + Pi + T_r
    np.testing.assert_allclose(r * H, L * ((1 - p["omega"]) * r * p["h_bar"] + p["omega"] * I), rtol=1e-12)
    # Worker sorting (13): the midpoint type is indifferent between adjacent bins.
    A_w = p["beta"] * lam * (y - p["b"]) / (rt + p["beta"] * lam)
    xm = 0.5 * (x[:-1] + x[1:])

    def V(i, xx):
        return r[i] ** (-p["omega"]) * ((1 - tau[i]) * (p["b"] + A_w[i]) * xx - p["h_bar"] * r[i] + Pi + T_r[i])

    np.testing.assert_allclose(V(np.arange(19), xm), V(np.arange(1, 20), xm), rtol=1e-13)
    # Firm sorting (5) in the delta_v -> inf limit, with c = C_v'(N).
    c = (N / p["H_f"]) ** (1 / p["eta_f"]) + ce
    np.testing.assert_allclose(c, _np(base.c), rtol=1e-13)
    ym = 0.5 * (y[:-1] + y[1:])

    def F(i, yy):
        return (1 - p["beta"]) * qq[i] * x[i] * (yy - p["b"] - A_w[i]) / rt - c[i]

    np.testing.assert_allclose(F(np.arange(19), ym), F(np.arange(1, 20), ym), rtol=1e-12)
    # Zero average flow profit of firms, and the lump sum.
    prof = (1 - u) * (x * y - w) - theta * u * c
    assert abs(np.mean(prof)) <= 1e-11 * np.mean((1 - u) * x * y)
    land = r * H * (g + t_h) / (1 + g + t_h) / L
    inter = N * (N / p["H_f"]) ** (1 / p["eta_f"]) / (1 + p["eta_f"]) / L
    Pi_def = np.mean(tau * ((1 - u) * w + u * p["b"] * x) - u * p["b"] * x + land + inter + prof)
    assert abs(Pi - Pi_def) <= 1e-11 * abs(Pi)


def test_housing_clearing_misprint(base):
    """B.1 prints r H = (1-ω) h̄ L + ω I L (no r on the subsistence term). With Stone–Geary,
    spending per worker is (1-ω) r h̄ + ω I, so the printed version fails wherever r != 1:
    by exactly (1-ω) h̄ L (r - 1) (the misprint, documented in MODELS.md §2)."""
    p = P
    r, H, L, I = _np(base.r), _np(base.H), _np(base.L), _np(base.income)
    printed = (1 - float(p.omega)) * float(p.h_bar) * L + float(p.omega) * I * L
    gap = r * H - printed
    np.testing.assert_allclose(gap, (1 - float(p.omega)) * float(p.h_bar) * L * (r - 1), rtol=1e-9, atol=1e-9)
    assert gap[0] == pytest.approx(0.0, abs=1e-8) and np.all(gap[1:] > 1.0)
    # Stone–Geary: spending share = (1-ω) r h̄/I + ω from max g^{1-ω}(h - h̄)^ω s.t. g + r h = I.
    Ii, ri = 50.0, 1.3
    hs = np.linspace(float(p.h_bar) + 1e-6, Ii / ri - 1e-6, 200001)
    util = (1 - float(p.omega)) * np.log(Ii - ri * hs) + float(p.omega) * np.log(hs - float(p.h_bar))
    h_star = hs[np.argmax(util)]
    assert ri * h_star == pytest.approx(float(q.housing_spending(p, ri, Ii)), rel=1e-4)


@pytest.mark.parametrize("tau,r", [(0.0, 1.0), (0.12, 1.7)])
def test_wage_is_nash_split_of_money_metric_surplus(tau, r):
    """Re-derive (10) from the value equations of B.1 (Stone–Geary, income tax) at
    ρ/(ρ+δ_v) -> 0: solve the Bellman equations as a linear system for a given wage and check
    that the wage of :func:`wage` gives the worker exactly β of the money-metric surplus."""
    p = {k: float(getattr(P, k)) for k in P.FIELDS}
    x, y, lam, Pi, T_r = 70.0, 1.15, 0.6, 5.0, 0.3
    rt = p["rho"] + p["delta"]
    delta_v = 1e9
    w = float(q.wage(P, x, y, lam))
    qv = 0.55

    def flow(inc):
        return r ** (-p["omega"]) * ((1 - tau) * inc - p["h_bar"] * r + Pi + T_r)

    # Unknowns: V^u, V^e, V^v, V^p (the worker meets the local firm y, the vacancy meets x).
    rho, d = p["rho"], p["delta"]
    M = np.array([[rho + lam, -lam, 0, 0],
                  [-d, rho + d, 0, 0],
                  [0, 0, rho + qv + delta_v, -qv],
                  [0, 0, -d, rho + d]])
    rhs = np.array([flow(p["b"] * x), flow(w), 0.0, x * y - w])
    Vu, Ve, Vv, Vp = np.linalg.solve(M, rhs)
    S = r ** p["omega"] / (1 - tau) * (Ve - Vu) + Vp - Vv
    assert r ** p["omega"] / (1 - tau) * (Ve - Vu) == pytest.approx(p["beta"] * S, rel=1e-6)
    # and the worker's option value is A_w x (B_w = 0): ρV^u = flow(bx) + r^{-ω}(1-τ) A_w x.
    A_w = p["beta"] * lam * (y - p["b"]) / (rt + p["beta"] * lam)
    assert rho * Vu == pytest.approx(flow(p["b"] * x) + r ** (-p["omega"]) * (1 - tau) * A_w * x, rel=1e-9)
    assert rho * Vu == pytest.approx(float(q.worker_value(P, x, r, y, lam, tau, Pi, T_r)), rel=1e-9)


def test_firm_value_is_the_large_delta_v_limit_of_5():
    """(5) with 1 − β̃ = ρ/(ρ+δ_v)(1−β): (δ_v/ρ) A_f (y − b − B_f) − c  ->  (1−β) q x (y − b − B_f)/ρ̃ − c."""
    p = {k: float(getattr(P, k)) for k in P.FIELDS}
    rt = p["rho"] + p["delta"]
    x_loc, y_loc, lam, qq, c, y = 70.0, 1.1, 0.6, 0.55, 3.0, 1.2
    lim = float(q.firm_value(P, y, x_loc, y_loc, lam, qq, c))
    for dv, tol in ((1e4, 1e-3), (1e7, 1e-6)):
        ob = p["rho"] / (p["rho"] + dv) * (1 - p["beta"])
        A_f = ob * qq * x_loc / (rt + ob * qq)
        B_f = p["beta"] * lam * (y_loc - p["b"]) / (rt + p["beta"] * lam + ob * qq)
        full = dv / p["rho"] * A_f * (y - p["b"] - B_f) - c
        assert full == pytest.approx(lim, rel=tol)


def test_implicit_gradient_matches_central_fd(standin):
    def m(h_bar, L5, key):
        p = P.replace(h_bar=h_bar)
        L = standin.L.at[4].set(L5)
        res = q.solve_inverse(p, L, standin.u, w1=standin.w1, t_h=standin.t_h, tau_w=standin.tau_w)
        return q.moments(p, res)[key]

    h0, L50 = P.h_bar, standin.L[4]
    for key in ("housing_q4_q1", "wage_q4", "rent_q2"):
        gh, gL = jax.grad(m, argnums=(0, 1))(h0, L50, key)
        eh, eL = 1e-4 * float(h0), 1e-4 * float(L50)
        fdh = (m(h0 + eh, L50, key) - m(h0 - eh, L50, key)) / (2 * eh)
        fdL = (m(h0, L50 + eL, key) - m(h0, L50 - eL, key)) / (2 * eL)
        assert float(gh) == pytest.approx(float(fdh), rel=1e-6)
        assert float(gL) == pytest.approx(float(fdL), rel=1e-6, abs=1e-12)
        assert abs(float(gh)) > 1e-5  # the moment does depend on h_bar


def test_moment_definitions_hand_made_case():
    """Table 2's notes on a hand-made 8-bin economy (quartiles = pairs of bins)."""
    p = P
    wg = np.array([10, 12, 13, 15, 16, 18, 20, 22.0])
    r = np.array([1, 1.1, 1.2, 1.3, 1.5, 1.6, 1.8, 2.0])
    x = np.array([20, 21, 22, 23, 24, 25, 26, 27.0])
    y = np.array([1, 1.02, 1.04, 1.06, 1.08, 1.1, 1.12, 1.14])
    u = np.array([0.05, 0.05, 0.04, 0.04, 0.05, 0.05, 0.06, 0.06])
    inc = np.array([30, 32, 34, 36, 38, 40, 42, 44.0])
    res = types.SimpleNamespace(x=jnp.asarray(x), y=jnp.asarray(y), r=jnp.asarray(r), wage=jnp.asarray(wg),
                                u=jnp.asarray(u), income=jnp.asarray(inc))
    m = {k: float(v) for k, v in q.moments(p, res).items()}
    avg = lambda v: v.reshape(4, 2).mean(axis=1)  # noqa: E731
    aw, ar = avg(wg), avg(r)
    share = ((1 - 0.11) * r * 10.10 + 0.11 * inc) / inc
    expect = {"wage_q2": aw[1] / aw[0] - 1, "wage_q3": aw[2] / aw[0] - 1, "wage_q4": aw[3] / aw[0] - 1,
              "rent_q2": ar[1] / ar[0] - 1, "rent_q3": ar[2] / ar[0] - 1, "rent_q4": ar[3] / ar[0] - 1,
              "housing_mean": share.mean(), "housing_q4_q1": avg(share)[3] - avg(share)[0],
              "replacement_rate": 0.28 * x.mean() / (np.sum((1 - u) * wg) / np.sum(1 - u)),
              "labor_share": np.sum((1 - u) * wg) / np.sum((1 - u) * x * y)}
    for k in q.MOMENT_KEYS:
        assert m[k] == pytest.approx(expect[k], rel=1e-13), k
    # Germany's housing difference: top half minus bottom half.
    m2 = q.moments(p, res, housing_groups=2)
    assert float(m2["housing_q4_q1"]) == pytest.approx(share[4:].mean() - share[:4].mean(), rel=1e-13)


def test_quartile_weights():
    W = q.quartile_weights(20)
    assert np.allclose(W[0, :5], 0.2) and np.allclose(W[0, 5:], 0) and np.allclose(W[3, 15:], 0.2)
    W6 = q.quartile_weights(6)  # bins straddle quartile edges: fractional weights
    assert np.allclose(W6.sum(axis=1), 1) and np.allclose(W6[0], [2 / 3, 1 / 3, 0, 0, 0, 0])


def test_replacement_times_labor_share_bounded_by_b(standin):
    """Fact (i): rr × ls = b E[x]/E[xy] ≤ b when y ≥ 1 and u is flat, for several Θ; so Table 2's
    model row (0.500 × 0.604 = 0.302 > b = 0.28) is not attainable at Table 1's b."""
    assert 0.500 * 0.604 > float(P.b)
    for kw in ({}, {"b": 0.35, "beta": 0.08}, {"h_bar": 6.0, "omega": 0.2}, {"b": 0.2, "beta": 0.02}):
        p = P.replace(**kw)
        res = standin.solve(p)
        assert res.converged
        m = q.moments(p, res)
        prod = float(m["replacement_rate"] * m["labor_share"])
        x, y = _np(res.x), _np(res.y)
        assert np.all(y >= 1.0)
        assert prod == pytest.approx(float(p.b) * x.mean() / np.mean(x * y), rel=1e-12)
        assert prod <= float(p.b)


def test_firm_congestion_barely_moves_the_solution(standin, base):
    """Fact (ii): H_f × 10^{±3} moves x_20 by < 0.02% (and y_20 by less)."""
    for f in (1e-3, 1e3):
        r = standin.solve(P.replace(H_f=float(P.H_f) * f))
        assert r.converged
        dx = abs(float(r.x[-1] / base.x[-1]) - 1)
        assert 1e-6 < dx < 2e-4
        assert abs(float(r.y[-1] / base.y[-1]) - 1) < 2e-4


def test_sorting_conventions_spread(standin, base):
    """Other discretisations of the sorting conditions (the lower or upper type indifferent)
    move x by up to ~3.6e-3 (relative) and the moments by up to ~4e-3 (absolute); measured for
    both in the benchmark run (``lower``: 3.55e-3 / 4.09e-3), tested for ``upper`` (3.42e-3 /
    3.94e-3) to save a compilation."""
    m0 = q.moments(P, base)
    for conv in ("upper",):
        r = standin.solve(P, sorting=conv)
        assert r.converged and r.sorting == conv
        dx = float(jnp.max(jnp.abs(r.x / base.x - 1)))
        dm = max(abs(float(q.moments(P, r)[k] - m0[k])) for k in q.MOMENT_KEYS)
        assert 1e-3 < dx < 5e-3
        assert 1e-3 < dm < 5e-3


def test_other_bin_counts():
    s = q.standin_profile(P, n=12)
    r = s.solve(P)
    assert r.converged and r.z.shape == (37,) and float(r.residual) <= 1e-12
    m = q.moments(P, r)
    assert 0.2 < float(m["wage_q4"]) < 0.5


def test_bad_input_raises_parameter_error(standin):
    L, u, w1 = standin.L, standin.u, standin.w1
    cases = [
        (dict(L=L.at[3].set(-1.0)), "L"),
        (dict(u=u.at[0].set(1.2)), "u"),
        (dict(u=u.at[0].set(0.0)), "u"),
        (dict(u=u[:5]), "u"),
        (dict(L=jnp.ones((2, 3))), "L"),
        (dict(w1=0.0), "w1"),
        (dict(w1=-3.0), "w1"),
        (dict(t_h=jnp.zeros(7)), "t_h"),
        (dict(tau_w=1.5), "tau_w"),
        (dict(sorting="centre"), "sorting"),
    ]
    for kw, field in cases:
        args = dict(L=L, u=u, w1=w1)
        args.update(kw)
        with pytest.raises(ParameterError) as e:
            q.solve_inverse(P, args.pop("L"), args.pop("u"), **args)
        assert e.value.field == field
    with pytest.raises(ParameterError) as e:
        q.solve_inverse(P.replace(omega=1.5), L, u, w1=w1)
    assert e.value.field == "params.omega"
    with pytest.raises(ParameterError):
        P.replace(gamma=1.0)


def test_pam_violation_is_flagged_not_returned(standin):
    """A density dip makes the root's x decrease between two bins: the discrete first-order
    conditions hold but that is no equilibrium (Proposition 1: PAM), so it is flagged."""
    r = q.solve_inverse(P, standin.L.at[10].multiply(0.7), standin.u, w1=standin.w1, t_h=standin.t_h,
                        tau_w=standin.tau_w)
    assert bool(r.solve.converged) and float(r.residual) <= 1e-12  # the root itself is fine
    assert not bool(r.pam) and not bool(r.converged) and r.status == "rejected"
    assert r.message.startswith("PAM violated")
    assert np.any(np.diff(_np(r.x)) <= 0)
    assert "rejected" in r.summary() and "PAM violated" in r.summary()
    assert r.to_dict()["message"] == r.message
