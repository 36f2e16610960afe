"""The main job of ``spatialjax solve jiao-tian`` (equilibria along ICT openness Delta,
:func:`spatialjax.models.jiao_tian_branches.equilibria_along`) checked against an independent
multistart: ``scipy.optimize.root`` from random starts (own RNG and distribution, none of the
library's starts) on a NumPy re-implementation of the equilibrium equations written from
MODELS.md §1 in levels (sums and powers, no log-sum-exp, no JAX).

The CLI runs once per module on the two-city (Figure 2) economy with a 6-point grid
(Delta = 1e-6, 0.2, 0.4, 0.6, 0.8, 1); the counts and the fold it prints and writes are compared
with the independent multistart. The module takes ~40 s on one busy core: two CLI runs share
one compilation of the solves (the second one is the failure path, exit 1).
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import root
from scipy.special import gamma as Gamma

from spatialjax.cli import main
from spatialjax.errors import ParameterError
from spatialjax.models import jiao_tian as jt
from spatialjax.models.jiao_tian_branches import equilibria_along

# Figure 2 notes: theta = 5, T^(1/theta) = (1.5, 1), L^m = 1, L^p = 2, gamma = 0.1, alpha = beta = 0.4, H = 1
FIG2 = dict(theta=5.0, T=np.array([1.5 ** 5, 1.0]), H=np.ones(2), alpha=0.4, beta=0.4, gam=0.1, Lm=1.0, Lp=2.0)
DEGENERATE = 1e-3  # the CLI's default --degenerate-share


def np_residual(y, Delta, e=FIG2):
    """Equations (8), (9), (11), (13), (14)-(18) in levels at y = (log w, log L^m, log U_w, log U_m)."""
    N = len(e["T"])
    th, be, al, ga = e["theta"], e["beta"], e["alpha"], e["gam"]
    w, Lm = np.exp(y[:N]), np.exp(y[N:2 * N])
    tau = np.full((N, N), Delta ** (-1 / th))
    np.fill_diagonal(tau, 1.0)
    k = 1.0 / (th * (1 - be))
    zeta = be ** (be / (1 - be)) * (1 - be) * Gamma(1 - k)
    eta = be ** (1 / (1 - be)) * Gamma(1 - k)
    K = e["T"][:, None] * (tau * w[None, :] ** be) ** (-th)          # T_n (tau_nc w_c^beta)^-theta
    Phi = K.sum(axis=1)                                              # (8)
    Epi = zeta * (Lm ** (ga * th) * Phi) ** k                        # (13)
    Lp_nc = eta / w[None, :] * K * (Phi ** (k - 1) * Lm ** (ga / (1 - be)) * Lm)[:, None]  # (19)
    Lp = Lp_nc.sum(axis=0)
    W = Epi * Lm + w * Lp                                            # (11)
    p = (1 - al) * W / e["H"]
    return np.concatenate([np.log(w) - (1 - al) * np.log(p) - y[2 * N],      # (16)
                           np.log(Epi) - (1 - al) * np.log(p) - y[2 * N + 1],  # (14)-(15)
                           [np.log(Lm.sum() / e["Lm"]), np.log(Lp.sum() / e["Lp"])]])  # (17)-(18)


def scipy_equilibria(Delta, n=120, seed=12345):
    """Distinct roots (max|F| < 1e-10, de-duplicated at 1e-5 in y) from ``n`` random starts:
    log w ~ U(-2, 1); log manager shares ~ U(-12, 0), normalised (reaches near-corners);
    utility levels the means implied at the start."""
    rng = np.random.default_rng(seed)
    N = 2
    roots = []
    for _ in range(n):
        lw = rng.uniform(-2.0, 1.0, N)
        ls = rng.uniform(-12.0, 0.0, N)
        lLm = ls - np.log(np.exp(ls).sum())
        y0 = np.concatenate([lw, lLm, [0.0, 0.0]])
        F0 = np_residual(y0, Delta)
        y0[2 * N], y0[2 * N + 1] = F0[:N].mean(), F0[N:2 * N].mean()  # levels that zero the mean gap
        with np.errstate(all="ignore"):
            sol = root(np_residual, y0, args=(Delta,), method="hybr", tol=1e-13, options={"maxfev": 300})
        if not np.all(np.isfinite(sol.x)) or np.max(np.abs(np_residual(sol.x, Delta))) > 1e-10:
            continue
        if all(np.max(np.abs(sol.x - r)) > 1e-5 for r in roots):
            roots.append(sol.x)
    return roots


def _kinds(roots):
    shares = [np.exp(r[2:4]) / np.exp(r[2:4]).sum() for r in roots]
    return sum(s.min() >= DEGENERATE for s in shares), sum(s.min() < DEGENERATE for s in shares)


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def two_city(tmp_path_factory):
    d = tmp_path_factory.mktemp("jt2")
    rc, out, err = _cli(["solve", "jiao-tian", "--example", "two-city", "--grid-points", "6", "--starts", "32",
                         "-q", "-o", str(d)])
    return dict(rc=rc, out=out, err=err, dir=d, eqs=pd.read_csv(d / "jiao_tian_equilibria.csv"),
                summary=json.loads((d / "jiao_tian_summary.json").read_text()))


def _printed_row(out, Delta):
    """(# interior, # degenerate, status) of the printed table's row at ``Delta``."""
    for line in out.splitlines():
        m = re.match(r"\s*all pairs\s+(\S+)\s+(\d+)\s+(\d+)\s+(\w+)", line)
        if m and abs(float(m.group(1)) - Delta) < 1e-9:
            return int(m.group(2)), int(m.group(3)), m.group(4)
    raise AssertionError(f"no printed row for Delta = {Delta}")


@pytest.mark.parametrize("Delta", [0.2, 0.6])
def test_cli_counts_agree_with_independent_multistart(two_city, Delta):
    assert two_city["rc"] == 0, two_city["err"]
    ref = scipy_equilibria(Delta)
    n_int, n_deg = _kinds(ref)
    assert (n_int, n_deg) == ({0.2: (2, 1), 0.6: (0, 1)}[Delta])  # the reference itself (Figure 2 economy)
    rows = two_city["eqs"][np.isclose(two_city["eqs"]["Delta"], Delta, rtol=0, atol=1e-12)]
    assert (rows["kind"] == "interior").sum() == n_int and (rows["kind"] == "degenerate").sum() == n_deg
    assert _printed_row(two_city["out"], Delta)[:2] == (n_int, n_deg)
    exp = next(e for e in two_city["summary"]["experiments"] if e["experiment"] == "all pairs")
    k = int(np.argmin(np.abs(np.asarray(exp["grid"]) - Delta)))
    assert exp["interior_counts"][k] == n_int and exp["counts"][k] == n_int + n_deg
    # the same equilibria: every written L^m vector is a reference root and vice versa (1e-6 relative)
    lib = np.log(rows[["Lm_1", "Lm_2"]].to_numpy())
    refL = np.array([r[2:4] for r in ref])
    dist = np.max(np.abs(lib[:, None, :] - refL[None, :, :]), axis=2)
    assert np.all(dist.min(axis=1) < 1e-6) and np.all(dist.min(axis=0) < 1e-6), dist


def test_cli_fold_agrees_with_independent_multistart(two_city):
    """The printed/written fold (the two interior equilibria of the autarky branch merge) lies
    where the reference count of interior equilibria drops from 2 to 0, to within 0.004."""
    exp = two_city["summary"]["experiments"][0]
    assert len(exp["folds_Delta"]) == 1
    fold = exp["folds_Delta"][0]
    assert f"folds at Delta = {fold:.4f}" in two_city["out"]
    assert 0.15 < fold < 0.25  # MODELS.md: the autarky branch folds around Delta ~ 0.2
    assert _kinds(scipy_equilibria(fold - 0.004, n=100))[0] == 2
    assert _kinds(scipy_equilibria(fold + 0.004, n=100))[0] == 0


def test_cli_degenerate_points_say_what_was_found(two_city):
    """Past the fold only the equilibrium with (almost) all managers in City 2 exists: status
    'degenerate' with the evidence, not '0 equilibria'; exit 0."""
    exp = two_city["summary"]["experiments"][0]
    assert exp["status"] == "successful" and exp["converged"] is True
    assert exp["point_statuses"] == ["successful", "successful", "degenerate", "degenerate", "degenerate",
                                     "degenerate"]
    for pt in exp["points"][2:]:
        assert pt["status"] == "degenerate" and pt["converged"] is False
        assert "only degenerate equilibria" in pt["message"] and "all managers in City 2" in pt["message"]
        assert re.search(r"\d+ random start\(s\) solved, \d+ of \d+ converged", pt["message"])
        (q,) = pt["equilibria"]
        assert q["degenerate"] is True and q["empty"] == [1] and q["min_share"] < DEGENERATE
    assert "Delta = 0.4: only degenerate equilibria" in two_city["out"]
    # index: the autarky equilibrium +1; the middle equilibrium of the S (and the degenerate one) -1
    rows = two_city["eqs"]
    at02 = rows[np.isclose(rows["Delta"], 0.2)].sort_values("skill_share")
    assert at02["index"].tolist() == [-1, 1, -1] and at02["stability"].tolist()[1] == "autarky-type"
    assert (two_city["dir"] / "jiao_tian_openness.png").stat().st_size > 10_000


def test_cli_no_solution_is_a_failure(tmp_path):
    """Branches too short and no random starts: grid points that no branch reaches have no
    equilibrium -> status no_solution, exit 1, said on stderr, and written with that status."""
    rc, out, err = _cli(["solve", "jiao-tian", "--example", "two-city", "--grid-points", "6", "--starts", "0",
                         "--arclength-steps", "10", "-q", "-o", str(tmp_path)])
    assert rc == 1
    summary = json.loads((tmp_path / "jiao_tian_summary.json").read_text())
    exp = summary["experiments"][0]
    assert summary["status"] == "incomplete" and exp["status"] == "incomplete"
    none = [D for D, s in zip(exp["grid"], exp["point_statuses"]) if s == "no_solution"]
    assert none and exp["point_statuses"][0] == "successful"
    assert "solve failed: all pairs: no equilibrium found at Delta = " in err and len(err.strip().splitlines()) == 1
    eqs = pd.read_csv(tmp_path / "jiao_tian_equilibria.csv")
    assert set(eqs.loc[eqs["point_status"] == "no_solution", "Delta"]) == set(none)
    assert eqs.loc[eqs["point_status"] == "no_solution", "kind"].isna().all()
    pt = exp["points"][exp["point_statuses"].index("no_solution")]
    assert pt["message"].startswith("no equilibrium found from 0 branch crossing(s) and 0 random start(s)")


def test_equilibria_along_rejects_bad_arguments():
    p, _ = jt.load_example("two-city")
    for kw, field in [(dict(grid=[0.1]), "grid"), (dict(grid=[0.2, 0.1]), "grid"), (dict(grid=[-0.1, 0.5]), "grid"),
                      (dict(upgraded=2), "upgraded"), (dict(n_starts=-1), "n_starts"),
                      (dict(degenerate_share=1.5), "degenerate_share"), (dict(arclength_steps=0), "arclength_steps")]:
        kw.setdefault("grid", [1e-6, 0.5])
        with pytest.raises(ParameterError) as ei:
            equilibria_along(p, **kw)
        assert ei.value.field == field
    with pytest.raises(ParameterError, match="jiao_tian.Params"):
        equilibria_along({"theta": 5}, [0.0, 1.0])
