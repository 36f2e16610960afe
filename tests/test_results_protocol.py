"""Every public result type of the models has the protocol of :mod:`spatialjax.results`:
``status`` is a vocabulary name, ``converged`` agrees with it, ``str(r) == r.summary()``
(a string, never printed), ``to_json`` is strict JSON that round-trips to ``to_dict``."""

import json
import math
import warnings

import numpy as np
import pytest

from spatialjax import results
from spatialjax.solver import status_names as solver_status_names
from spatialjax.models import helsley_strange as hs
from spatialjax.models import thisse_turner_ushchev as ttu
from spatialjax.models import van_vuuren as vv


def _hs_results():
    p = hs.default_params()
    bad = hs.Params(beta=0.5, gamma=0.8)             # beta < gamma: no interior maximum (after (A.19))
    miss = hs.Params(N=[100.0, 300.0])                # ratio ray misses the contract curve (footnote 14)
    return {"hs.Optimum": hs.solve_type_optimum(p, 0), "hs.Optimum(failed)": hs.solve_type_optimum(bad, 0),
            "hs.Optimum(contract)": hs.solve_contract_curve(p, [0.5, 0.5]),
            "hs.CPE": hs.constrained_pareto_efficient(p), "hs.CPE(empty)": hs.constrained_pareto_efficient(miss),
            "hs.NashSet": hs.nash_interval(p), "hs.Specialized": hs.specialized_equilibria(p),
            "hs.PartitionTable": hs.partition_equilibria(p, grid=801)}


def _ttu_results():
    eqs = ttu.equilibria(ttu.Params(gamma=0.11))
    return {"ttu.Equilibria": eqs, "ttu.Equilibrium(interior)": next(e for e in eqs if e.kind == "interior"),
            "ttu.Equilibrium(corner)": next(e for e in eqs if e.kind == "corner")}


def _vv_results():
    # panel A, a = 0.25: a segregated city; configs=corners runs only the corner program
    # (the full market kernel with its 40 interior Newton solves is not needed for the protocol)
    P = vv.Params.panel_a(0.25)
    corners = ("integrated", "segregated")
    eqs = vv.solve_market(P, configs=corners)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        none = vv.solve_market(vv.Params.panel_b(1.0, gamma=50.0), configs=corners)   # vacancies too costly: no_solution
        Ph = vv.Params.panel_b(1.0, tau=vv.TABLE2_TAU)
        het = vv.solve_market_hetero(Ph)
        plh = vv.solve_planner_hetero(Ph)
    return {"vv.Equilibria": eqs, "vv.Equilibria(none)": none, "vv.MarketEquilibrium": eqs[0],
            "vv.PlannerResult": vv.solve_planner(P), "vv.Equilibria(hetero)": het,
            "vv.MarketEquilibriumHetero": het[0], "vv.PlannerResultHetero": plh}


def _oh_theory_results():
    from spatialjax.models.oh import theory as th

    p = th.TheoryParams()
    eq = th.solve_equilibrium(p, n_grid=8, refine=False)
    p0 = th.TheoryParams(rho=0.0)
    return {"oh.TheoryResult": eq,
            # delta_v small: the collocation root is solved but low types gain from the top cells (Prop. 1)
            "oh.TheoryResult(rejected)": th.solve_equilibrium(p.replace(delta_v=0.001), n_grid=8, refine=False),
            "oh.PlannerResult": th.solve_planner(p0, n_grid=8, refine=False),
            "oh.PlannerResult(failed)": th.solve_planner(p0, n_grid=8, refine=False, tol=1e-30),  # unreachable tol
            "oh.NeoclassicalResult": th.neoclassical_benchmark(th.TheoryParams(M_f=1.0, H_f=1.0), n_grid=8),
            "oh.OneSidedResult": th.one_sided_equivalent(p, eq)}


def _oh_quantitative_results():
    from spatialjax.models.oh import estimation as est
    from spatialjax.models.oh import forward as fw
    from spatialjax.models.oh import quantitative as qm

    p = qm.Params.table1()
    prof = qm.standin_profile(p)
    inv = prof.solve(p)
    # a density dip makes x decrease between two bins: the root is fine, PAM fails
    dip = qm.solve_inverse(p, prof.L.at[10].multiply(0.7), prof.u, w1=prof.w1, t_h=prof.t_h, tau_w=prof.tau_w)
    ty = fw.backout_types(p, inv)
    base = fw.solve_forward(p, ty)
    dereg = fw.deregulation_policies(ty)
    direct = fw.solve_forward(p, ty, dereg, continuation=False)   # needs the homotopy: plain Newton fails
    small = fw.Policies(t_h=ty.base_policies.t_h * 1.01, tau_w=ty.base_policies.tau_w)
    cf = fw.run_counterfactual(p, ty, small, name="small", paper={})
    cf_failed = fw.CounterfactualResult(name="deregulation (no homotopy)", base=base, new=direct,
                                        metrics=fw._metrics(base, direct),
                                        decomposition=fw.welfare_decomposition(p, ty, base, direct), paper={})
    x, w, lam = (np.asarray(getattr(inv, k)) for k in ("x", "wage", "lam"))
    lx, ly = np.log(x) - np.mean(np.log(x)), np.log(w / x) - np.mean(np.log(w / x))
    kw = dict(rho=0.004, delta=0.028, replacement_rate=0.5)
    _, _, row = est.load_standin("us")
    start = (row["log_L0"], row["log_L_slope"], math.log(row["w1"]))
    return {"oh.InverseResult": inv, "oh.InverseResult(rejected)": dip, "oh.ForwardResult": base,
            "oh.ForwardResult(failed)": direct, "oh.CounterfactualResult": cf,
            "oh.CounterfactualResult(failed)": cf_failed,
            "oh.ReducedFormRecovery": fw.recover_productivity(lx, ly, lam, labor_share=0.6, **kw),
            "oh.ReducedFormRecovery(none)": fw.recover_productivity(lx, ly, lam, labor_share=1e-12, **kw),
            # started away from the shipped optimum (at it, one evaluation already satisfies the stopping rule)
            "oh.StandinFit(failed)": est.fit_standin("us", start=(start[0] + 0.3, start[1] * 0.7, start[2] + 0.1),
                                                     max_nfev=1)}


_CACHE = {}
_BUILT = set()
_GROUPS = {"hs": (_hs_results,), "ttu": (_ttu_results,), "vv": (_vv_results,),
           "oh": (_oh_theory_results, _oh_quantitative_results)}


def _group(*prefixes):
    """The results of the named model groups, built once each (so ``-k oh`` builds only Oh's)."""
    for g in prefixes:
        if g not in _BUILT:
            for f in _GROUPS[g]:
                _CACHE.update(f())
            _BUILT.add(g)
    return _CACHE


def _all():
    return _group(*_GROUPS)


def _get(name):
    return _group(name.split(".")[0])[name]


NAMES = ["hs.Optimum", "hs.Optimum(failed)", "hs.Optimum(contract)", "hs.CPE", "hs.CPE(empty)", "hs.NashSet",
         "hs.Specialized", "hs.PartitionTable", "ttu.Equilibria", "ttu.Equilibrium(interior)",
         "ttu.Equilibrium(corner)", "vv.Equilibria", "vv.Equilibria(none)", "vv.MarketEquilibrium",
         "vv.PlannerResult", "vv.Equilibria(hetero)", "vv.MarketEquilibriumHetero", "vv.PlannerResultHetero",
         "oh.TheoryResult", "oh.TheoryResult(rejected)", "oh.PlannerResult", "oh.PlannerResult(failed)",
         "oh.NeoclassicalResult", "oh.OneSidedResult", "oh.InverseResult", "oh.InverseResult(rejected)",
         "oh.ForwardResult", "oh.ForwardResult(failed)", "oh.CounterfactualResult",
         "oh.CounterfactualResult(failed)", "oh.ReducedFormRecovery", "oh.ReducedFormRecovery(none)",
         "oh.StandinFit(failed)"]


def _no_nonfinite(x):
    if isinstance(x, float):
        assert math.isfinite(x)
    elif isinstance(x, dict):
        for v in x.values():
            _no_nonfinite(v)
    elif isinstance(x, list):
        for v in x:
            _no_nonfinite(v)


@pytest.mark.parametrize("name", NAMES)
def test_protocol(name):
    r = _get(name)
    assert isinstance(r, results.Result)
    assert r.status in results.STATUSES
    assert bool(r.converged) == (r.status in results.CONVERGED)
    assert isinstance(r.message, str)
    s = r.summary()
    assert isinstance(s, str) and len(s) > 20 and str(r) == s
    assert r.status in s                                   # the table names its status
    d = r.to_dict()
    text = r.to_json()
    back = json.loads(text)                                # strict JSON: NaN/inf written as null
    assert "NaN" not in text and "Infinity" not in text
    assert back == d
    _no_nonfinite(back)
    assert back["status"] == r.status and back["converged"] == bool(r.converged)
    res = float(np.max(np.asarray(r.residual, dtype=float))) if hasattr(r, "residual") else math.nan
    assert back["residual"] == (res if math.isfinite(res) else None)


def test_expected_statuses():
    """The status names say what happened (a success is never free text that reads as a failure)."""
    r = _all()
    assert r["hs.Optimum"].status == "successful"
    # beta < gamma: the only stationary point is at negative n (closed form (A.18)), so the FOC solve
    # finds no root: "stalled" on the generic solver (never "successful")
    assert r["hs.Optimum(failed)"].status in ("stalled", "not_a_maximum", "max_steps_reached")
    assert r["hs.CPE(empty)"].status == "empty" and r["hs.CPE(empty)"].converged
    assert r["vv.Equilibria(none)"].status == "no_solution" and not r["vv.Equilibria(none)"].converged
    assert r["vv.Equilibria"].status == "successful" and len(r["vv.Equilibria"]) >= 1
    assert r["ttu.Equilibria"].status == "successful" and len(r["ttu.Equilibria"]) == 5
    corner = r["ttu.Equilibrium(corner)"].to_dict()
    assert corner["kind"] == "corner" and (corner["omega"] is None or corner["omega"] == 0.0)


def test_oh_expected_statuses():
    """Oh (2025): successes are "successful"; a solved root that fails a model condition (PAM, global
    incentive compatibility) is "rejected" with the reason in ``message``; solver failures keep the
    solver's name; the collections name the first failing solve."""
    r = _group("oh")
    for k in ("oh.TheoryResult", "oh.PlannerResult", "oh.NeoclassicalResult", "oh.OneSidedResult",
              "oh.InverseResult", "oh.ForwardResult", "oh.CounterfactualResult", "oh.ReducedFormRecovery"):
        assert r[k].status == "successful" and r[k].converged is True and r[k].message == "", (k, r[k].message)
    rej = r["oh.TheoryResult(rejected)"]
    assert rej.status == "rejected" and not rej.converged and rej.message.startswith("not incentive compatible")
    assert rej.residual < 1e-10                                  # the equations themselves are solved
    pf = r["oh.PlannerResult(failed)"]
    assert pf.status == "max_steps_reached" and not pf.converged
    inv = r["oh.InverseResult(rejected)"]
    assert inv.status == "rejected" and inv.converged is False and "PAM" in inv.message
    fwd = r["oh.ForwardResult(failed)"]
    assert fwd.status in ("stalled", "max_steps_reached", "nonfinite", "singular") and fwd.converged is False
    cf = r["oh.CounterfactualResult(failed)"]
    assert cf.status == fwd.status and not cf.converged and cf.message.startswith("counterfactual: ")
    assert r["oh.ReducedFormRecovery(none)"].status == "no_solution"
    fit = r["oh.StandinFit(failed)"]
    assert fit.status == "not_converged" and not fit.converged and fit.message.startswith("least_squares")
    assert fit.to_dict()["distance"] == fit.distance


def test_oh_batched_status_is_a_list():
    """Under vmap an Oh result's ``status`` is a list of names, one per element, and ``converged`` an
    array that agrees with it."""
    import jax

    from spatialjax.models.oh import quantitative as qm

    p = qm.Params.table1()
    prof = qm.standin_profile(p)
    Ls = np.stack([np.asarray(prof.L), np.asarray(prof.L.at[10].multiply(0.7))])
    res = jax.vmap(lambda L: qm.solve_inverse(p, L, prof.u, w1=prof.w1, t_h=prof.t_h, tau_w=prof.tau_w))(Ls)
    assert res.status == ["successful", "rejected"]
    assert np.asarray(res.converged).tolist() == [True, False]
    assert np.array_equal(results.is_converged(res.status), np.asarray(res.converged))


def test_vv_one_corner_planner_is_a_success():
    """Issue 13: the planner with an optimum at only one corner used the free-text status
    'converged (only the ... corner ...)' so ``converged`` read False; now status is a name."""
    P = vv.Params.panel_a()
    pl = vv.solve_planner(P)
    one = vv.PlannerResult(pl.u, pl.v, pl.du, pl.omega, pl.config, {pl.config: pl.corners[pl.config]},
                           pl.local_choice_26, pl.residual, "successful", f"only the {pl.config} corner has an optimum")
    assert one.converged and "only the" in one.summary()


def test_one_equilibria_type_and_unknown_status_rejected():
    assert ttu.Equilibria is vv.Equilibria is results.Equilibria
    with pytest.raises(ValueError, match="unknown result status"):
        results.Equilibria([], status="converged (only one corner)")


def test_json_safe_and_status_names():
    from spatialjax.solver import RESULTS
    import jax.numpy as jnp
    import optimistix as optx

    assert results.json_safe({"a": np.array([1.0, np.nan, np.inf]), "b": np.float64(-np.inf), "c": (1, 2)}) == \
        {"a": [1.0, None, None], "b": None, "c": [1, 2]}
    batched = RESULTS.where(jnp.array(True), RESULTS.successful, RESULTS.stalled)
    assert solver_status_names(batched) == ["successful"]
    assert solver_status_names(RESULTS.singular) == ["singular"]
    assert solver_status_names(optx.RESULTS.successful) is None   # another enumeration: no guess


def test_ttu_figure1_labels_are_mathtext():
    """Issue 13: the TTU labels rendered literally (``ω^{(1+ε)/ε}``); they are mathtext now, and
    the drawn figure's label text is the rendered formula, not the TeX source with braces."""
    import matplotlib.pyplot as plt
    from spatialjax.plots import thisse_turner_ushchev as plots

    fig = plots.figure1(ttu.Params(gamma=0.11), [0.05, 0.11], n=50)
    ax = fig.axes[0]
    assert ax.get_ylabel() == r"$\omega^{(1+\epsilon)/\epsilon}$"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert r"$\rho_L$" in labels and any(r"$\gamma=0.11$" in t for t in labels)
    fig.canvas.draw()                                     # mathtext parses (raises otherwise)
    plt.close(fig)


def test_estimation_and_continuation_statuses_are_in_the_vocabulary():
    """Every status name the estimation layer and the Jiao-Tian continuation can set is documented
    in results.STATUSES (read from the source, so a new name that is not registered fails here)."""
    import pathlib
    import re

    import spatialjax.gmm as gmm
    import spatialjax.models.jiao_tian_counterfactuals as jcf

    found = set()
    for mod in (gmm, jcf):
        src = pathlib.Path(mod.__file__).read_text()
        found |= set(re.findall(r'status\s*(?:=|==|or)\s*"([a-z_A-Z]+)"', src))
        found |= set(re.findall(r'status=\("?([a-z_]+)"', src))
    assert {"converged", "weakly_identified", "at_bound", "singular_S", "fold"} <= found  # the regex sees them
    missing = sorted(found - set(results.STATUSES))
    assert not missing, f"status names used but not in results.STATUSES: {missing}"
