"""Data-file reading (spatialjax.io) and the jiao-tian CLI's input errors (no solves here)."""

from pathlib import Path

import pandas as pd
import pytest

from spatialjax.cli import main
from spatialjax.errors import ParameterError
from spatialjax.io import read_table, read_toml
from spatialjax.models import jiao_tian as jt

SCHEMA = {"city": "int", "T_root": "positive", "H": "positive"}


def test_embedded_examples_load_with_paper_values():
    p, meta = jt.load_example("eight-city")
    assert p.T.shape == (8,) and float(p.theta) == 5.0 and float(p.gamma) == 0.1
    # Figure 3 notes: T^(1/theta) = 1.5 for cities 1-4, 1.0 for cities 5-8; H = 1
    assert [round(float(t) ** (1 / 5), 12) for t in p.T] == [1.5] * 4 + [1.0] * 4
    assert meta["experiments"] == [8, 4]
    with pytest.raises(ParameterError, match="available") as ei:
        jt.load_example("nine-city")
    assert ei.value.field == "example"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_table_missing_column_and_bad_values(tmp_path, suffix):
    def write(df, name):
        path = tmp_path / (name + suffix)
        df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
        return path

    ok = write(pd.DataFrame({"city": [1, 2], "T_root": [1.5, 1.0], "H": [1.0, 2.0]}), "ok")
    assert list(read_table(ok, SCHEMA)["H"]) == [1.0, 2.0]
    missing = write(pd.DataFrame({"city": [1, 2], "T_root": [1.5, 1.0]}), "missing")
    with pytest.raises(ParameterError, match=r"missing column\(s\) \['H'\]"):
        read_table(missing, SCHEMA)
    negative = write(pd.DataFrame({"city": [1, 2], "T_root": [1.5, -1.0], "H": [1.0, 2.0]}), "neg")
    with pytest.raises(ParameterError, match="must be > 0") as ei:
        read_table(negative, SCHEMA)
    assert ei.value.field.endswith(":T_root")
    nan = write(pd.DataFrame({"city": [1, 2], "T_root": [1.5, float("nan")], "H": [1.0, 2.0]}), "nan")
    with pytest.raises(ParameterError, match="finite"):
        read_table(nan, SCHEMA)


def test_read_table_unsupported_and_absent(tmp_path):
    with pytest.raises(ParameterError, match="file not found"):
        read_table(tmp_path / "nope.csv", SCHEMA)
    f = tmp_path / "x.xlsx"
    f.write_text("x")
    with pytest.raises(ParameterError, match="unsupported file type"):
        read_table(f, SCHEMA)


def test_read_toml_rejects_unknown_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("theta = 5.0\nthetta = 4.0\n")
    with pytest.raises(ParameterError, match=r"unknown key\(s\) \['thetta'\]"):
        read_toml(f, allowed={"theta"})
    assert read_toml(f) == {"theta": 5.0, "thetta": 4.0}


@pytest.mark.parametrize("argv, field", [
    (["--grid-points", "1"], "--grid-points: must be >= 2"),
    (["--arclength-steps", "5"], "--arclength-steps: must be >= 10"),
    (["--starts", "-1"], "--starts: must be >= 0"),
    (["--seed", "-3"], "--seed: must be >= 0"),
    (["--degenerate-share", "1.5"], "--degenerate-share: must be < 1"),
    (["--degenerate-share", "nan"], "--degenerate-share: must be a finite number"),
    (["--city", "9"], "--city: must be <= 8"),
    (["--city", "big"], "--city: must be a city number in 1..8 or 'all'"),
    (["--example", "two-city", "--city", "3"], "--city: must be <= 2"),
])
def test_jt_cli_bad_option_exit_2_and_no_output(tmp_path, capsys, argv, field):
    """Every option is validated before any work or folder: one line on stderr, exit 2, no output dir."""
    assert main(["solve", "jiao-tian", *argv, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert field in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_jt_cli_output_path_that_cannot_be_created(tmp_path, capsys):
    """An output folder under a file or under /proc: one-line error naming --output, exit 2, no traceback."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target, why in [(afile, "is not a directory"), (afile / "sub", "is a file, not a directory"),
                        (Path("/proc/spatialjax-test-out"), "cannot create or write")]:
        assert main(["solve", "jiao-tian", "--example", "two-city", "-o", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("spatialjax: error: --output") and why in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert afile.read_text() == "x" and not Path("/proc/spatialjax-test-out").exists()
    with pytest.raises(SystemExit) as ei:
        main(["solve", "jiao-tian", "--example", "nine-city"])
    assert ei.value.code == 2


def test_jt_cli_help_names_exit_codes_and_defaults(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["solve", "jiao-tian", "--help"])
    assert ei.value.code == 0
    h = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0" in h and "1 a grid point without any" in h and "2 bad option" in h
    assert "out/jiao-tian" in h and "--quiet" in h and "--degenerate-share" in h
