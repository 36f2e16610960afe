"""``spatialjax solve ttu``: validation before any work or file, one-line errors with exit 2,
atomic outputs, the table before the figures, exit 1 when a solve (or a point of the sweep)
fails. Fast: the figures are replaced by stand-ins that record what had happened when they
were called (the real figures are tested in test_thisse_turner_ushchev.py), and only one real
solve is compiled."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spatialjax import atomic, results
from spatialjax.cli import main
from spatialjax.models import thisse_turner_ushchev as ttu
from spatialjax.plots import thisse_turner_ushchev as plots


@pytest.fixture
def no_solve(monkeypatch):
    """Any solve or figure started by the command fails the test."""
    def boom(*a, **k):
        raise AssertionError("a solve or figure was started before the options were validated")

    for mod, name in ((ttu, "equilibria"), (ttu, "sweep_gamma"), (plots, "figure1"), (plots, "figure2")):
        monkeypatch.setattr(mod, name, boom)


def _one_line_error(capsys, starts: str) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"spatialjax: error: {starts}"), err
    assert cap.out == ""                      # nothing printed as if work had begun
    return err[0]


@pytest.mark.parametrize("argv,message", [
    (["--gamma-max", "-1"], "--gamma-max: must be > 0"),
    (["--gamma-max", "inf"], "--gamma-max: must be a finite number"),
    (["--gamma-max", "nan"], "--gamma-max: must be a finite number"),
    (["--n-gamma", "1"], "--n-gamma: must be >= 2"),
    (["--n-gamma", "10000000"], "--n-gamma: must be <= 20001"),
    (["--tau", "0.9"], "--tau: must lie in (1.0, inf)"),
    (["--delta", "2"], "--delta: must lie in [0.0, 1.0]"),
    (["--alpha", "nan"], "--alpha:"),
])
def test_rejected_option_does_no_work_and_leaves_no_folder(tmp_path, capsys, no_solve, argv, message):
    out = tmp_path / "new" / "out"
    assert main(["solve", "ttu", *argv, "--output", str(out)]) == 2
    line = _one_line_error(capsys, message.split(":")[0])
    assert message in line
    assert not (tmp_path / "new").exists()


def test_output_that_cannot_be_a_folder_is_one_line_exit_2(tmp_path, capsys, no_solve):
    f = tmp_path / "a_file"
    f.write_text("keep me")
    for bad in (f, f / "sub", "/proc/spatialjax-ttu-cannot-create"):
        assert main(["solve", "ttu", "--output", str(bad)]) == 2
        _one_line_error(capsys, "--output:")
    assert f.read_text() == "keep me"


def test_output_target_that_is_a_directory_is_rejected_before_any_work(tmp_path, capsys, no_solve):
    out = tmp_path / "out"
    (out / "ttu_figure2.png").mkdir(parents=True)
    assert main(["solve", "ttu", "--output", str(out)]) == 2
    assert "ttu_figure2.png is a directory" in _one_line_error(capsys, "--output:")
    assert sorted(p.name for p in out.iterdir()) == ["ttu_figure2.png"]      # no table written either
    # with --no-figures that target is not written, so the same folder is accepted (checked below
    # with a real solve in test_table_first_then_files_all_atomic)


class _Recorder:
    """Stand-ins for the two figures: record the captured stdout and the files present when
    called, then write a small PNG atomically (or fail half-way through, if asked)."""

    def __init__(self, capsys, out, fail_at=None, failed_gammas=()):
        self.capsys, self.out, self.fail_at, self.failed = capsys, out, fail_at, list(failed_gammas)
        self.calls = []

    def _write(self, name, path):
        cap = self.capsys.readouterr()
        print(cap.out, end="")                  # keep it for the test's final read
        self.calls.append((name, cap.out, sorted(p.name for p in self.out.iterdir())))
        with atomic.atomic_path(path) as tmp:
            tmp.write_bytes(b"\x89PNG half")
            if self.fail_at == name:
                raise OSError(28, "No space left on device")
            tmp.write_bytes(b"\x89PNG complete figure")

    def figure1(self, params, gammas, path=None, n=600):
        self._write("figure1", path)

    def figure2(self, params, gammas, path=None, sweep=None):
        self._write("figure2", path)
        g = np.asarray(gammas)
        return None, dict(gamma=g, valid=np.ones((len(g), 1), bool), failed=np.asarray(self.failed, int))


def test_table_first_then_files_all_atomic(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    rec = _Recorder(capsys, out)
    monkeypatch.setattr(plots, "figure1", rec.figure1)
    monkeypatch.setattr(plots, "figure2", rec.figure2)
    assert main(["solve", "ttu", "--gamma", "0.11", "--n-gamma", "5", "--output", str(out)]) == 0
    # the table was printed before the first figure was drawn, and the tables were on disk then
    (name, printed, files), _ = rec.calls
    assert name == "figure1" and "Thisse-Turner-Ushchev: all equilibria" in printed
    assert files == ["ttu_equilibria.csv", "ttu_equilibria.json"]
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "ttu_figure2.png" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["ttu_equilibria.csv", "ttu_equilibria.json",
                                                     "ttu_figure1.png", "ttu_figure2.png"]   # no temporaries
    import pandas as pd

    df = pd.read_csv(out / "ttu_equilibria.csv")
    d = json.loads((out / "ttu_equilibria.json").read_text())
    assert len(df) == d["n_equilibria"] == 5
    assert list(df["kind"]) == ["corner", "interior", "interior", "interior", "corner"]
    assert set(df["status"]) <= set(results.STATUSES) and df["converged"].all()
    assert [e["status"] for e in d["equilibria"]] == list(df["status"])
    # exactly one stable equilibrium at gamma = 1.1 gamma_m (the central one, Figure 2(a))
    assert list(df["stable"]) == [False, False, True, False, False]


def test_failure_at_the_last_file_leaves_no_half_written_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    rec = _Recorder(capsys, out, fail_at="figure2")
    monkeypatch.setattr(plots, "figure1", rec.figure1)
    monkeypatch.setattr(plots, "figure2", rec.figure2)
    assert main(["solve", "ttu", "--gamma", "0.11", "--n-gamma", "5", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spatialjax: error: --output: cannot write") and "No space" in err[0]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ttu_equilibria.csv", "ttu_equilibria.json", "ttu_figure1.png"]   # no figure2, no temporary
    assert (out / "ttu_figure1.png").read_bytes() == b"\x89PNG complete figure"
    assert json.loads((out / "ttu_equilibria.json").read_text())["n_equilibria"] == 5


def test_failed_sweep_points_are_named_and_exit_1(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    rec = _Recorder(capsys, out, failed_gammas=[3])
    monkeypatch.setattr(plots, "figure1", rec.figure1)
    monkeypatch.setattr(plots, "figure2", rec.figure2)
    assert main(["solve", "ttu", "--gamma", "0.11", "--n-gamma", "5", "--gamma-max", "0.4", "-q",
                 "--output", str(out)]) == 1
    stdout = capsys.readouterr().out
    assert "the sweep failed at 1 of 5 values of gamma (0.3)" in stdout
    assert "wrote" not in stdout                  # --quiet


def test_no_figures_writes_only_the_tables(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    (out / "ttu_figure2.png").mkdir(parents=True)  # not a target with --no-figures
    monkeypatch.setattr(plots, "figure1", lambda *a, **k: pytest.fail("figure drawn with --no-figures"))
    assert main(["solve", "ttu", "--no-figures", "--gamma", "0.05", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ttu_equilibria.csv", "ttu_equilibria.json", "ttu_figure2.png"]
    d = json.loads((out / "ttu_equilibria.json").read_text())
    # gamma = 0.05 < gamma_m = 0.1: one stable interior equilibrium between the two unstable corners
    assert [(e["kind"], e["stable"]) for e in d["equilibria"]] == [("corner", False), ("interior", True),
                                                                   ("corner", False)]


def test_default_output_folder_is_per_command_and_help_names_exit_codes(capsys):
    """The skeleton's default ``out/ttu`` keeps this command from overwriting the main job's ``out``."""
    from spatialjax.cli import build_parser

    assert build_parser().parse_args(["solve", "ttu"]).output == "out/ttu"
    with pytest.raises(SystemExit) as e:
        main(["solve", "ttu", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--output" in text and "--quiet" in text and "exit codes: 0 success; 1 a solve failed" in text
