"""``spatialjax calibrate``: the linear IV worked example end to end (against the closed-form
two-step GMM), kill-and-resume through the CLI, and bad configs (exit 2, key named, nothing written)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialjax.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "calibration" / "example_iv.toml"
DATA = ROOT / "data_moments" / "example_iv" / "iv_sample.csv"
NAMES = ["const", "x1", "x2"]
SCRIPT = Path(sys.executable).parent / "spatialjax"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def dump_toml(cfg: dict) -> str:
    """Minimal TOML writer for the configs of these tests (tables of scalars and lists)."""

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, float):
            return "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v)

    lines = []

    def table(name, d):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        if scalars or not subs:
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {val(v)}" for k, v in scalars.items())
            lines.append("")
        for k, v in subs.items():
            table(f"{name}.{k}", v)

    for name, d in cfg.items():
        table(name, d)
    return "\n".join(lines)


def example_cfg() -> dict:
    """The example config as a dict, with the data file as an absolute path."""
    cfg = tomllib.loads(EXAMPLE.read_text())
    cfg["data"]["file"] = str(DATA)
    return cfg


def iv_arrays():
    df = pd.read_csv(DATA)
    n = len(df)
    X = np.column_stack([np.ones(n), df.x1, df.x2])
    Z = np.column_stack([np.ones(n), df.x1, df.z1, df.z2, df.z3])
    return df, X, Z, df.y.to_numpy(), df.cluster.to_numpy()


def closed_form_two_step(X, Z, y, clusters=None):
    """Two-step efficient GMM for linear IV in closed form (Hansen 1982): first step W = I,
    second step W = S(b1)^{-1} with the uncentred S (clustered when ``clusters`` is given);
    returns b2, sandwich SEs with S at b2, J = n gbar'W gbar, Lambda = -(G'WG)^{-1}G'W."""
    n = len(y)

    def bhat(W):
        A = X.T @ Z @ W @ Z.T @ X
        return np.linalg.solve(A, X.T @ Z @ W @ Z.T @ y)

    def S_of(b):
        g = Z * (y - X @ b)[:, None]
        if clusters is not None:
            g = np.stack([g[clusters == c].sum(axis=0) for c in np.unique(clusters)])
        return g.T @ g / n

    b1 = bhat(np.eye(Z.shape[1]))
    W = np.linalg.inv(S_of(b1))
    b2 = bhat(W)
    gbar = (Z * (y - X @ b2)[:, None]).mean(axis=0)
    G = -Z.T @ X / n
    A = np.linalg.inv(G.T @ W @ G)
    V = A @ G.T @ W @ S_of(b2) @ W @ G @ A / n
    return b2, np.sqrt(np.diag(V)), n * gbar @ W @ gbar, -A @ G.T @ W


def run_main(argv):
    """``spatialjax.cli.main(argv)`` in-process; returns (rc, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def check_complete(folder: Path) -> int:
    """Every output file that exists is complete: JSON loads, CSV parses, PNG has its end chunk.
    Temporary files of the atomic writers (``.name.tmp-*``) are skipped. Returns the count checked."""
    n = 0
    for p in folder.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            json.loads(data)
        elif p.suffix == ".csv":
            df = pd.read_csv(io.BytesIO(data))
            assert len(df.columns) >= 1 and len(df) >= 1, p
        elif p.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[-12:-4] == b"\x00\x00\x00\x00IEND", p
        elif p.suffix == ".txt":
            assert data.endswith(b"\n"), p
        n += 1
    return n


@pytest.fixture(scope="module")
def iv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("iv") / "out" / "example_iv"
    rc, stdout, stderr = run_main(["calibrate", str(EXAMPLE), "--output", str(out), "--quiet"])
    return rc, out, stdout, stderr


# ---------------------------------------------------------------------------------------------
# the worked example
# ---------------------------------------------------------------------------------------------

def test_example_iv_matches_closed_form_two_step_gmm(iv_run):
    rc, out, stdout, stderr = iv_run
    assert rc == 0, stderr
    est = json.loads((out / "estimates.json").read_text())
    for key in ("parameters", "J", "J_df", "J_pvalue", "converged", "status", "weighting", "n_obs", "config",
                "spatialjax_version"):
        assert key in est, key
    assert est["converged"] is True and est["status"] == "converged"
    assert est["weighting"] == "two-step" and est["cov"] == "cluster" and est["n_obs"] == 600
    assert est["config"] == tomllib.loads(EXAMPLE.read_text())  # the config as read

    df, X, Z, y, cl = iv_arrays()
    b, se, J, Lam = closed_form_two_step(X, Z, y, clusters=cl)
    got = np.array([est["parameters"][n]["estimate"] for n in NAMES])
    got_se = np.array([est["parameters"][n]["se"] for n in NAMES])
    np.testing.assert_allclose(got, b, rtol=0, atol=1e-8)
    np.testing.assert_allclose(got_se, se, rtol=1e-6)
    assert est["J"] == pytest.approx(J, rel=1e-6)
    assert est["J_df"] == 2
    from scipy.stats import chi2
    assert est["J_pvalue"] == pytest.approx(chi2.sf(J, 2), rel=1e-6)
    # the robust (unclustered) two-step estimate differs: the clusters setting reached the estimator
    b_rob = closed_form_two_step(X, Z, y)[0]
    assert np.max(np.abs(b_rob - got)) > 1e-3
    # the truth is in the config, reported beside the estimates
    assert [est["parameters"][n]["true"] for n in NAMES] == [1.0, 0.5, -1.0]

    # CSVs parse and agree with the JSON; sensitivity is the AGS Lambda
    tab = pd.read_csv(out / "estimates.csv")
    assert list(tab.parameter) == NAMES
    np.testing.assert_allclose(tab.estimate, got, rtol=0, atol=1e-14)
    np.testing.assert_allclose(tab.ci_high - tab.ci_low, 2 * 1.959963984540054 * got_se, rtol=1e-9)
    mom = pd.read_csv(out / "moments.csv")
    assert list(mom.moment) == ["E[const*e]", "E[x1*e]", "E[z1*e]", "E[z2*e]", "E[z3*e]"]
    gbar = (Z * (y - X @ b)[:, None]).mean(axis=0)
    np.testing.assert_allclose(mom.model, gbar, atol=1e-8)
    sens = pd.read_csv(out / "sensitivity.csv")
    assert list(sens.parameter) == NAMES
    np.testing.assert_allclose(sens[list(mom.moment)].to_numpy(), Lam, rtol=1e-6, atol=1e-9)

    # Honore-Jorgensen-de Paula "remove": V_{-j,ii} / V_ii - 1 with the efficient
    # V = (G' Omega^-1 G)^-1, Omega = S(b2) / n (clustered), recomputed without moment j
    hj = pd.read_csv(out / "hjdp.csv")
    assert len(hj) == 15 and set(hj.parameter) == set(NAMES)
    g = Z * (y - X @ b)[:, None]
    gc = np.stack([g[cl == c].sum(axis=0) for c in np.unique(cl)])
    Om, G = gc.T @ gc / len(y) ** 2, -Z.T @ X / len(y)
    V0 = np.diag(np.linalg.inv(G.T @ np.linalg.solve(Om, G)))
    for j, mname in enumerate(mom.moment):
        keep = [i for i in range(5) if i != j]
        Vj = np.diag(np.linalg.inv(G[keep].T @ np.linalg.solve(Om[np.ix_(keep, keep)], G[keep])))
        got_rm = hj[hj.moment == mname].set_index("parameter").loc[NAMES, "remove"].to_numpy()
        np.testing.assert_allclose(got_rm, Vj / V0 - 1, rtol=1e-6, atol=1e-10)

    # the plot is a valid PNG that matplotlib reads back
    png = (out / "estimates.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.pyplot as plt
    img = plt.imread(out / "estimates.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100

    # the summary is printed (before the list of files written) and saved
    assert "GMM estimates" in stdout and stdout.index("GMM estimates") < stdout.index("wrote ")
    summary = (out / "summary.txt").read_text()
    assert all(n in summary for n in NAMES) and "converged" in summary
    assert check_complete(out) >= 7


# ---------------------------------------------------------------------------------------------
# kill and resume
# ---------------------------------------------------------------------------------------------

SLOW_PROBLEM = '''
"""Test fixture: the linear IV problem with a pause after every optimiser iteration (so a run can
be killed mid-way) and a log of the iterations each process ran."""
import json, os, time
from spatialjax.calibration_examples import LinearIV

class SlowIV(LinearIV):
    @staticmethod
    def build_problem(cfg, base_dir):
        p = LinearIV.build_problem(cfg, base_dir)
        log, pause = os.environ["SLOWIV_LOG"], float(os.environ.get("SLOWIV_PAUSE", "0.15"))
        def callback(info):
            with open(log, "a") as f:
                f.write(json.dumps([info["stage"], info["iteration"]]) + "\\n")
            time.sleep(pause)
        p.estimator = {"options": {"callback": callback}}
        return p
'''


def _watch(proc, folder: Path, until=None, timeout=240.0) -> int:
    """Poll ``folder`` while ``proc`` runs, checking every file in it is complete; stop when
    ``until()`` is true (then SIGKILL the process) or the process ends. Returns polls made."""
    polls, t0 = 0, time.monotonic()
    while proc.poll() is None:
        if folder.exists():
            check_complete(folder)
        polls += 1
        if until is not None and until():
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            break
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("calibrate subprocess did not finish")
        time.sleep(0.01)
    if folder.exists():
        check_complete(folder)
    return polls


def _log(path: Path):
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []


def test_kill_and_resume_matches_uninterrupted_run(iv_run, tmp_path):
    """Through the installed ``spatialjax`` console script (subprocesses): SIGKILL after 6
    iterations, ``--resume``, same estimates as the uninterrupted in-process run; every file
    in the output folder is complete whenever it is looked at."""
    _, out_ref, _, _ = iv_run
    ref = json.loads((out_ref / "estimates.json").read_text())
    (tmp_path / "slowiv.py").write_text(SLOW_PROBLEM)
    cfg = example_cfg()
    cfg["calibration"]["problem"] = "slowiv:SlowIV"
    config = tmp_path / "slow.toml"
    config.write_text(dump_toml(cfg))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [str(SCRIPT), "calibrate", str(config), "--output", str(out), "--quiet"]

    # run 1: killed (SIGKILL) after 6 optimiser iterations, before any output is written
    env1 = dict(env, SLOWIV_LOG=str(tmp_path / "log1"))
    p1 = subprocess.Popen(cmd, env=env1, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _watch(p1, out, until=lambda: len(_log(tmp_path / "log1")) >= 6)
    assert p1.returncode == -signal.SIGKILL
    assert (out / "checkpoint" / "gmm_state.json").is_file()
    assert not (out / "estimates.json").exists()
    run1 = _log(tmp_path / "log1")

    # run 2: --resume continues from the checkpoint and ends at the uninterrupted estimates
    env2 = dict(env, SLOWIV_LOG=str(tmp_path / "log2"), SLOWIV_PAUSE="0.02")
    p2 = subprocess.Popen(cmd + ["--resume"], env=env2, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    polls = _watch(p2, out)
    stdout, stderr = p2.communicate()
    assert p2.returncode == 0, stderr
    assert polls > 10
    run2 = _log(tmp_path / "log2")
    assert "no checkpoint" not in stderr
    # it did not start over: its first iteration follows the last checkpointed one of run 1
    assert run2[0] != ("first", 1) and run2[0] in (run1[-1], (run1[-1][0], run1[-1][1] + 1)) or \
        run2[0][0] == "second", (run1, run2[:2])
    est = json.loads((out / "estimates.json").read_text())
    for n in NAMES:
        assert est["parameters"][n]["estimate"] == pytest.approx(ref["parameters"][n]["estimate"], abs=1e-12)
        assert est["parameters"][n]["se"] == pytest.approx(ref["parameters"][n]["se"], rel=1e-10)
    assert est["convergence"]["iterations"] == ref["convergence"]["iterations"]
    assert check_complete(out) >= 8

    # resuming with a changed config is refused (exit 2, names what changed) and writes nothing
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    cfg["estimation"]["gtol"] = 1e-9
    config.write_text(dump_toml(cfg))
    sys.path.insert(0, str(tmp_path))
    try:
        rc, _, err = run_main(["calibrate", str(config), "--output", str(out), "--quiet", "--resume"])
    finally:
        sys.path.remove(str(tmp_path))
    assert rc == 2
    assert "--resume" in err and "[estimation]" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------------------------
# bad configs: exit 2, one line naming the key, no output folder
# ---------------------------------------------------------------------------------------------

def _set(path, value):
    def f(cfg):
        d = cfg
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = value
    return f


def _del(path):
    def f(cfg):
        d = cfg
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return f


BAD = {
    "unknown key [calibration]": (_set(["calibration", "problme"], "x"), ["calibration.problme", "allowed keys"]),
    "unknown key [estimation]": (_set(["estimation", "max_iters"], 5), ["estimation.max_iters", "max_iter"]),
    "unknown key [outputs]": (_set(["outputs", "png"], True), ["outputs.png", "plots"]),
    "unknown key [data]": (_set(["data", "filename"], "a.csv"), ["data.filename", "file"]),
    "unknown key [parameters.x1]": (_set(["parameters", "x1", "strat"], 0.0), ["parameters.x1.strat", "start"]),
    "unknown section": (_set(["model", "N"], 3), ["model", "allowed sections"]),
    "unknown parameter": (_set(["parameters", "x3"], {"start": 0.0}), ["parameters.x3", "unknown parameter"]),
    "missing parameter": (_del(["parameters", "x2"]), ["parameters.x2", "missing"]),
    "missing required key": (_del(["data", "outcome"]), ["data.outcome", "missing"]),
    "unknown problem": (_set(["calibration", "problem"], "nope"), ["calibration.problem", "linear_iv"]),
    "wrong type int": (_set(["estimation", "max_iter"], "10"), ["estimation.max_iter", "integer"]),
    "wrong type float": (_set(["parameters", "x1", "start"], "zero"), ["parameters.x1.start", "number"]),
    "wrong type bool": (_set(["outputs", "plots"], 1), ["outputs.plots", "true or false"]),
    "wrong type list": (_set(["data", "instruments"], "z1"), ["data.instruments", "list"]),
    "out of range max_iter": (_set(["estimation", "max_iter"], -1), ["estimation.max_iter", "[1, inf]"]),
    "out of range gtol": (_set(["estimation", "gtol"], 0.0), ["estimation.gtol", "(0, inf)"]),
    "weighting foo": (_set(["estimation", "weighting"], "foo"), ["estimation.weighting", "two-step"]),
    "format xlsx": (_set(["outputs", "formats"], ["csv", "xlsx"]), ["outputs.formats[1]", "parquet"]),
    "transform exp": (_set(["parameters", "x2", "transform"], "exp"), ["parameters.x2.transform", "logit"]),
    "start outside bounds": (_set(["parameters", "x2", "bounds"], [0.0, math.inf]), ["parameters.x2.start",
                                                                                     "bounds"]),
    "bounds reversed": (_set(["parameters", "x2", "bounds"], [1.0, -1.0]), ["parameters.x2.bounds", "lower"]),
    "missing data file": (_set(["data", "file"], "nope.csv"), ["data.file", "nope.csv", "not found"]),
    "data file missing a column": (_set(["data", "instruments"], ["x1", "z1", "z2", "z9"]),
                                   ["iv_sample.csv", "z9", "missing column"]),
    "cluster column missing": (_set(["estimation", "clusters"], "region"), ["estimation.clusters", "region",
                                                                            "iv_sample.csv"]),
    "cov inconsistent with clusters": (_set(["estimation", "cov"], "robust"), ["estimation.cov", "cluster"]),
    "under-identified": (_set(["data", "instruments"], ["x1"]), ["data.instruments", "under-identified"]),
    "multistart without start_box": (_set(["estimation", "multistart"], 3), ["start_box", "multistart"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_exit_2_names_key_and_writes_nothing(case, tmp_path):
    mutate, expect = BAD[case]
    cfg = example_cfg()
    mutate(cfg)
    config = tmp_path / "bad.toml"
    config.write_text(dump_toml(cfg))
    out = tmp_path / "out" / "run"
    rc, stdout, stderr = run_main(["calibrate", str(config), "--output", str(out), "--quiet"])
    assert rc == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spatialjax: error: "), stderr
    for s in expect:
        assert s in lines[0], (s, lines[0])
    assert not (tmp_path / "out").exists()


def test_bad_toml_and_missing_config(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("[calibration]\nproblem = linear_iv\n")  # unquoted string: not TOML
    rc, _, err = run_main(["calibrate", str(config), "-o", str(tmp_path / "o")])
    assert rc == 2 and "not valid TOML" in err and str(config) in err
    rc, _, err = run_main(["calibrate", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "not found" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["under_file", "proc"])
def test_output_dir_that_cannot_be_created(where, tmp_path):
    if where == "under_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    else:
        out = Path("/proc") / f"spatialjax-test-{os.getpid()}" / "out"
    rc, _, err = run_main(["calibrate", str(EXAMPLE), "--output", str(out), "--quiet"])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--output" in lines[0] and "cannot create" in lines[0], err
    assert not out.exists() and not out.parent.exists() or where == "under_file"


def test_help_and_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for s in ("CONFIG", "--output", "--resume", "--quiet", "exit codes", "estimates.json", "checkpoint"):
        assert s in text, s
    with pytest.raises(SystemExit) as e:  # no config
        main(["calibrate"])
    assert e.value.code == 2
    assert "CONFIG" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the command is listed at the top level
        main(["--help"])
    assert "calibrate" in capsys.readouterr().out


def test_not_converged_and_weakly_identified_exit_1_with_outputs(tmp_path):
    """Exit 1 (said on stderr) when the estimation stops before converging or when the design is
    rank deficient (x3 = 2 x1: the weak direction is named); the outputs are written with the status."""
    cfg = example_cfg()
    cfg["estimation"]["max_iter"] = 2
    (tmp_path / "short.toml").write_text(dump_toml(cfg))
    rc, stdout, err = run_main(["calibrate", str(tmp_path / "short.toml"), "-o", str(tmp_path / "a"), "-q"])
    assert rc == 1
    assert "did not converge" in err and "not_converged" in err
    est = json.loads((tmp_path / "a" / "estimates.json").read_text())
    assert est["converged"] is False and est["status"] == "not_converged"
    assert est["convergence"]["stop_reason"] == "max_iter"
    assert "not_converged" in (tmp_path / "a" / "summary.txt").read_text()

    df = pd.read_csv(DATA)
    df["x3"] = 2.0 * df["x1"]
    df.to_csv(tmp_path / "collinear.csv", index=False, float_format="%.17g")
    cfg = example_cfg()
    cfg["data"]["file"] = "collinear.csv"
    cfg["data"]["regressors"] = ["x1", "x3", "x2"]
    cfg["parameters"]["x3"] = {"start": 0.0}
    (tmp_path / "weak.toml").write_text(dump_toml(cfg))
    rc, stdout, err = run_main(["calibrate", str(tmp_path / "weak.toml"), "-o", str(tmp_path / "b"), "-q"])
    assert rc == 1
    assert "weakly identified" in err and "x1" in err and "x3" in err, err
    est = json.loads((tmp_path / "b" / "estimates.json").read_text())
    assert est["status"] == "weakly_identified" and est["weak_identification"]["flag"] is True
    assert est["parameters"]["x1"]["se"] is None  # no standard errors that mean nothing
    assert check_complete(tmp_path / "b") >= 7
