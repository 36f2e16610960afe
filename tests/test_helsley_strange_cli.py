"""`spatialjax solve helsley-strange` and the Figure 1-5 analogs."""

import csv
import json

import numpy as np
import pytest

from spatialjax.cli import main
from spatialjax.errors import ParameterError
from spatialjax.models import helsley_strange as hs


def test_cli_default_economy_writes_tables_and_figures(tmp_path, capsys):
    rc = main(["solve", "helsley-strange", "-o", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    for key in ("Type optimal clusters", "Constrained Pareto-efficient", "Symmetric Nash", "Specialized-city",
                "Symmetric partitions"):
        assert key in out
    s = json.loads((tmp_path / "helsley_strange_summary.json").read_text())
    # default economy, hand computations: type optima (A.18)/(A.19), CPE scale 50/11,
    # Nash interval [6, 8], specialized n^S = (1.5, 1.3)
    np.testing.assert_allclose(s["type_optima"][0]["n"], [8 / 3, 7 / 3], rtol=1e-9)
    np.testing.assert_allclose(s["type_optima"][1]["n"], [1.8, 2.2], rtol=1e-9)
    assert s["cpe"]["S"] == pytest.approx(50 / 11, rel=1e-9)
    np.testing.assert_allclose([s["nash"]["S_lo"], s["nash"]["S_hi"]], [6.0, 8.0], rtol=1e-8)
    # every block of the JSON is a result's to_dict(): status names, converged derived from them
    for block in (*s["type_optima"], s["cpe"], s["nash"], s["specialized"], s["partitions"]):
        assert block["status"] == "successful" and block["converged"] is True
    np.testing.assert_allclose(s["specialized"]["n_S"], [1.5, 1.3], rtol=1e-9)
    assert s["problems"] == []
    with open(tmp_path / "helsley_strange_partitions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["partition"] for r in rows] == ["{1,2}", "{1} | {2}"]
    assert float(rows[0]["W_nash"]) == pytest.approx(450.0, rel=1e-8)
    with open(tmp_path / "helsley_strange_contract_curve.csv") as fh:
        rows_cc = list(csv.reader(fh))
    assert rows_cc[0] == ["lambda", "n_1", "n_2", "status"] and all(r[3] == "successful" for r in rows_cc[1:])
    cc = np.array([[float(x) for x in r[:3]] for r in rows_cc[1:]])
    np.testing.assert_allclose(cc[0, 1:], [1.8, 2.2], rtol=1e-9)     # lambda = 0: type-2 optimum
    np.testing.assert_allclose(cc[-1, 1:], [8 / 3, 7 / 3], rtol=1e-9)  # lambda = 1: type-1 optimum
    for k in range(1, 6):
        png = (tmp_path / f"helsley_strange_figure{k}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_overrides_and_errors(tmp_path, capsys):
    rc = main(["solve", "helsley-strange", "-o", str(tmp_path), "--quiet", "--no-figures", "--t", "0.3",
               "--N", "100,120", "--V0", "0.1"])
    assert rc == 0
    s = json.loads((tmp_path / "helsley_strange_summary.json").read_text())
    p = hs.Params(t=0.3, N=[100.0, 120.0], V0=0.1)
    np.testing.assert_allclose(s["type_optima"][0]["n"], hs.closed_form_I2(p)["type1"], rtol=1e-9)
    assert s["params"]["V0"] == [0.1, 0.1]
    assert not list(tmp_path.glob("*.png"))
    assert main(["solve", "helsley-strange", "-o", str(tmp_path), "--theta", "1,2;3"]) == 2
    assert "--theta" in capsys.readouterr().err
    assert main(["solve", "helsley-strange", "-o", str(tmp_path), "--gamma", "nan"]) == 2
    assert "--gamma" in capsys.readouterr().err
    assert main(["solve", "helsley-strange", "-o", str(tmp_path), "--N", "1,2,3"]) == 2
    # beta < gamma: no interior type optimum (second-order conditions after (A.19)) -> exit 1, reported
    rc = main(["solve", "helsley-strange", "-o", str(tmp_path), "--quiet", "--no-figures", "--beta", "0.5", "--gamma", "0.8"])
    out = capsys.readouterr().out
    assert rc == 1 and "solve problems" in out


def test_figures_need_I2(tmp_path):
    from spatialjax.plots import helsley_strange as plots
    p = hs.Params(theta=np.eye(3) + 1.0)
    with pytest.raises(ParameterError, match="I = 2"):
        plots.figure1(p, tmp_path / "x.png")


def test_cli_rejects_bad_input_before_any_work_or_file(tmp_path, capsys):
    out = tmp_path / "new"
    # theta[1, 0] = 0.4 breaks alpha theta > t (Appendix): rejected up front, the assumption named
    assert main(["solve", "helsley-strange", "-o", str(out), "--theta", "2,1.5;0.4,1.8"]) == 2
    err = capsys.readouterr().err
    assert "--theta" in err and "Appendix assumption" in err and len(err.strip().splitlines()) == 1
    for bad in (["--alpha", "-1"], ["--t", "inf"], ["--V0", "0,nan"], ["--N", "100,-5"], ["--theta", "a,b;c,d"]):
        assert main(["solve", "helsley-strange", "-o", str(out), *bad]) == 2
        assert bad[0] in capsys.readouterr().err
    assert not out.exists()             # a rejected run leaves no (empty) folder
    # an output path under a file, and a target that is a directory: one line, exit 2, nothing written
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["solve", "helsley-strange", "-o", str(f / "sub"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "is a file" in err and len(err.strip().splitlines()) == 1
    d = tmp_path / "d"
    (d / "helsley_strange_partitions.csv").mkdir(parents=True)
    assert main(["solve", "helsley-strange", "-o", str(d), "--no-figures"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in d.iterdir()) == ["helsley_strange_partitions.csv"]


def test_cli_failed_solves_exit_1_and_print_no_nan_rows(tmp_path, capsys):
    """beta < gamma: no interior type optimum. The table shows the status instead of numbers, the
    contract-curve CSV has empty cells and a status column, stderr names the failures, exit 1."""
    rc = main(["solve", "helsley-strange", "-o", str(tmp_path), "--quiet", "--no-figures",
               "--beta", "0.5", "--gamma", "0.8"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "type-1 optimum" in cap.err and "solve failed" in cap.err
    table = cap.out.split("Constrained Pareto")[0]
    assert "type 1" in table and "nan" not in table.lower()
    with open(tmp_path / "helsley_strange_contract_curve.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 51
    for r in rows:
        if r["status"] == "successful":
            assert np.isfinite(float(r["n_1"])) and np.isfinite(float(r["n_2"]))
        else:
            assert r["n_1"] == "" and r["n_2"] == ""
    assert any(r["status"] != "successful" for r in rows)
    s = json.loads((tmp_path / "helsley_strange_summary.json").read_text())
    assert s["type_optima"][0]["converged"] is False and s["problems"]


def test_default_output_folder_is_per_command():
    """The skeleton's default ``out/helsley-strange`` keeps this command off the main job's ``out``."""
    from spatialjax.cli import build_parser

    assert build_parser().parse_args(["solve", "helsley-strange"]).output == "out/helsley-strange"
