"""Bad input tried as a new user would (issue 13): every case is a ParameterError that names
the field (or file, column and file line) and says what is allowed — never a NumPy TypeError,
an AttributeError deep inside a solve, or a silent clamp."""

import equinox as eqx
import numpy as np
import pytest

from spatialjax.errors import ParameterError
from spatialjax.io import read_table, read_toml
from spatialjax.models import jiao_tian as jt

FIELDS = ("alpha", "beta", "theta", "gamma", "T", "tau", "H", "Lm_total", "Lp_total")


@pytest.fixture(scope="module")
def economy():
    return jt.synthetic_economy(8, seed=0)


def _params(p, **kw):
    return jt.Params(**{**{k: getattr(p, k) for k in FIELDS}, **kw})


def test_non_numeric_field_is_named(economy):
    p, _ = economy
    with pytest.raises(ParameterError, match="^theta: must be a number"):
        _params(p, theta="5")


def test_list_fields_are_converted_and_shapes_checked(economy):
    p, y = economy
    q = _params(p, T=list(np.asarray(p.T)))
    assert jt.solve(q, y).status == "successful"
    with pytest.raises(ParameterError, match=r"^tau: must have shape \(7, 7\)"):
        _params(p, T=[1.0] * 7)


def test_tree_at_cannot_smuggle_an_invalid_tau_into_solve(economy):
    p, y = economy
    bad = eqx.tree_at(lambda r: r.tau, p, p.tau.at[0, 0].set(0.5))   # bypasses __check_init__
    with pytest.raises(ParameterError, match=r"^tau: must have a unit diagonal.*tau\[0,0\] = 0.5"):
        jt.solve(bad, y)


@pytest.mark.parametrize("N", [0, -3, 2.5, True])
def test_synthetic_economy_needs_a_positive_integer(N):
    with pytest.raises(ParameterError, match="^N: the number of cities must be an integer >= 1"):
        jt.synthetic_economy(N)


def test_welfare_needs_a_solution(economy):
    p, y = economy
    with pytest.raises(ParameterError, match="^sol: must be the jiao_tian.Solution"):
        jt.welfare(p, y)


def test_negative_openness_is_rejected_not_clamped():
    with pytest.raises(ParameterError, match=r"^Delta: .*\[0, inf\); got \[-0.1\]"):
        jt.tau_from_openness(3, 5.0, -0.1)


def test_solve_from_data_checks_shapes_and_signs(economy):
    p, _ = economy
    with pytest.raises(ParameterError, match=r"^w: must have shape \(8,\); got \(7,\)"):
        jt.solve_from_data(p, np.ones(7), np.ones(8))
    with pytest.raises(ParameterError, match="^Lm: must be > 0; got -1.0, -1.0, -1.0 at index 0, 1, 2"):
        jt.solve_from_data(p, np.ones(8), -np.ones(8))


def test_scalar_errors_are_reported_as_scalars():
    from spatialjax.validation import check_positive

    with pytest.raises(ParameterError) as e:
        check_positive("gamma", -0.1)
    assert str(e.value) == "gamma: must be > 0; got -0.1"


def test_csv_errors_name_file_column_and_file_line(tmp_path):
    f = tmp_path / "cities.csv"
    f.write_text("# a comment line\ncity,x\n1,2.0\n\n2,-1\n3,abc\n")   # header on line 2, '3,abc' on line 6
    with pytest.raises(ParameterError, match=r"^cities.csv:x: must be finite numbers; bad value\(s\) \['abc'\] at line 6"):
        read_table(f, {"city": "int", "x": "float"})
    g = tmp_path / "pos.csv"
    g.write_text("# a comment line\ncity,x\n1,2.0\n\n2,-1\n")
    with pytest.raises(ParameterError, match=r"^pos.csv:x: must be > 0; got \[-1.0\] at line 5"):
        read_table(g, {"city": "int", "x": "positive"})


def test_duplicate_ids_empty_and_header_only_files(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("city,x\n1,1\n2,1\n2,3\n")
    with pytest.raises(ParameterError, match=r"^dup.csv:city: values must be unique; repeated \[2\] at line 4"):
        read_table(dup, {"city": "int"}, unique=("city",))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ParameterError, match="^empty.csv: the file is empty"):
        read_table(empty, {"city": "int"})
    header = tmp_path / "header.csv"
    header.write_text("city,x\n")
    with pytest.raises(ParameterError, match="^header.csv: has a header but no data rows"):
        read_table(header, {"city": "int"})


def test_toml_syntax_error_names_the_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("a = [\n")
    with pytest.raises(ParameterError, match="broken.toml: not valid TOML"):
        read_toml(f)


def test_output_dir_that_cannot_be_created_is_exit_2_with_one_line(tmp_path, capsys):
    from spatialjax.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for bad in (blocker / "sub", "/proc/spatialjax-cannot-create"):
        assert main(["solve", "ttu", "--no-figures", "--output", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("spatialjax: error: --output:"), err


def test_rejected_option_leaves_no_output_folder(tmp_path, capsys):
    from spatialjax.cli import main

    out = tmp_path / "never"
    assert main(["solve", "ttu", "--gamma-max", "-1", "--output", str(out)]) == 2
    assert "--gamma-max: must be > 0" in capsys.readouterr().err
    assert not out.exists()


def test_check_once_remembers_a_passed_immutable_object_and_nothing_else():
    """validation.check_once skips the check only for the very object that passed it, when all
    its leaves are jax Arrays; a copy built by eqx.tree_at, an object with a NumPy leaf (mutable
    in place) and one that failed are checked again."""
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    from spatialjax.validation import check_once, check_positive

    class P(eqx.Module):
        a: object

    calls = []

    def check(p):
        calls.append(1)
        check_positive("a", p.a)

    good = P(jnp.asarray([1.0, 2.0]))
    check_once(good, check)
    check_once(good, check)
    assert len(calls) == 1                           # remembered
    bad = eqx.tree_at(lambda p: p.a, good, jnp.asarray([1.0, -2.0]))
    for _ in range(2):
        with pytest.raises(ParameterError, match="^a: must be > 0"):
            check_once(bad, check)                   # a new object: checked, and not remembered
    assert len(calls) == 3
    arr = np.array([1.0, 2.0])
    mutable = P(arr)
    check_once(mutable, check)
    arr[1] = -1.0                                    # changed in place after it passed
    with pytest.raises(ParameterError, match="^a: must be > 0"):
        check_once(mutable, check)
    other = lambda p: calls.append(2)                # noqa: E731  another check is not the same verdict
    check_once(good, other)
    assert calls[-1] == 2
