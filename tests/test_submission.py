"""submission.json: fallbacks, build/write/read/validate/score round trip, the scoring rule, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from arc_ttft import cli, report
from arc_ttft.submission import (
    FALLBACKS,
    ScoreResult,
    build_submission,
    fallback_attempts,
    format_score,
    read_submission,
    score_submission,
    validate_submission,
    write_submission,
)
from arc_ttft.tasks import Example, Task, grid, load_tasks, to_list

A = grid([[1, 2], [3, 4]])
B = grid([[5, 5, 5]])
C = grid([[7]])


def _task(tid: str, outputs: list[np.ndarray]) -> Task:
    test = [Example(grid([[k, k], [k, k]]), o) for k, o in enumerate(outputs)]
    return Task(tid, [Example(A, B)], test)


@pytest.fixture()
def tasks() -> list[Task]:
    # t1: one test output (A); t2: two test outputs (B, C)
    return [_task("t1", [A]), _task("t2", [B, C])]


# ---------------------------------------------------------------------------------------
# Fallbacks and building
# ---------------------------------------------------------------------------------------


def test_fallback_policies(tasks):
    a1, a2 = fallback_attempts(tasks[1], 1)
    assert np.array_equal(a1, tasks[1].test[1].input) and to_list(a2) == [[0]]
    z1, z2 = fallback_attempts(tasks[1], 1, "zeros")
    assert z1.shape == (2, 2) and not z1.any() and to_list(z2) == [[0]]
    assert set(FALLBACKS) >= {"input", "zeros"}
    with pytest.raises(ValueError, match="unknown policy 'nope'; use one of input, zeros"):
        fallback_attempts(tasks[0], 0, "nope")


def test_build_fills_every_gap_in_order(tasks):
    answers = {
        "t2": [(B, C)],  # only the first test input answered
        "ghost": [(A, A)],  # not a task: ignored
    }
    sub = build_submission(tasks, answers)
    assert list(sub) == ["t1", "t2"]
    assert [len(sub["t1"]), len(sub["t2"])] == [1, 2]
    assert sub["t1"][0] == {"attempt_1": to_list(tasks[0].test[0].input), "attempt_2": [[0]]}
    assert sub["t2"][0] == {"attempt_1": to_list(B), "attempt_2": to_list(C)}
    assert sub["t2"][1] == {"attempt_1": [[1, 1], [1, 1]], "attempt_2": [[0]]}
    assert validate_submission(sub, tasks) == []


def test_build_one_attempt_invalid_grids_and_zeros_policy(tasks):
    answers = {
        "t1": [(A, None)],  # second attempt missing -> first fallback
        "t2": [(grid(np.zeros((31, 2))), B), [C]],  # invalid grid dropped; single grid
    }
    sub = build_submission(tasks, answers, fallback="zeros")
    assert sub["t1"][0] == {"attempt_1": to_list(A), "attempt_2": [[0, 0], [0, 0]]}
    assert sub["t2"][0] == {"attempt_1": to_list(B), "attempt_2": [[0, 0], [0, 0]]}
    assert sub["t2"][1] == {"attempt_1": to_list(C), "attempt_2": [[0, 0], [0, 0]]}
    # an answer equal to the first fallback is not repeated
    sub = build_submission(tasks, {"t1": [(tasks[0].test[0].input, None)]})
    assert sub["t1"][0]["attempt_2"] == [[0]]
    assert validate_submission(sub, tasks) == []


# ---------------------------------------------------------------------------------------
# Writing, reading, validating
# ---------------------------------------------------------------------------------------


def test_write_is_atomic_and_round_trips(tmp_path, tasks, monkeypatch):
    path = tmp_path / "out" / "submission.json"
    sub = build_submission(tasks, {"t1": [(A, B)]})
    write_submission(sub, path)
    assert read_submission(path) == sub
    assert [p.name for p in path.parent.iterdir()] == ["submission.json"]  # no temp left

    # a failure while replacing leaves the old file intact and no temp file behind
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_submission({"t1": []}, path)
    monkeypatch.undo()
    assert read_submission(path) == sub
    assert [p.name for p in path.parent.iterdir()] == ["submission.json"]


def test_written_submission_is_world_readable(tmp_path, tasks):
    """0644 like summary.md and the other outputs (mkstemp alone leaves 0600)."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "submission.json"
        write_submission(build_submission(tasks), path)
        (tmp_path / "other.md").write_text("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.stat().st_mode & 0o777 == (tmp_path / "other.md").stat().st_mode & 0o777


def _cells(line: str) -> list[str]:
    """A markdown table row's cells ("\\|" is a pipe inside a cell)."""
    return line.strip().strip("|").replace("\\|", "\0").split("|")


def test_summary_rows_have_the_header_cells_with_two_test_inputs(tmp_path, tasks):

    task_dir = tmp_path / "tasks" / "t2"
    task_dir.mkdir(parents=True)
    sel = {"candidates": [{"count": 3}, {"count": 1}]}
    answers = {
        "selections": [sel, {"candidates": [{"count": 2}, {"count": 2}, {"count": 1}]}],
        "attempts": [{"attempt_1": to_list(B), "attempt_2": to_list(C)}] * 2,
    }
    (task_dir / "answers.json").write_text(json.dumps(answers))
    (task_dir / "ttt.json").write_text(json.dumps({"steps": 4, "seconds": 1.0, "decision": "a|b"}))
    score = ScoreResult(0.5, 0, 2, {"t1": [False], "t2": [True, False]})
    rows = report.task_rows(tmp_path, tasks, score)
    lines = report.summary_markdown(rows, {"model": "tiny"}).splitlines()
    table = [line for line in lines if line.startswith("|")]
    header, rule, t1, t2 = table
    assert len(_cells(header)) == len(_cells(rule)) == 9
    assert [len(_cells(r)) for r in (t1, t2)] == [9, 9]
    cells = dict(zip([c.strip() for c in _cells(header)], [c.strip() for c in _cells(t2)]))
    assert cells["top votes"] == "3/1; 2/2/1"  # one value per test input, in one cell
    assert cells["attempts (shapes)"] == "1x3, 1x1 (model/model); 1x3, 1x1 (model/model)"
    assert cells["candidates"] == "2; 3"
    assert cells["solved"] == "1/2"


def test_summary_names_the_probes_answers(tmp_path):
    """summary.md said "fallback" for a task the probe answered, while the submission held
    the probe's answers."""
    task = Task("t1", [Example(A, B)], [Example(A, None)])
    d = tmp_path / "tasks" / "t1"
    d.mkdir(parents=True)
    base = {
        "attempts": [{"attempt_1": to_list(B), "attempt_2": to_list(C)}],
        "sources": [["probe", "fallback"]],
        "selections": [{"candidates": [{"count": 2}]}],
        "base": True,
    }
    (d / "answers.base.json").write_text(json.dumps(base))
    row = report.task_rows(tmp_path, [task], None)[0]
    assert row["attempts"] == "1x3, 1x1 (probe/fallback)"
    assert row["candidates"] == "1"


def test_compare_runs_names_what_ttt_gained_and_lost(tmp_path):
    # t1's test input has its demonstration's size (2x2); t2's (1x3) is new
    tasks = [
        Task("t1", [Example(A, B)], [Example(A, B)]),
        Task("t2", [Example(A, B)], [Example(B, B)]),
    ]

    def answers(run, tid, first, votes, source="adapter"):
        d = tmp_path / run / "tasks" / tid
        d.mkdir(parents=True, exist_ok=True)
        data = {
            "attempts": [{"attempt_1": to_list(first), "attempt_2": to_list(C)}],
            "sources": [[source, "fallback"]],
            "selections": [{"candidates": [{"count": v} for v in votes]}],
        }
        (d / "answers.json").write_text(json.dumps(data))

    answers("base", "t1", C, [8], "model")  # wrong, then right with TTT
    answers("ttt", "t1", B, [5, 3])
    answers("base", "t2", B, [8], "model")  # right, then wrong
    answers("ttt", "t2", C, [8])
    (tmp_path / "ttt" / "tasks" / "t1" / "ttt.json").write_text(
        json.dumps({"steps": 64, "final_loss": 0.003})
    )
    (tmp_path / "ttt" / "config.json").write_text(
        json.dumps(
            {"ttt": {"ttt_transforms": "none"}, "infer": {"view_transforms": "auto", "views": 8}}
        )
    )
    md = report.compare_runs(tmp_path / "base", tmp_path / "ttt", tasks)
    assert "gained by TTT: 1, lost: 1" in md and "ttt_transforms=none" in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| t")}
    assert "1x1 wrong (8; model)" in rows["t1"] and "1x3 **ok** (5/3; adapter)" in rows["t1"]
    assert "| 64 | 0.0030 | gained |" in rows["t1"] and rows["t2"].endswith("| lost |")
    assert "| 0 | 2x2 | 1x1 wrong" in rows["t1"] and "| 0 | 1x3 new | 1x3 **ok**" in rows["t2"]
    assert "size some demonstration shows: 1, solved without TTT 0, with TTT 1" in md
    assert "size no demonstration shows (new): 1, solved without TTT 1, with TTT 0" in md
    assert report.size_seen(tasks[0], 0) and not report.size_seen(tasks[1], 0)


def test_write_accepts_numpy_grids(tmp_path):
    path = tmp_path / "s.json"
    write_submission({"t1": [{"attempt_1": A, "attempt_2": np.int64(3)}]}, path)
    assert json.loads(path.read_text()) == {"t1": [{"attempt_1": to_list(A), "attempt_2": 3}]}


def test_read_submission_errors(tmp_path):
    with pytest.raises(ValueError, match="submission not found"):
        read_submission(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(ValueError, match=r"bad.json: line 1, column 7: not valid JSON"):
        read_submission(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="expected an object"):
        read_submission(tmp_path / "list.json")


def test_validate_lists_every_problem(tasks):
    sub = {
        "t2": [
            {"attempt_1": [[1, 2], [3]], "attempt_2": [[0]]},
            {"attempt_1": [[10]]},
            [1],
        ],
        "extra": [],
    }
    got = validate_submission(sub, tasks)
    assert [p.split(" (fix:")[0] for p in got] == [
        "t1: submission: missing",
        "t2: submission: 3 entries for 2 test inputs",
        "t2: [0].attempt_1: row 1 has 1 cell, expected 2",
        "t2: [1].attempt_1: cell [0][0] is 10, outside 0-9",
        't2: [1]: missing "attempt_2"',
        "t2: [2]: expected an object, got list",
        "extra: submission: not a task of the challenges",
    ]
    assert validate_submission([], tasks)[0].startswith("<submission>: top level:")


# ---------------------------------------------------------------------------------------
# Scoring rule
# ---------------------------------------------------------------------------------------


def _entry(a1, a2) -> dict:
    return {"attempt_1": to_list(a1), "attempt_2": to_list(a2)}


def test_either_attempt_counts(tasks):
    first = {"t1": [_entry(A, C)], "t2": [_entry(B, A), _entry(C, A)]}
    second = {"t1": [_entry(C, A)], "t2": [_entry(A, B), _entry(A, C)]}
    for sub in (first, second):
        r = score_submission(sub, tasks)
        assert (r.score, r.solved_tasks, r.total) == (1.0, 2, 2)
        assert format_score(r) == "score: 1.0000 (2/2 tasks)"


def test_partial_task_with_two_test_inputs(tasks):
    sub = {"t1": [_entry(C, C)], "t2": [_entry(B, C), _entry(A, A)]}
    r = score_submission(sub, tasks)
    assert r.per_task == {"t1": [False], "t2": [True, False]}
    assert r.score == pytest.approx(0.25)  # mean(0, 1/2)
    assert r.solved_tasks == 0 and r.total == 2
    assert format_score(r) == "score: 0.2500 (0/2 tasks)"


def test_shape_must_match_exactly_and_garbage_counts_wrong(tasks):
    sub = {
        "t1": [{"attempt_1": [[1, 2, 0], [3, 4, 0]], "attempt_2": [[1, 2], [3]]}],
        "t2": [{"attempt_1": "x", "attempt_2": None}, "junk"],
    }
    r = score_submission(sub, tasks)
    assert r.score == 0.0 and r.solved_tasks == 0
    assert score_submission({}, tasks).per_task == {"t1": [False], "t2": [False, False]}


def test_score_against_a_solutions_mapping_and_unknown_outputs(tasks):
    sub = {"t1": [_entry(A, A)], "t2": [_entry(B, B), _entry(C, C)]}
    r = score_submission(sub, {"t1": [to_list(A)], "t2": [to_list(B), to_list(A)]})
    assert r.per_task == {"t1": [True], "t2": [True, False]}
    assert r == ScoreResult(0.75, 1, 2, r.per_task)
    no_outputs = [Task("t9", [Example(A, B)], [Example(A)])]
    with pytest.raises(ValueError, match=r"t9: test\[0\]: no known output"):
        score_submission(sub, no_outputs)
    assert score_submission({}, []).score == 0.0


def test_round_trip_on_a_bundled_set(tmp_path):
    tasks = load_tasks("arc1-eval").tasks[:20]
    # right answers for the even tasks (as attempt_2), nothing for the odd ones
    answers = {t.id: [(C, ex.output) for ex in t.test] for t in tasks[::2]}
    path = tmp_path / "submission.json"
    write_submission(build_submission(tasks, answers), path)
    sub = read_submission(path)
    assert validate_submission(sub, tasks) == []
    r = score_submission(sub, tasks)
    assert r.total == 20 and r.solved_tasks >= 10 and r.score >= 0.5


# ---------------------------------------------------------------------------------------
# CLI: validate, score
# ---------------------------------------------------------------------------------------


def _kaggle(tmp_path: Path, tasks: list[Task]) -> tuple[Path, Path]:
    ch = {
        t.id: {
            "train": [{"input": to_list(e.input), "output": to_list(e.output)} for e in t.train],
            "test": [{"input": to_list(e.input)} for e in t.test],
        }
        for t in tasks
    }
    sol = {t.id: [to_list(e.output) for e in t.test] for t in tasks}
    (tmp_path / "x_challenges.json").write_text(json.dumps(ch))
    (tmp_path / "x_solutions.json").write_text(json.dumps(sol))
    return tmp_path / "x_challenges.json", tmp_path / "x_solutions.json"


def test_cli_validate_ok_and_with_submission(tmp_path, tasks, capsys):
    ch, sol = _kaggle(tmp_path, tasks)
    assert cli.main(["validate", "--challenges", str(ch)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("valid: 2 tasks, 3 test inputs, all outputs known")
    sub = tmp_path / "submission.json"
    write_submission(build_submission(tasks, {}), sub)
    rc = cli.main(
        ["validate", "--challenges", str(ch), "--solutions", str(sol), "--submission", str(sub)]
    )
    assert rc == 0
    assert capsys.readouterr().out.strip().endswith("submission.json: complete")


def test_cli_validate_lists_problems(tmp_path, tasks, capsys):
    malformed = Path(__file__).parent / "data" / "malformed" / "several.json"
    assert cli.main(["validate", "--challenges", str(malformed)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("t1: train: empty;") and out[-1] == "invalid: 3 problem(s)"
    # with --skip-invalid the submission is still checked against the valid task
    sub = tmp_path / "s.json"
    write_submission({"ok": [{"attempt_1": [[1]], "attempt_2": [[10]]}]}, sub)
    rc = cli.main(
        ["validate", "--challenges", str(malformed), "--skip-invalid", "--submission", str(sub)]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 1 and out[-1] == "invalid: 4 problem(s)"
    assert any(line.startswith("ok: [0].attempt_2: cell [0][0] is 10") for line in out)
    assert cli.main(["validate", "--challenges", "arc9-eval"]) == 1
    assert "arc1-train, arc1-eval" in capsys.readouterr().out


def test_cli_score_with_solutions_or_challenges(tmp_path, tasks, capsys):
    ch, sol = _kaggle(tmp_path, tasks)
    sub = tmp_path / "submission.json"
    write_submission({"t1": [_entry(A, A)], "t2": [_entry(B, B), _entry(A, A)]}, sub)
    for flags in (["--solutions", str(sol)], ["--challenges", str(ch)]):
        assert cli.main(["score", "--submission", str(sub), *flags]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert out == ["t1  1/1", "t2  1/2", "score: 0.7500 (1/2 tasks)"]


def test_cli_score_bundled_set_with_missing_tasks(tmp_path, capsys):
    tasks = load_tasks("arc2-eval").tasks
    sub = tmp_path / "submission.json"
    write_submission(
        build_submission(tasks[:3], {t.id: [(ex.output, C) for ex in t.test] for t in tasks[:3]}),
        sub,
    )
    assert cli.main(["score", "--submission", str(sub), "--challenges", "arc2-eval"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip().splitlines()[-1] == f"score: {3 / 120:.4f} (3/120 tasks)"
    assert "submission: missing (fix" in cap.err  # missing tasks are warned about, counted wrong
    rc = cli.main(
        ["score", "--submission", str(sub), "--challenges", "arc2-eval", "--max-tasks", "3"]
    )
    assert (
        rc == 0 and capsys.readouterr().out.strip().splitlines()[-1] == "score: 1.0000 (3/3 tasks)"
    )


def test_cli_score_errors(tmp_path, capsys):
    assert (
        cli.main(
            ["score", "--submission", str(tmp_path / "nope.json"), "--challenges", "arc1-eval"]
        )
        == 1
    )
    assert "submission not found" in capsys.readouterr().err
    (tmp_path / "s.json").write_text("{}")
    (tmp_path / "test_challenges.json").write_text(
        json.dumps(
            {"t1": {"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}}
        )
    )
    rc = cli.main(
        [
            "score",
            "--submission",
            str(tmp_path / "s.json"),
            "--challenges",
            str(tmp_path / "test_challenges.json"),
        ]
    )
    assert rc == 1 and "no known output" in capsys.readouterr().err
