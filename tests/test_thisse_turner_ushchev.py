"""Thisse, Turner & Ushchev (2023), "Foundations of Cities": equilibria, stability, propositions.

Two reference economies:
  A: α=0.6, β=0.3, ε=6, τ=1.2  (φ=0.335, η=0.45; ρ_m=0.056 < ρ_L=0.946: Figure 2(a) regime)
  B: α=0.95, β=0.8, ε=6, τ=1.01 (φ=0.942, η=15.2; ρ_L=0.785 < ρ_m=0.808: Figure 2(b) regime)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from spatialjax.errors import ParameterError
from spatialjax.models import thisse_turner_ushchev as ttu

A = ttu.Params(alpha=0.6, beta=0.3, eps=6.0, tau=1.2)
B = ttu.Params(alpha=0.95, beta=0.8, eps=6.0, tau=1.01)


def interior(eqs):
    return [e for e in eqs if e.kind == "interior"]


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,allowed", [
    ("alpha", 1.2, "(0.0, 1.0)"), ("beta", 0.0, "(0.0, 1.0)"), ("eps", -1.0, "> 0"),
    ("tau", 1.0, "(1.0, inf)"), ("gamma", -0.1, ">= 0"), ("delta", 1.5, "[0.0, 1.0]"),
    ("c", 0.0, "> 0"), ("b", float("nan"), "finite"),
])
def test_bad_parameters_name_field_and_allowed_range(field, value, allowed):
    with pytest.raises(ParameterError) as ei:
        A.replace(**{field: value})
    assert ei.value.field == field
    assert allowed in str(ei.value)


def test_unknown_keys_non_scalars_and_context_checks():
    with pytest.raises(ParameterError, match="kappa: unknown parameter; allowed keys are alpha"):
        ttu.Params.from_dict({"alpha": 0.6, "kappa": 1.0})
    with pytest.raises(ParameterError, match="gamma: must be a scalar"):
        ttu.equilibria(A.replace(gamma=np.array([0.0, 0.1])))
    # stability (Appendix N/P) needs α > 1/2; without it the solve still works
    low = A.replace(alpha=0.4)
    with pytest.raises(ParameterError, match="alpha: must be > 1/2 for the stability test"):
        ttu.equilibria(low)
    eqs = ttu.equilibria(low, stability=False)
    assert len(eqs) == 1 and eqs[0].stable is None
    # expected utility (27)-(28) needs ε > 1 (Γ((ε-1)/ε))
    e = ttu.equilibria(A.replace(eps=0.8))[0]
    with pytest.raises(ParameterError, match="eps: must be > 1"):
        ttu.expected_utility(A.replace(eps=0.8), e)
    with pytest.raises(ParameterError, match="s: must have shape"):
        ttu.conditional_prices(A, np.ones((2, 2)))


# ---------------------------------------------------------------------------------------------
# Proposition 3 (γ = δ = 0, b = c = d = 1) and the ε → ∞ limit
# ---------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(alpha=st.floats(0.52, 0.95), beta=st.floats(0.05, 0.9), eps=st.floats(1.5, 12.0),
       tau=st.floats(1.02, 2.0))
def test_prop3_unique_interior_below_one_and_omega_equals_rho_pow_inv_eta(alpha, beta, eps, tau):
    p = ttu.Params(alpha=alpha, beta=beta, eps=eps, tau=tau)
    eqs = ttu.equilibria(p)
    assert len(eqs) == 1 and eqs[0].kind == "interior"                # (i) unique, interior
    e = eqs[0]
    assert 0 < e.rho < 1 and 0 < e.omega < 1                             # (ii)
    # Appendix F(ii): at γ = 0, g(ρ) = ρ^ψ, so ω* = ρ*^{1/η}
    assert abs(e.log_omega - e.log_rho / float(p.eta)) < 1e-10
    if float(p.psi) > 1:                                                 # (iii) bell-shaped
        assert e.ell > 1 and e.pattern == "bell"
    assert e.full_residual < 1e-10


def test_prop3_iv_eps_to_infinity_is_flat_diagonal_not_one_ninth():
    errs = []
    for eps in (20.0, 100.0, 1000.0):
        e = ttu.equilibria(A.replace(eps=eps))[0]
        errs.append(np.max(np.abs(e.s - np.eye(3) / 3)))
        # the printed limit (a matrix of 1/9) is a misprint: no commuting in the limit (MODELS.md)
        assert np.max(np.abs(e.s - np.full((3, 3), 1 / 9))) > 0.2
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-3      # φ = 1.2^-1000 ≈ 0; ρ*, ω* → 1 at rate O(1/ε)
    e = ttu.equilibria(A.replace(eps=1000.0))[0]
    np.testing.assert_allclose(e.L, 1 / 3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Cross-check against the full (unreduced) system
# ---------------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(alpha=st.floats(0.52, 0.9), beta=st.floats(0.1, 0.8), eps=st.floats(2.0, 10.0), tau=st.floats(1.02, 1.6),
       gamma=st.floats(0.0, 0.4), delta=st.sampled_from([0.0, 0.0, 0.05, 0.3, 0.9]),
       b=st.floats(0.5, 2.0), c=st.floats(0.5, 2.0), d=st.floats(0.5, 2.0))
def test_reduced_solution_satisfies_full_system(alpha, beta, eps, tau, gamma, delta, b, c, d):
    p = ttu.Params(alpha=alpha, beta=beta, eps=eps, tau=tau, gamma=gamma, delta=delta, b=b, c=c, d=d)
    eqs = ttu.equilibria(p)
    ints = interior(eqs)
    assert len(ints) % 2 == 1          # Z runs from -∞ to +∞ (or reverse): an odd number of crossings
    for e in ints:
        res = ttu.full_residuals(p, e)
        assert set(res) == {"shares_3", "land_9", "costmin_12", "zeroprofit_14", "ratios_6"}
        assert max(res.values()) < 1e-10, res
        assert abs(e.L.sum() - 1) < 1e-10 and abs(e.M.sum() - 1) < 1e-10
        if abs(e.log_omega) < 30:
            np.testing.assert_allclose(np.asarray(ttu.commuting_shares(p, e.rho, e.omega)), e.s, rtol=1e-9, atol=1e-300)
    if delta > 0 or gamma == 0:
        assert all(e.kind == "interior" for e in eqs)


def test_conditional_prices_reproduce_equilibrium_prices():
    p = A.replace(gamma=0.2, b=1.3, d=0.8, c=1.1)
    ints = interior(ttu.equilibria(p))
    checked = 0
    for e in ints:
        if not (1e-8 < e.L.min()):
            continue                               # near-corner root: employment below 1e-8 somewhere
        cp = ttu.conditional_prices(p, e.s)        # cold start v = 0
        assert cp["residual"] < 1e-12
        np.testing.assert_allclose(cp["W"], e.W, rtol=1e-10)
        np.testing.assert_allclose(cp["R"], e.R, rtol=1e-10)
        checked += 1
    # the skips are the near-corner roots only: at least one root is checked, at most two skipped
    assert checked >= 1 and len(ints) - checked <= 2, (checked, len(ints))


def test_f_and_g_loci_cross_at_each_interior_equilibrium():
    for p in (A.replace(gamma=0.05), A.replace(gamma=0.15, b=1.2, d=0.9), A.replace(gamma=0.04, delta=0.3)):
        ints = interior(ttu.equilibria(p))
        checked = 0
        for e in ints:
            if abs(e.log_omega) > 30:
                continue       # ρ is at ρ_m / ρ_M to machine precision there; f cannot be inverted in ρ
            Om = math.exp((1 + float(p.eps)) / float(p.eps) * e.log_omega)
            assert float(ttu.f_curve(p, e.rho)) == pytest.approx(Om, rel=1e-8)
            assert float(ttu.g_curve(p, jnp.array([e.rho]))[0]) == pytest.approx(Om, rel=1e-8)
            checked += 1
        # only the (at most two) extreme near-corner roots may be skipped
        assert checked >= 1 and len(ints) - checked <= 2, (checked, len(ints))
    rho_m, rho_M = ttu.rho_bounds(A)
    f = np.asarray(ttu.f_curve(A, np.linspace(rho_m * 1.001, rho_M * 0.999, 200)))
    assert np.all(np.diff(f) < 0)                  # Lemma 1: f decreases from ∞ to 0


def test_zero_profit_locus_pivots_at_rho_L_with_corrected_Q_exponent():
    # (D.1): g(ρ_L; γ) = Q(ρ_L)^{-(1+ε)/ε} for every γ ≠ γ_m, the pivot of Figure 1. This holds only
    # with the Q-exponent γ(1+ε)/(α-γε) in (25) (MODELS.md).
    p = A.replace(b=1.3, c=0.9, d=0.8)
    rL = ttu.rho_L(p)
    Q = (rL + 2 * float(p.phi)) / (float(p.phi) * rL + 1 + float(p.phi) ** 2)
    eps = float(p.eps)
    for g in (0.0, 0.3 * float(p.gamma_m), 1.7 * float(p.gamma_m), 1.0):
        assert float(ttu.g_curve(p.replace(gamma=g), jnp.array([rL]))[0]) == pytest.approx(Q ** (-(1 + eps) / eps), rel=1e-9)
    # ρ_L is not always in (0, 1) (MODELS.md): a first-nature disadvantage of the centre moves it above 1
    assert ttu.rho_L(A.replace(c=0.5)) > 1 > ttu.rho_L(A)


# ---------------------------------------------------------------------------------------------
# Proposition 4 and 5: first nature, and the signs at γ = 0, δ = 0
# ---------------------------------------------------------------------------------------------

def test_prop4_threshold_c_bar_flat_pattern_and_monotonicity():
    from scipy.optimize import brentq

    p = A.replace(b=1.4, d=0.7)
    cbar = ttu.threshold_c_bar(p)
    # independent route: solve ℓ*(c) = 1 with the equilibrium solver
    ell = lambda c: ttu.equilibria(p.replace(c=c), stability=False)[0].ell
    c_root = math.exp(brentq(lambda lc: math.log(ell(math.exp(lc))), math.log(cbar) - 1, math.log(cbar) + 1, xtol=1e-12))
    assert c_root == pytest.approx(cbar, rel=1e-8)
    flat = ttu.equilibria(p.replace(c=cbar))[0]
    np.testing.assert_allclose(flat.L, 1 / 3, atol=1e-9)                          # (iii)
    assert ttu.equilibria(p.replace(c=0.9 * cbar))[0].pattern == "U"             # (ii)
    assert ttu.equilibria(p.replace(c=1.1 * cbar))[0].pattern == "bell"          # (iv)
    cs = cbar * np.exp(np.linspace(-4, 4, 9))
    ells = [ell(c) for c in cs]
    assert np.all(np.diff(ells) > 0)                                             # (G.2)
    assert ell(cbar * 1e-6) < 1e-3 and ell(cbar * 1e6) > 1e3                     # (i), (v)


def test_prop5_signs_of_dell_dgamma_and_dell_ddelta_at_zero():
    p = A.replace(b=1.2, d=0.9)
    c_hat = ttu.threshold_c_bar(p)       # ĉ = c̄: ℓ*(ĉ) = 1 (Appendix H)
    c_til = ttu.threshold_c_tilde(p)     # c̃: c ℓ*(c) = 2
    assert c_til > 0 and c_hat > 0
    for c in (0.5 * c_hat, 2.0 * c_hat, 0.5 * c_til, 2.0 * c_til):
        q = p.replace(c=c)
        e = ttu.equilibria(q)[0]
        sens = ttu.sensitivities(q, e)
        # (i) dℓ/dγ > 0 iff c > ĉ
        assert np.sign(sens["gamma"]["ell"]) == np.sign(c - c_hat)
        # (ii) dℓ/dδ > 0 iff c < c̃ (da/dδ at δ = 0 has the sign of 2 - cℓ)
        assert np.sign(sens["delta"]["ell"]) == np.sign(c_til - c)
        assert np.sign(sens["delta"]["ell"]) == np.sign(2 - c * e.ell)
    # the autodiff derivative agrees with a central finite difference through the solver
    q = p.replace(c=2.0 * c_hat, gamma=0.03, delta=0.02)
    e = ttu.equilibria(q)[0]
    sens = ttu.sensitivities(q, e)
    for name in ("gamma", "delta", "c"):
        h = 1e-6
        lp = ttu.equilibria(q.replace(**{name: float(getattr(q, name)) + h}))[0].ell
        lm = ttu.equilibria(q.replace(**{name: float(getattr(q, name)) - h}))[0].ell
        assert sens[name]["ell"] == pytest.approx((lp - lm) / (2 * h), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Increasing returns: Propositions 6, 7, 8, 9
# ---------------------------------------------------------------------------------------------

def test_prop7_weak_irs_unique_bell_and_comparative_statics():
    gm = float(A.gamma_m)
    assert float(A.psi) > 1
    for g in np.array([0.1, 0.4, 0.7, 0.95]) * gm:
        p = A.replace(gamma=g)
        ints = interior(ttu.equilibria(p))
        assert len(ints) == 1
        e = ints[0]
        assert e.ell > 1
        s = ttu.sensitivities(p, e)["gamma"]
        assert s["ell"] > 0 and s["rho"] < 0 < s["omega"]
        assert e.rho > ttu.rho_L(p)                    # Appendix J: ρ* > ρ_L


def test_prop8i_three_interior_equilibria_with_extreme_roots():
    gm = float(A.gamma_m)
    rm, rM = ttu.rho_bounds(A)
    rL = ttu.rho_L(A)
    assert rm < rL
    prev = None
    for k in (1e-2, 1e-3, 1e-4):
        ints = interior(ttu.equilibria(A.replace(gamma=gm * (1 + k))))
        assert len(ints) == 3
        e1, e2, e3 = ints                                   # ordered by ρ
        assert e1.rho < 1 < e3.rho and e1.omega > 1 > e3.omega
        assert all(e.full_residual < 1e-10 for e in ints)
        if prev is not None:                                # as γ ↘ γ_m
            assert e1.log_omega > prev[0].log_omega and e3.log_omega < prev[2].log_omega
            assert abs(e2.rho - rL) < abs(prev[1].rho - rL)
        prev = ints
    # at γ = γ_m (1 + 1e-4) the extreme roots are far beyond what a scan in ρ can resolve
    assert prev[0].log_omega > 300 and prev[2].log_omega < -300
    # (log-space error ~ |log ω|·1e-16 ≈ 1e-12 at |log ω| ~ 1e4)
    assert prev[0].L[1] == pytest.approx(1.0, abs=1e-10) and prev[2].L[1] < 1e-100


def test_prop8ii_unique_interior_equilibrium_when_rho_L_below_rho_m():
    gm = float(B.gamma_m)
    rm, _ = ttu.rho_bounds(B)
    assert ttu.rho_L(B) < rm
    prev = None
    for k in (1e-2, 1e-3, 1e-4):
        ints = interior(ttu.equilibria(B.replace(gamma=gm * (1 + k))))
        assert len(ints) == 1
        e = ints[0]
        assert e.omega < 1 < e.rho
        if prev is not None:
            assert e.ell < prev.ell              # → (1/2, 0, 1/2) as γ ↘ γ_m
        prev = e
    assert prev.L[1] < 1e-20
    # just below γ_m the single equilibrium is central and concentrating as γ ↗ γ_m (Proposition 7,
    # footnote 12): the jump from ℓ* > 1 to ℓ* ≈ 0 across γ_m is the discontinuity of Fig. 2(b)
    below = [interior(ttu.equilibria(B.replace(gamma=gm * (1 - k)))) for k in (1e-2, 1e-3)]
    assert all(len(b) == 1 for b in below)
    assert 1 < below[0][0].ell < below[1][0].ell


def test_prop9_strong_irs_unique_and_flattening():
    thr = float(A.gamma_strong)
    logs = []
    for g in (thr + 0.05, thr + 0.5, thr + 3.0, 50.0, 1000.0):
        ints = interior(ttu.equilibria(A.replace(gamma=g)))
        assert len(ints) == 1
        logs.append(math.log(ints[0].ell))
    assert all(v < 0 for v in logs)                         # (L.2): ℓ* < 1
    assert np.all(np.diff(np.abs(logs)) < 0) and abs(logs[-1]) < 1e-3


def test_gamma_s_folds_and_prop9_bound():
    gs = ttu.gamma_s(A)
    (g_fold, rho_fold), = ttu.folds(A)
    assert gs == g_fold and rho_fold < 1                 # Figure 2(a): the lower branches merge
    assert float(A.gamma_m) < gs <= float(A.gamma_strong)  # Definition 2 and Proposition 9's bound
    assert len(interior(ttu.equilibria(A.replace(gamma=gs * (1 - 1e-3)), stability=False))) == 3
    assert len(interior(ttu.equilibria(A.replace(gamma=gs * (1 + 1e-3)), stability=False))) == 1
    # a pair of roots 1e-9 (relative γ) before the fold is closer than the scan grid; it is still
    # resolved (stationary point of Z between grid points) — and gone just after the fold
    near = ttu.equilibria(A.replace(gamma=gs * (1 - 1e-9)), corners=False)
    assert len(near) == 3 and near.info["n_fold_pairs"] == 1
    assert 0 < near[0].log_omega - near[1].log_omega < 1e-2          # the two merging roots (ρ ascending)
    assert all(e.full_residual < 1e-10 for e in near)
    assert len(ttu.equilibria(A.replace(gamma=gs * (1 + 1e-9)), corners=False)) == 1
    # footnote 10: with ρ_L < ρ_m there is no fold and γ_s = γ_m
    assert ttu.folds(B) == [] and ttu.gamma_s(B) == float(B.gamma_m)
    with pytest.raises(ParameterError, match="delta"):
        ttu.folds(A.replace(delta=0.1))


def test_prop6_corner_equilibria_levels_and_instability():
    p = A.replace(gamma=0.05, b=1.2, d=0.8, c=1.1)
    eqs = ttu.equilibria(p)
    corners = [e for e in eqs if e.kind == "corner"]
    assert len(corners) == 2
    rm, rM = ttu.rho_bounds(p)
    agg, disp = corners                                     # ordered by ρ: ρ_m first
    np.testing.assert_allclose(agg.L, [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(disp.L, [0.5, 0, 0.5], atol=1e-15)
    assert agg.rho == pytest.approx(rm, rel=1e-12) and disp.rho == pytest.approx(rM, rel=1e-12)
    a, beta, eps = float(p.alpha), float(p.beta), float(p.eps)
    for e in corners:
        assert np.all(e.M > 0)                              # (iii): every location has residents
        H = beta * (e.s @ e.W) / e.R                        # household land demand
        np.testing.assert_allclose(H + e.N, 1.0, atol=1e-12)  # (9)
        # (6): the prices reproduce ρ = (b r^{-β})^ε at the corner
        assert eps * (math.log(float(p.b)) - beta * math.log(e.R[1] / e.R[2])) == pytest.approx(e.log_rho, abs=1e-10)
        assert e.stable is False                            # Appendix O
    # Appendix N as printed (no β): N_0 = (1-α)/(1-α+α s_00) violates land clearing at the centre
    N0_printed = (1 - a) / (1 - a + a * agg.s[1, 1])
    H0 = beta * agg.s[1, 1] * agg.W[1] / agg.R[1]
    assert abs(H0 + N0_printed - 1) > 1e-2
    # no corners without IRS or with spillovers (Proposition 6 needs δ = 0 < γ)
    assert all(e.kind == "interior" for e in ttu.equilibria(p.replace(gamma=0.0)))
    assert all(e.kind == "interior" for e in ttu.equilibria(p.replace(delta=0.1)))


# ---------------------------------------------------------------------------------------------
# Stability (Definition 3) by autodiff
# ---------------------------------------------------------------------------------------------

def _printed_and_corrected(p, e):
    """-d log w̄/Δ from Appendix P: (P.14) for 00→01 and (P.15) printed / corrected for 10→11."""
    a, b, g = float(p.alpha), float(p.beta), float(p.gamma)
    s, w, L0, L1 = e.s, e.W[1] / e.W[2], e.L[1], e.L[2]
    s00, s01, s10, s11, s1m1 = s[1, 1], s[1, 2], s[2, 1], s[2, 2], s[2, 0]
    D0 = ((1 - a) * L0 + a * b * s00) * w + 2 * a * b * s01
    D1 = a * b * s10 * w + (1 - a) * L1 + a * b * (s11 + s1m1)
    den = a + (1 - a) * (((1 - a) * L0 + a * b * s00) * w / D0 - a * b * s10 * w / D1)
    G = g * (1 / L0 + 1 / (2 * L1))
    X14 = ((1 - a + a * b) * w - a * b) / D0 + 0.5 * (1 - a) / D1
    X15 = (1 - a) * w / D0 + 0.5 * (1 - a + a * b) / D1                # as printed
    X15c = (1 - a) * w / D0 + 0.5 * (1 - a + a * b - a * b * w) / D1   # with the -αβw term
    return [-(-G + (1 - a) * X) / den for X in (X14, X15, X15c)]


def test_autodiff_stability_gains_match_corrected_appendix_P():
    idx = lambda i, j, k, l: int(np.where((ttu._SRC == 3 * i + j) & (ttu._DST == 3 * k + l))[0][0])
    checked, worst = 0, 0.0
    for p in (A.replace(gamma=0.2), ttu.Params(alpha=0.7, beta=0.4, eps=3.0, tau=1.5, gamma=0.3)):
        for e in interior(ttu.equilibria(p)):
            gs = ttu.stability_gains(p, e)["symmetric"]
            p14, p15_printed, p15 = _printed_and_corrected(p, e)
            assert gs[idx(1, 1, 1, 2)] == pytest.approx(p14, rel=1e-9)      # 00 → 01 (and 0,-1)
            assert gs[idx(2, 1, 2, 2)] == pytest.approx(p15, rel=1e-9)      # 10 → 11 (and mirror)
            worst = max(worst, abs(p15_printed - p15) / abs(p15))
            checked += 1
    assert checked == 6
    assert worst > 0.3          # the printed (P.15) (without -αβw) is off by > 30% at some equilibria


def test_figure2a_stability_pattern():
    gm = float(A.gamma_m)
    eqs = ttu.equilibria(A.replace(gamma=0.5 * gm))
    assert [e.stable for e in eqs] == [False, True, False]          # corner, interior, corner
    eqs = ttu.equilibria(A.replace(gamma=1.05 * gm))
    kinds = [e.kind for e in eqs]
    assert kinds == ["corner", "interior", "interior", "interior", "corner"]
    # the near-corner branches are unstable, the central branch is stable (Section 8)
    assert [e.stable for e in eqs] == [False, False, True, False, False]
    assert eqs[2].stability_margin < 0 < eqs[1].stability_margin
    # residence-only moves never destabilise (Appendix P, step 3): all Appendix-P gains at
    # the stable root are ≤ 0, and the single-pair variant agrees here
    assert eqs[2].stable_pair is True


def test_vmapped_gamma_sweep_matches_single_solves_and_inverse_correspondence(tmp_path):
    gm = float(A.gamma_m)
    gammas = np.linspace(0.0, 3 * gm, 25)
    sw = ttu.sweep_gamma(A, gammas)
    n = sw["n_roots"]
    assert np.all(n[gammas < gm] == 1) and np.all(n[(gammas > gm) & (gammas < 2 * gm)] == 3)
    for i in (3, 9, 13, 20):
        ints = interior(ttu.equilibria(A.replace(gamma=gammas[i])))
        assert len(ints) == n[i]
        np.testing.assert_allclose(sw["log_rho"][i, :n[i]], [e.log_rho for e in ints], atol=1e-12)
        assert list(sw["stable"][i, :n[i]]) == [e.stable for e in ints]
    # every swept root lies on the inverse correspondence γ(ρ) (Section 7, corrected form)
    for i in range(len(gammas)):
        for k in range(n[i]):
            if abs(sw["log_omega"][i, k]) < 3 and gammas[i] > 0:   # f(ρ) loses digits near ρ_m, ρ_M
                g = float(ttu.gamma_of_rho(A, math.exp(sw["log_rho"][i, k])))
                assert g == pytest.approx(gammas[i], rel=1e-7)
    # Figure 2 from the same sweep: solid (stable) central branch, dashed (unstable) outer branches
    from spatialjax.plots import thisse_turner_ushchev as plots

    segs = plots._segments(sw)
    styles = {stable for _, ly, stable in segs}
    assert styles == {True, False}
    central = [(gx, stable) for gx, ly, stable in segs if abs(ly[0]) < 0.2]      # ln ρ near 0
    assert all(stable for gx, stable in central if gx[1] <= 2.7 * gm)
    assert not any(stable for _, ly, stable in segs if abs(ly[0]) > 1)
    # the central branch loses stability before its fold (γ_s ≈ 4 γ_m): at γ = 3 γ_m no interior
    # equilibrium is stable ("stable equilibria need not exist", Section 8)
    assert not any(sw["stable"][-1, :n[-1]])
    plots.figure2(A, gammas, path=tmp_path / "f2.png", sweep=sw)
    assert (tmp_path / "f2.png").stat().st_size > 10_000
    # the sweep ran through spatialjax.sweep and reports per-γ success and per-root statuses
    assert sw["ok"].all() and sw["failed"].size == 0 and sw["sweep"].size == len(gammas)
    assert all(sw["root_status"][i, k] == ("successful" if k < n[i] else "")
               for i in range(len(gammas)) for k in range(sw["root_status"].shape[1]))
    with pytest.raises(ParameterError, match="gammas: must be a non-empty 1-D array"):
        ttu.sweep_gamma(A, [])


def test_near_corner_roots_listed_once_by_the_float64_rule():
    """Rule (equilibria docstring): an interior root is the corner when s, W, R agree to 1e-12."""
    gm = float(A.gamma_m)
    # γ = 1.1 γ_m: the near-corner roots (ω ≈ 1e30, L_±1 ≈ 1.5e-30) are distinct from the corners
    # in float64 (W_±1/W_0 ≈ 1e-5 where the corner has 0): five equilibria, no merge
    eqs = ttu.equilibria(A.replace(gamma=1.1 * gm))
    assert [e.kind for e in eqs] == ["corner", "interior", "interior", "interior", "corner"]
    assert eqs.info["merged_corners"] == []
    assert 60 < eqs[1].log_omega < 80 and ttu._max_abs_diff(eqs[1], eqs[0]) > 1e-6
    # γ = γ_m (1 + 1e-3): the extreme roots equal the corners to 1e-12 (the periphery's wage and
    # employment underflow): each pair is listed once, as the interior root with the corner's verdict
    p = A.replace(gamma=gm * (1 + 1e-3))
    eqs = ttu.equilibria(p)
    both = ttu.equilibria(p, corners=False)
    assert [e.kind for e in eqs] == ["interior"] * 3 and len(both) == 3
    assert [m["corner"] for m in eqs.info["merged_corners"]] == ["agglomerated", "dispersed"]
    assert all(m["max_abs_diff"] <= 1e-12 for m in eqs.info["merged_corners"])
    for e, which in ((eqs[0], "agglomerated"), (eqs[2], "dispersed")):
        assert e.stable is False and e.stability_margin == math.inf        # Appendix O: corners unstable
        assert f"coincides in float64 with the {which} corner" in e.message
    assert eqs[1].stable is True and eqs[1].message == ""
    # the same roots without corners: the autodiff gains are not finite there, so the verdict is
    # unknown (None), not "unstable"
    assert [e.stable for e in both] == [None, True, None]
    assert all("stability not determined" in e.message for e in (both[0], both[2]))
    assert all(e.status == "successful" for e in eqs)


def test_sensitivities_nan_at_a_fold_and_status_named():
    """At the fold the root of Z is double (Z_y = 0): the implicit derivative is undefined and
    reported as NaN with status 'singular', never as a plausible number (or a silent zero)."""
    import dataclasses

    (g_fold, rho_fold), = ttu.folds(A)
    p = A.replace(gamma=g_fold)
    y = float(np.log(ttu.f_curve(p, rho_fold)))                # Ω on the market-clearing locus
    lw = float(p.eps) / (1 + float(p.eps)) * y
    base = interior(ttu.equilibria(p.replace(gamma=0.5 * g_fold)))[0]
    at_fold = dataclasses.replace(base, log_omega=lw, log_rho=math.log(rho_fold), rho=rho_fold, omega=math.exp(lw))
    s = ttu.sensitivities(p, at_fold)
    assert s["status"] == "singular"
    assert all(math.isnan(v) for k in ttu.PARAM_NAMES for v in s[k].values())
    # a regular root next to it: finite, status successful, and it agrees with a finite difference
    q = A.replace(gamma=0.9 * g_fold)
    e = interior(ttu.equilibria(q, stability=False))[0]
    s = ttu.sensitivities(q, e)
    assert s["status"] == "successful"
    h = 1e-6 * g_fold
    up = interior(ttu.equilibria(q.replace(gamma=0.9 * g_fold + h), stability=False))[0].rho
    dn = interior(ttu.equilibria(q.replace(gamma=0.9 * g_fold - h), stability=False))[0].rho
    assert s["gamma"]["rho"] == pytest.approx((up - dn) / (2 * h), rel=1e-5)


def test_conditional_prices_status_and_implicit_derivative_match_finite_differences():
    p = A.replace(gamma=0.2, b=1.3, d=0.8, c=1.1)
    e = interior(ttu.equilibria(p))[0]
    cp = ttu.conditional_prices(p, e.s)
    assert cp["status"] == "successful" and cp["converged"] and cp["residual"] < 1e-13
    # d log W̄ / d log s through solve_root's adjoint vs central differences of re-solves
    ls0 = jnp.log(jnp.asarray(e.s))
    f = lambda ls: ttu._conditional_log_prices(p, ls, jnp.zeros(3))[0]
    J = np.asarray(jax.jacrev(f)(ls0)).reshape(3, 9)
    h = 1e-6
    for k in (0, 4, 5):
        d = np.zeros(9)
        d[k] = h
        up = np.asarray(f(ls0 + d.reshape(3, 3)))
        dn = np.asarray(f(ls0 - d.reshape(3, 3)))
        np.testing.assert_allclose(J[:, k], (up - dn) / (2 * h), rtol=1e-6, atol=1e-9)


def test_spillovers_small_delta_is_continuous_in_delta():
    p = A.replace(gamma=0.3 * float(A.gamma_m), c=1.5)
    e0 = interior(ttu.equilibria(p))[0]
    e1 = interior(ttu.equilibria(p.replace(delta=1e-7)))[0]
    s = ttu.sensitivities(p, e0)["delta"]["rho"]
    assert e1.rho - e0.rho == pytest.approx(1e-7 * s, rel=1e-4)


def test_expected_utility_matches_monte_carlo():
    p = A.replace(gamma=0.05, b=1.2)
    e = interior(ttu.equilibria(p))[0]
    U = ttu.expected_utility(p, e)
    rng = np.random.default_rng(0)
    eps = float(p.eps)
    z = (-np.log(rng.uniform(size=(200_000, 3, 3)))) ** (-1 / eps)   # Fréchet(ε) draws
    B = np.array([1.0, 1.2, 1.0])
    dist = np.abs(np.arange(3)[:, None] - np.arange(3)[None, :])
    V = B[:, None] * e.W[None, :] / (float(p.tau) ** dist * e.R[:, None] ** float(p.beta))
    mc = (z * V).reshape(len(z), 9).max(axis=1)
    assert U == pytest.approx(mc.mean(), rel=4 * mc.std() / math.sqrt(len(mc)) / mc.mean() + 1e-3)
    # shares of the Monte Carlo choices match (7)
    choice = np.bincount((z * V).reshape(len(z), 9).argmax(axis=1), minlength=9).reshape(3, 3) / len(z)
    np.testing.assert_allclose(choice, e.s, atol=5e-3)


def test_summary_and_json():
    eqs = ttu.equilibria(A.replace(gamma=0.11))
    txt = eqs.summary()
    assert "interior" in txt and "corner" in txt and "unstable" in txt and "rho_L" in txt
    import json
    d = json.loads(eqs.to_json())
    assert len(d["equilibria"]) == len(eqs) == 5


# ---------------------------------------------------------------------------------------------
# Figures and CLI
# ---------------------------------------------------------------------------------------------

def test_cli_writes_tables_and_figures(tmp_path, capsys):
    from spatialjax.cli import main

    rc = main(["solve", "ttu", "--gamma", "0.11", "--n-gamma", "25", "--gamma-max", "0.3", "-o", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "stable" in out and "interior" in out
    rows = (tmp_path / "ttu_equilibria.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 5
    for name in ("ttu_figure1.png", "ttu_figure2.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    rc = main(["solve", "ttu", "--tau", "0.9", "-o", str(tmp_path)])
    assert rc == 2
    assert "tau: must lie in (1.0, inf)" in capsys.readouterr().err
