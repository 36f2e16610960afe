"""The generic calibration runner (spatialjax.calibrate): the config schema (Spec, validate_config),
parameter tables, fingerprints, problem resolution, a run with a fixed parameter against its closed
form, and the toy equilibrium example (gradients through solve_root, recovery of the truth)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spatialjax import calibrate as cal
from spatialjax.calibrate import PARAMETER_SCHEMA, Spec, load_config, parameter_setup, validate_config
from spatialjax.errors import ParameterError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "calibration" / "example_iv.toml"
TOY = ROOT / "calibration" / "toy_equilibrium.toml"
DATA = ROOT / "data_moments" / "example_iv" / "iv_sample.csv"


# ---------------------------------------------------------------------------------------------
# Spec and validate_config
# ---------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(v=st.integers(-50, 50), lo=st.integers(-10, 10), width=st.integers(0, 20))
def test_spec_int_range_is_the_closed_interval(v, lo, width):
    spec = Spec("int", range=(lo, lo + width))
    inside = lo <= v <= lo + width
    if inside:
        assert spec.check(v, "f: s.k") == v
    else:
        with pytest.raises(ParameterError, match=r"f: s\.k: must be in \["):
            spec.check(v, "f: s.k")


@settings(max_examples=60, deadline=None)
@given(v=st.floats(-10, 10, allow_nan=False))
def test_spec_float_open_range(v):
    spec = Spec("float", range=(0, 1), open=True)
    if 0 < v < 1:
        assert spec.check(v, "k") == v
    else:
        with pytest.raises(ParameterError, match=r"k: must be in \(0, 1\)"):
            spec.check(v, "k")


def test_spec_types(tmp_path):
    assert Spec("float").check(3, "k") == 3.0 and isinstance(Spec("float").check(3, "k"), float)
    for spec, bad, msg in [(Spec("int"), True, "integer"), (Spec("int"), 1.0, "integer"), (Spec("bool"), 1, "true or false"),
                           (Spec("str"), 1, "string"), (Spec("float"), "1", "number"),
                           (Spec("float"), math.inf, "finite"), (Spec("float"), math.nan, "finite"),
                           (Spec("list[float]", length=2), [1.0], "2 elements"),
                           (Spec("list[str]", allowed=("a", "b")), ["a", "c"], r"k\[1\]: must be one of")]:
        with pytest.raises(ParameterError, match=msg):
            spec.check(bad, "k")
    assert Spec("list[float]", finite=False).check([-math.inf, 2], "k") == [-math.inf, 2.0]
    (tmp_path / "d.csv").write_text("a\n1\n")
    assert Spec("path").check("d.csv", "k", tmp_path) == "d.csv"  # relative to the config's folder
    with pytest.raises(ParameterError, match="not found"):
        Spec("path").check("d.csv", "k", tmp_path / "elsewhere")
    with pytest.raises(ValueError):
        Spec("complex")


def test_validate_config_defaults_and_messages():
    schema = {"a": {"x": Spec("int", default=3), "y": Spec("str", required=True)}, "b": {"z": Spec("bool")}}
    out = validate_config({"a": {"y": "hi"}}, schema, "c.toml")
    assert out == {"a": {"x": 3, "y": "hi"}, "b": {}}
    with pytest.raises(ParameterError, match=r"c\.toml: a\.w: unknown key; allowed keys: \['x', 'y'\]"):
        validate_config({"a": {"y": "hi", "w": 1}}, schema, "c.toml")
    with pytest.raises(ParameterError, match=r"c\.toml: a\.y: missing"):
        validate_config({"a": {"x": 1}}, schema, "c.toml")
    with pytest.raises(ParameterError, match=r"c\.toml: a\.y: missing"):
        validate_config({}, schema, "c.toml")
    with pytest.raises(ParameterError, match=r"c\.toml: q: unknown section"):
        validate_config({"a": {"y": "s"}, "q": {}}, schema, "c.toml")
    with pytest.raises(ParameterError, match=r"c\.toml: b: must be a table"):
        validate_config({"a": {"y": "s"}, "b": 3}, schema, "c.toml")


def _params(entries, names=("p", "q")):
    return validate_config({"parameters": entries}, {}, "c.toml", parameters={n: n for n in names})["parameters"]


def test_parameter_tables():
    ps = _params({"p": {"start": 1.0, "transform": "log"}, "q": {"estimate": False, "value": 2.0, "true": 2.0}})
    assert ps["p"]["bounds"] == [0.0, math.inf]  # log: positive by default
    s = parameter_setup({"parameters": ps})
    assert s.names == ["p", "q"] and s.estimated == ["p"] and s.theta0 == {"p": 1.0}
    assert s.fixed == {"q": 2.0} and s.bounds == {"p": (0.0, None)} and s.true == {"q": 2.0}
    assert s.full({"p": 5.0}) == {"p": 5.0, "q": 2.0}
    ps = _params({"p": {"start": 0.5, "transform": "logit", "bounds": [0.0, 1.0]}, "q": {"start": -1.0}})
    assert parameter_setup({"parameters": ps}).bounds == {"p": (0.0, 1.0)}
    bad = [({"p": {"start": 1.0}}, r"parameters\.q: missing"),
           ({"p": {"start": 1.0}, "q": {"start": 1.0}, "r": {"start": 1.0}}, r"parameters\.r: unknown parameter"),
           ({"p": {"estimate": False}, "q": {"start": 1.0}}, r"parameters\.p\.value: missing"),
           ({"p": {"estimate": True}, "q": {"start": 1.0}}, r"parameters\.p\.start: missing"),
           ({"p": {"start": 1.0, "value": 1.0}, "q": {"start": 1.0}}, r"parameters\.p\.value: only for fixed"),
           ({"p": {"estimate": False, "value": 1.0, "start": 1.0}, "q": {"start": 1.0}}, r"parameters\.p\.start"),
           ({"p": {"start": -1.0, "transform": "log"}, "q": {"start": 1.0}}, r"parameters\.p\.start: must lie"),
           ({"p": {"start": 0.5, "transform": "logit"}, "q": {"start": 1.0}}, r"parameters\.p\.bounds: .*finite"),
           ({"p": {"start": 0.5, "transform": "log", "bounds": [0.0, 1.0]}, "q": {"start": 1.0}},
            r"parameters\.p\.bounds: transform = \"log\""),
           ({"p": {"start": 0.0, "bounds": [0.0, 1.0]}, "q": {"start": 1.0}}, r"strictly inside"),
           ({"p": {"start": 0.5, "bounds": [0.0, 1.0], "start_box": [0.5, 2.0]}, "q": {"start": 1.0}},
            r"parameters\.p\.start_box"),
           ({"p": {"estimate": False, "value": 1.0}, "q": {"estimate": False, "value": 1.0}}, "no parameter is estimated"),
           ({"p": 1.0, "q": {"start": 1.0}}, r"parameters\.p: must be a table")]
    for entries, msg in bad:
        with pytest.raises(ParameterError, match=msg):
            _params(entries)
    assert set(PARAMETER_SCHEMA) == {"start", "estimate", "value", "bounds", "transform", "true", "start_box"}


def test_generic_schema_documented():
    """Every generic key and every parameter key appears in calibration/README.md."""
    text = (ROOT / "calibration" / "README.md").read_text()
    for section, specs in cal.GENERIC_SCHEMA.items():
        assert f"[{section}]" in text, section
        for key in specs:
            assert f"`{key}`" in text, f"{section}.{key}"
    for key in PARAMETER_SCHEMA:
        assert f"`{key}`" in text, key


def test_fingerprint_tracks_config_and_data_not_outputs(tmp_path):
    (tmp_path / "iv.csv").write_bytes(DATA.read_bytes())
    cfg = tomllib.loads(EXAMPLE.read_text())
    cfg["data"]["file"] = "iv.csv"
    (tmp_path / "c.toml").write_text(EXAMPLE.read_text().replace("../data_moments/example_iv/iv_sample.csv", "iv.csv"))
    _, vcfg, mod = load_config(tmp_path / "c.toml")
    schema = cal._problem_schema(mod, "linear_iv")
    fp = cal.config_fingerprint(vcfg, schema, tmp_path)
    assert any(k.startswith("file data.file") for k in fp)
    v2 = json.loads(json.dumps(vcfg))
    v2["outputs"]["plots"] = False
    assert cal.config_fingerprint(v2, schema, tmp_path) == fp
    v2["estimation"]["gtol"] = 1e-6
    diff = {k for k, v in cal.config_fingerprint(v2, schema, tmp_path).items() if fp[k] != v}
    assert diff == {"[estimation]"}
    df = pd.read_csv(tmp_path / "iv.csv")
    df.loc[0, "y"] += 1e-9
    df.to_csv(tmp_path / "iv.csv", index=False, float_format="%.17g")
    diff = {k for k, v in cal.config_fingerprint(vcfg, schema, tmp_path).items() if fp[k] != v}
    assert diff == {"file data.file = iv.csv"}


def test_resolve_problem():
    assert cal.resolve_problem("linear_iv").__name__ == "LinearIV"
    assert cal.resolve_problem("spatialjax.calibration_examples:ToyEquilibrium").__name__ == "ToyEquilibrium"
    with pytest.raises(ParameterError, match=r"unknown problem 'nope'; registered problems: \[.*'linear_iv'"):
        cal.resolve_problem("nope")
    with pytest.raises(ParameterError, match="not found"):
        cal.resolve_problem("no_such_package.module")
    with pytest.raises(ParameterError, match="has no problem"):
        cal.resolve_problem("spatialjax.calibration_examples:Nope")
    with pytest.raises(ParameterError, match="does not follow the problem protocol"):
        cal.resolve_problem("spatialjax.tables")


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------

def test_fixed_parameter_robust_run_matches_closed_form(tmp_path, capsys):
    """x1 held at 0.5, robust S (no clusters): the two-step estimate of (const, x2) is the closed
    form for y - 0.5 x1 on (1, x2) with the same five instruments; x1 is reported as fixed."""
    text = EXAMPLE.read_text().replace("../data_moments/example_iv/iv_sample.csv", str(DATA))
    text = text.replace('clusters = "cluster"', 'cov = "robust"')
    text = text.replace("[parameters.x1]\nstart = 0.0", "[parameters.x1]\nestimate = false\nvalue = 0.5")
    text = text.replace('formats = ["csv"]', 'formats = ["csv", "parquet"]').replace("plots = true", "plots = false")
    text = text.replace("max_iter = 200", "max_iter = 200\nmultistart = 2")  # start 2 drawn from start_box
    text = text.replace("[parameters.const]\nstart = 0.0", "[parameters.const]\nstart = 0.0\nstart_box = [-2.0, 2.0]")
    text = text.replace("[parameters.x2]\nstart = 0.0", "[parameters.x2]\nstart = 0.0\nstart_box = [-3.0, 0.0]")
    (tmp_path / "fixed.toml").write_text(text)
    out = tmp_path / "out"
    result, written = cal.run_calibration(tmp_path / "fixed.toml", out, resume=True, progress=False)
    captured = capsys.readouterr()
    assert "no checkpoint" in captured.err  # --resume without a checkpoint starts from the start values
    assert "GMM estimates" in captured.out

    df = pd.read_csv(DATA)
    n = len(df)
    X = np.column_stack([np.ones(n), df.x2])
    Z = np.column_stack([np.ones(n), df.x1, df.z1, df.z2, df.z3])
    y = df.y.to_numpy() - 0.5 * df.x1.to_numpy()

    def bhat(W):
        return np.linalg.solve(X.T @ Z @ W @ Z.T @ X, X.T @ Z @ W @ Z.T @ y)

    def S(b):
        g = Z * (y - X @ b)[:, None]
        return g.T @ g / n

    b = bhat(np.linalg.inv(S(bhat(np.eye(5)))))
    est = json.loads((out / "estimates.json").read_text())
    assert est["parameters"]["const"]["estimate"] == pytest.approx(b[0], abs=1e-8)
    assert est["parameters"]["x2"]["estimate"] == pytest.approx(b[1], abs=1e-8)
    assert est["parameters"]["x1"] == {"estimate": 0.5, "se": None, "t": None, "ci_low": None, "ci_high": None,
                                       "true": 0.5, "fixed": True}
    assert est["J_df"] == 3 and est["cov"] == "robust" and est["clusters"] is None
    assert est["small_sample"] is None  # the example IV problem keeps asymptotic inference
    assert len(est["convergence"]["multistart"]) == 2  # both starts ran (first stage)
    assert result.convergence["multistart_starts"][0] != result.convergence["multistart_starts"][1]
    assert set(written) >= {"estimates.csv", "estimates.parquet", "moments.parquet", "sensitivity.parquet",
                            "summary.txt", "estimates.json"}
    assert "estimates.png" not in written and not (out / "estimates.png").exists()
    pq = pd.read_parquet(out / "estimates.parquet")
    assert list(pq.parameter) == ["const", "x1", "x2"] and list(pq.fixed) == [False, True, False]
    assert "fixed: x1 = 0.5" in (out / "summary.txt").read_text()


def test_minimum_distance_settings_are_checked(tmp_path):
    text = TOY.read_text()
    for old, new, msg in [('weighting = "two-step"', 'weighting = "cue"', r"estimation\.weighting: for a minimum"),
                          ('weighting = "two-step"', 'weighting = "fixed"', r"estimation\.weighting: \"fixed\""),
                          ("gtol = 1e-10", 'gtol = 1e-10\nclusters = "x"', r"estimation\.clusters: not used"),
                          ("true = 0.3\n", "\n", r"parameters\.a0\.true: missing"),
                          ("regions = 8", "regions = 2", r"model\.regions: 4 moments for 5 parameters")]:
        (tmp_path / "t.toml").write_text(text.replace(old, new, 1))
        with pytest.raises(ParameterError, match=msg):
            cal.run_calibration(tmp_path / "t.toml", tmp_path / "out", progress=False, echo=False)
        assert not (tmp_path / "out").exists()


def test_toy_equilibrium_recovers_truth_with_exact_jacobian(tmp_path):
    """Minimum distance through the equilibrium: converges, every estimate within 2.5 SE of the
    truth, J does not reject, and the moment Jacobian G the estimator used (reverse mode through
    solve_root's implicit adjoint) equals central finite differences of the solved allocation."""
    import jax
    import jax.numpy as jnp

    result, written = cal.run_calibration(TOY, tmp_path / "toy", progress=False, echo=False)
    assert result.converged and result.status == "converged", result.message
    est = json.loads((tmp_path / "toy" / "estimates.json").read_text())
    for n in ("a0", "a1", "alpha", "beta", "c"):
        p = est["parameters"][n]
        assert abs(p["estimate"] - p["true"]) < 2.5 * p["se"], (n, p)
    assert est["parameters"]["kappa"]["fixed"] is True
    assert est["J_df"] == 11 and 0.001 < est["J_pvalue"]  # correctly specified: J does not reject at 0.1%
    assert est["weighting"] == "efficient" and est["n_obs"] == 200
    assert (tmp_path / "toy" / "estimates.png").read_bytes().startswith(b"\x89PNG")

    _, cfg, mod = load_config(TOY)
    prob = mod.build_problem(cfg, TOY.parent)
    names = list(result.param_names)

    @jax.jit
    def m(v):
        return prob.moments(dict(zip(names, v)))

    th = jnp.asarray(result.theta)
    vals, ok = m(th)
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(vals), result.moments["model"], rtol=1e-10)
    # (T3): the solved populations add up to Lbar
    assert float(jnp.sum(jnp.exp(vals[:8]))) == pytest.approx(cfg["model"]["Lbar"], rel=1e-12)
    h = 1e-6
    G_fd = np.stack([(np.asarray(m(th.at[i].add(h))[0]) - np.asarray(m(th.at[i].add(-h))[0])) / (2 * h)
                     for i in range(len(names))], axis=1)
    np.testing.assert_allclose(result.G, G_fd, rtol=1e-6, atol=1e-8)
    assert np.linalg.matrix_rank(result.G) == len(names)


@pytest.mark.parametrize("bad", [0.0, -1e-8, "small"])
def test_gn_tol_must_be_a_positive_float(bad):
    """estimation.gn_tol (the Gauss-Newton stopping tolerance) is validated with the other
    estimation keys: the error names the file, the field and what is allowed."""
    schema = {"estimation": cal.GENERIC_SCHEMA["estimation"]}
    assert validate_config({"estimation": {"gn_tol": 1e-8}}, schema, "c.toml")["estimation"]["gn_tol"] == 1e-8
    with pytest.raises(ParameterError, match=r"c\.toml: estimation\.gn_tol: .*"):
        validate_config({"estimation": {"gn_tol": bad}}, schema, "c.toml")


@pytest.mark.parametrize("problem_K, flag, expected", [(3, None, 3), (3, False, None), (3, True, 3),
                                                       (None, True, 0), (None, None, None), (None, False, None)])
def test_small_sample_key_maps_to_the_estimators_df_correction(problem_K, flag, expected):
    """[estimation] small_sample: absent keeps the problem's choice (its df_correction K), false
    removes it, true keeps the problem's K or sets K = 0 where the problem has none."""
    opts = {} if problem_K is None else {"df_correction": problem_K}
    problem = cal.Problem(kind="micro", moments=lambda th, d: d, theta0={"a": 0.0}, data=np.zeros((10, 1)),
                          estimator={"weighting": "two-step", "options": opts})
    setup = parameter_setup({"parameters": {"a": {"estimate": True, "start": 0.0, "transform": "none"}}})
    est = {} if flag is None else {"small_sample": flag}
    call = cal._estimator_call(problem, {"estimation": est, "calibration": {"seed": 0}}, setup, "c.toml")
    assert call["options"].get("df_correction") == expected
    schema = {"estimation": cal.GENERIC_SCHEMA["estimation"]}
    with pytest.raises(ParameterError, match=r"c\.toml: estimation\.small_sample"):
        validate_config({"estimation": {"small_sample": "yes"}}, schema, "c.toml")
