"""Exercises: ``lorakit.exercises.check`` and the student build (``make student``).

For every notebook, every code cell that calls ``lk.exercises.check("NN.k", ...)`` is run alone
(a fresh namespace: the cell imports what it uses) in its instructor form, where the check must
pass, and in its student form (``lorakit.exercises.student``), where the stub must raise
``NotImplementedError``. The registry and the notebooks must cover each other. The same machinery
runs on ``tests/data/99_fixture.ipynb``, whose two exercises this file registers itself.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import nbformat
import pytest
import sympy as sp

import lorakit.exercises as ex
from lorakit.exercises import student

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FIXTURE = Path(__file__).parent / "data" / "99_fixture.ipynb"
CHECK = re.compile(r"""lk\.exercises\.check\(\s*["'](\d\d\.\d+)["']""")


# -- the machinery: find exercise cells, run one cell alone ------------------------------------
def number(path: Path) -> str:
    """``03`` for ``03_theory_constants.ipynb``."""
    return path.name[:2]


def exercise_cells(path: Path) -> list[tuple[int, list[str], str]]:
    """(cell index, keys checked, source) of every code cell of ``path`` that calls check()."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(nb.cells):
        keys = CHECK.findall(cell.source) if cell.cell_type == "code" else []
        if keys:
            found.append((index, keys, cell.source))
    return found


def run_alone(source: str, monkeypatch) -> list[ex.Result]:
    """Execute ``source`` in a fresh namespace; returns the Results of the check() calls it made."""
    results = []
    real = ex.check

    def recording(key, answer):
        results.append(result := real(key, answer))
        return result

    monkeypatch.setattr(ex, "check", recording)
    from IPython.display import display  # a notebook's built-in, for cells that call it

    tree = ast.parse(source)
    exec(compile(tree, "<exercise cell>", "exec"), {"__name__": "__exercise__", "display": display})
    return results


@pytest.fixture
def fixture_exercises(monkeypatch):
    """Register the fixture notebook's exercises 99.1 and 99.2 for one test."""
    x = sp.Symbol("x")
    monkeypatch.setitem(
        ex.EXERCISES,
        "99.1",
        ex.Exercise("99.1", "pairs", "compute", reference=lambda: math.comb(6, 2), hint="C(n, 2)"),
    )
    monkeypatch.setitem(
        ex.EXERCISES,
        "99.2",
        ex.Exercise(
            "99.2",
            "antiderivative",
            "compute",
            reference=lambda: sp.integrate(1 / (1 - x) ** 2, x),
            compare="symbolic",
            hint="differentiate your answer",
        ),
    )


def _cells(paths):
    return [
        pytest.param(path, index, keys, source, id=f"{path.stem}-cell{index}")
        for path in paths
        for index, keys, source in exercise_cells(path)
    ]


REAL = sorted(NOTEBOOKS.glob("*.ipynb"))
REAL_CELLS = _cells(REAL)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    written = student.build(NOTEBOOKS, out)
    assert sorted(p.name for p in written) == [p.name for p in REAL]
    return out


def _check_instructor(source, keys, monkeypatch):
    results = run_alone(source, monkeypatch)
    assert [r.key for r in results] == keys
    for result in results:
        assert result.correct is True, result.message


def _check_student(source, keys, monkeypatch):
    assert "# YOUR CODE HERE" in source and "raise NotImplementedError()" in source
    assert student.BEGIN not in source and student.END not in source
    with pytest.raises(NotImplementedError):
        run_alone(source, monkeypatch)


def _student_source(folder: Path, path: Path, index: int) -> str:
    return nbformat.read(folder / path.name, as_version=4).cells[index].source


# -- every exercise of the notebooks ---------------------------------------------------------
@pytest.mark.parametrize(("path", "index", "keys", "source"), REAL_CELLS)
def test_instructor_cell_passes_its_check(path, index, keys, source, monkeypatch):
    _check_instructor(source, keys, monkeypatch)


@pytest.mark.parametrize(("path", "index", "keys", "source"), REAL_CELLS)
def test_student_cell_fails_until_filled_in(path, index, keys, source, student_dir, monkeypatch):
    _check_student(_student_source(student_dir, path, index), keys, monkeypatch)


def test_every_check_names_a_registered_exercise_of_its_notebook():
    for path in REAL:
        for index, keys, _ in exercise_cells(path):
            for key in keys:
                assert key in ex.EXERCISES, f"{path.name} cell {index}: {key} is not registered"
                assert key.startswith(number(path) + "."), f"{path.name} cell {index}: {key}"


def test_every_checkable_exercise_appears_in_exactly_one_cell():
    cells = {number(p): exercise_cells(p) for p in REAL}
    for key, exercise in ex.EXERCISES.items():
        if exercise.kind == "open":
            continue
        hits = [i for i, keys, _ in cells.get(key[:2], []) if key in keys]
        assert len(hits) == 1, f"{key} is checked in cells {hits} of notebook {key[:2]}"


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_every_notebook_has_four_to_six_exercises(path):
    keys = [k for k in ex.EXERCISES if k.startswith(number(path) + ".")]
    assert 4 <= len(keys) <= 6, f"{path.name} has {len(keys)} exercises registered: {keys}"


# -- the same machinery on the fixture notebook ------------------------------------------------
def test_fixture_instructor_and_student_cells(fixture_exercises, tmp_path, monkeypatch):
    cells = exercise_cells(FIXTURE)
    assert [keys for _, keys, _ in cells] == [["99.1"], ["99.2"]]
    written = student.build(FIXTURE, tmp_path)
    assert written == {tmp_path / FIXTURE.name: 3}  # two code blocks and one markdown answer
    for index, keys, source in cells:
        _check_instructor(source, keys, monkeypatch)
        _check_student(_student_source(tmp_path, FIXTURE, index), keys, monkeypatch)


def test_fixture_student_notebook_stubs_keep_indentation_and_clear_outputs(tmp_path):
    student.build(FIXTURE, tmp_path)
    nb = nbformat.read(tmp_path / FIXTURE.name, as_version=4)
    original = nbformat.read(FIXTURE, as_version=4)
    assert original.cells[3].outputs  # the fixture has an output to clear
    assert nb.cells[3].source == (
        "import lorakit as lk\n\n\ndef pairs(n):\n"
        "    # YOUR CODE HERE\n    raise NotImplementedError()\n\n\n"
        'lk.exercises.check("99.1", pairs(6))'
    )
    assert nb.cells[3].outputs == [] and nb.cells[3].execution_count is None
    assert nb.cells[2].source.endswith("Explain.\n\nYOUR ANSWER HERE")
    assert "15" not in nb.cells[2].source
    assert nb.cells[1].source == original.cells[1].source  # cells without markers are kept
    nbformat.validate(nb)


def test_fixture_exercise_with_a_wrong_filling_fails(fixture_exercises, monkeypatch):
    source = exercise_cells(FIXTURE)[0][2]
    wrong = source.replace("return n * (n - 1) // 2", "return n * (n - 1)")
    assert wrong != source
    (result,) = run_alone(wrong, monkeypatch)
    assert result.correct is False and "C(n, 2)" in result.message


# -- the student builder -----------------------------------------------------------------------
def test_strip_solutions_replaces_each_block_by_the_stub():
    text, blocks = student.strip_solutions(
        "a = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION\nc = 3\n"
        "if a:\n    ### BEGIN SOLUTION\n    d = 4\n    ### END SOLUTION\n"
    )
    assert blocks == 2
    assert text == (
        "a = 1\n# YOUR CODE HERE\nraise NotImplementedError()\nc = 3\n"
        "if a:\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    )
    assert student.strip_solutions("x = 1", markdown=True) == ("x = 1", 0)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("### BEGIN SOLUTION\nx = 1\n", "without '### END SOLUTION'"),
        ("x = 1\n### END SOLUTION\n", "line 2: '### END SOLUTION' without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside a solution block"),
    ],
)
def test_strip_solutions_refuses_unbalanced_markers(source, match):
    with pytest.raises(ValueError, match=match):
        student.strip_solutions(source, where="nb.ipynb, cell 4")


def test_build_refuses_a_source_without_notebooks(tmp_path):
    with pytest.raises(ValueError, match="src must hold notebooks"):
        student.build(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="src must be a notebook or a folder"):
        student.build(tmp_path / "missing.ipynb", tmp_path / "out")


def test_command_line_writes_the_student_notebooks(tmp_path, capsys):
    assert student.main([str(FIXTURE.parent), str(tmp_path / "student")]) == 0
    assert (tmp_path / "student" / FIXTURE.name).is_file()
    assert "1 notebook(s), 3 solution block(s) removed" in capsys.readouterr().out


# -- check() -------------------------------------------------------------------------------------
@pytest.fixture
def register(monkeypatch):
    """Register a temporary exercise (removed after the test)."""

    def add(key, kind="compute", **kw):
        monkeypatch.delitem(ex.EXERCISES, key, raising=False)
        made = ex.exercise(key, f"exercise {key}", kind, **kw)
        monkeypatch.setitem(ex.EXERCISES, key, made)
        return made

    return add


def test_numeric_answers_pass_within_the_tolerance(register):
    register("98.1", reference=lambda: math.pi, rtol=1e-3, hint="think of circles")
    assert ex.check("98.1", 3.1416).correct is True  # |Δ| = 7e-6 ≤ 1e-3·π
    wrong = ex.check("98.1", 3.2)
    assert wrong.correct is False and not wrong
    assert "Hint: think of circles" in wrong.message
    assert ex.check("98.1", [3.1416]).correct is False  # shape (1,) against ()
    assert "could not read" in ex.check("98.1", [3.1416]).message


def test_numeric_sequences_compare_elementwise_with_atol(register):
    register("98.2", reference=lambda: [0.0, 1.0], atol=1e-3, rtol=0.0)
    assert ex.check("98.2", (0.0009, 1.0009)).correct is True
    assert ex.check("98.2", (0.0011, 1.0)).correct is False


def test_symbolic_answers_pass_when_equivalent(register):
    x = sp.Symbol("x")
    register("98.3", reference=lambda: 1 / (1 - x), compare="symbolic")
    assert ex.check("98.3", "-1/(x-1)").correct is True
    assert ex.check("98.3", -1 / (x - 1)).correct is True
    assert ex.check("98.3", "(1 + x)/(1 - x**2)").correct is True
    assert ex.check("98.3", "1/(1+x)").correct is False
    assert "could not read" in ex.check("98.3", "1/(1-").message


def test_exact_answers_ignore_case_and_spaces_only(register):
    register("98.4", reference=lambda: "haar", compare="exact")
    assert ex.check("98.4", " Haar ").correct is True
    assert ex.check("98.4", "gaussian").correct is False
    assert ex.check("98.4", 1).correct is False
    register("98.5", reference=lambda: 7, compare="exact")
    assert ex.check("98.5", 7).correct is True
    assert ex.check("98.5", 8).correct is False


def test_accept_overrides_the_comparison_for_goals_with_many_answers(register):
    register("98.6", kind="configure", reference=lambda: 2.0, accept=lambda a, ref: 0 < a < ref)
    assert ex.check("98.6", 0.5).correct is True
    assert ex.check("98.6", 1.9).correct is True
    assert ex.check("98.6", 2.5).correct is False


def test_reference_is_computed_at_check_time(register):
    calls = []
    register("98.7", reference=lambda: calls.append(1) or 5.0)
    ex.check("98.7", 5.0)
    ex.check("98.7", 4.0)
    assert len(calls) == 2


def test_open_questions_and_missing_answers(register):
    register("98.8", kind="open")
    result = ex.check("98.8", "anything")
    assert result.correct is None and not result and "discussion" in result.message
    register("98.9", reference=lambda: 1.0)
    for missing in (None, ...):
        result = ex.check("98.9", missing)
        assert result.correct is False and "no answer yet" in result.message
    assert result._repr_markdown_() == result.message == repr(result)


def test_unknown_key_lists_the_valid_keys(register):
    register("98.1", reference=lambda: 1.0)
    with pytest.raises(ValueError, match=r"key must be one of .*98\.1") as info:
        ex.check("98.99", 1.0)
    assert "98.99" in str(info.value)


def test_exercise_refuses_bad_definitions(register):
    register("98.1", reference=lambda: 1.0)
    with pytest.raises(ValueError, match="registered twice"):
        ex.exercise("98.1", "again", "compute", reference=lambda: 1.0)
    with pytest.raises(ValueError, match="kind"):
        ex.Exercise("98.2", "t", "guess", reference=lambda: 1.0)
    with pytest.raises(ValueError, match="compare"):
        ex.Exercise("98.2", "t", "compute", reference=lambda: 1.0, compare="fuzzy")
    with pytest.raises(ValueError, match="open questions, and only they"):
        ex.Exercise("98.2", "t", "open", reference=lambda: 1.0)
    with pytest.raises(ValueError, match="open questions, and only they"):
        ex.Exercise("98.2", "t", "compute")
    with pytest.raises(ValueError, match="rtol"):
        ex.Exercise("98.2", "t", "compute", reference=lambda: 1.0, rtol=-1.0)
    with pytest.raises(ValueError, match=r"key must look like .NN\.k."):
        ex.Exercise("3.2", "t", "compute", reference=lambda: 1.0)


def test_table_lists_exercises_in_key_order_with_homework_kinds(register):
    register("98.10", kind="configure", reference=lambda: 1.0)
    register("98.2", kind="predict", reference=lambda: 1.0)
    register("98.3", kind="open")
    rows = ex.table().set_index("key").loc[["98.2", "98.3", "98.10"]]
    keys = list(ex.table()["key"])
    assert keys.index("98.2") < keys.index("98.3") < keys.index("98.10")  # 10 after 3, not before
    assert list(rows["homework"]) == [False, False, True]
    assert list(rows["checked"]) == ["numeric", "no (discussion)", "numeric"]
    assert set(rows["notebook"]) == {"98"}
