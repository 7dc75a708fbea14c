"""submission.json: build (with fallbacks), write atomically, read, validate and score.

Kaggle's format: ``{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}`` with one
dict per test input, in order, and every task of the challenges file present.

Scoring follows the ARC Prize rule: a test output counts as solved when either attempt
equals it exactly; a task scores the fraction of its test outputs solved; the total is
the mean over tasks. ``solved_tasks`` (S) counts the tasks with every output solved.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft.events import jsonable
from arc_ttft.tasks import Grid, Problem, Task, grid, grid_problems, to_list

# name -> what fills the two attempts when a test input has no answer
FALLBACKS: dict[str, str] = {
    "input": "the test input itself, then a 1x1 [[0]] grid",
    "zeros": "a grid of zeros shaped like the test input, then a 1x1 [[0]] grid",
}


def fallback_attempts(task: Task, test_index: int, fallback: str = "input") -> tuple[Grid, Grid]:
    """Two attempts for a test input without an answer, by policy name (see FALLBACKS)."""
    if fallback not in FALLBACKS:
        raise ValueError(
            f"fallback: unknown policy {fallback!r}; use one of {', '.join(FALLBACKS)}"
        )
    inp = task.test[test_index].input
    zero = np.zeros((1, 1), dtype=np.int8)
    if fallback == "zeros":
        return np.zeros_like(inp, dtype=np.int8), zero
    return np.array(inp, dtype=np.int8), zero


def _valid(g: Any) -> bool:
    if g is None:
        return False
    if isinstance(g, np.ndarray):
        g = g.tolist()
    return not grid_problems(g)


def _attempts(given: Any, defaults: tuple[Grid, Grid]) -> list[Grid]:
    """Two attempts: the valid given grids first, then fallbacks not already used."""
    if given is None:
        given = []
    elif isinstance(given, np.ndarray) or (
        isinstance(given, list) and given and _is_grid_like(given)
    ):
        given = [given]  # a single grid instead of a pair
    chosen = [grid(g) for g in list(given)[:2] if _valid(g)]
    for d in defaults:
        if len(chosen) == 2:
            break
        if not any(np.array_equal(d, c) for c in chosen):
            chosen.append(d)
    while len(chosen) < 2:  # both fallbacks already taken by the answer
        chosen.append(defaults[1])
    return chosen


def _is_grid_like(x: list) -> bool:
    """A list of rows of ints (a bare grid) rather than a list of grids."""
    return isinstance(x[0], list) and bool(x[0]) and not isinstance(x[0][0], (list, np.ndarray))


def build_submission(
    tasks: Iterable[Task],
    answers: Mapping[str, list[tuple[Grid, Grid]]] | None = None,
    *,
    fallback: str = "input",
) -> dict[str, list[dict[str, list[list[int]]]]]:
    """Kaggle submission for every task and test input, in order.

    ``answers[task_id][i]`` holds up to two grids for test input ``i``. Missing tasks,
    missing test inputs, missing or invalid grids are filled from ``fallback_attempts``
    (never repeating a grid already there). Answers for ids not in ``tasks`` are ignored.
    """
    answers = answers or {}
    sub: dict[str, list[dict[str, list[list[int]]]]] = {}
    for t in tasks:
        given = list(answers.get(t.id) or [])
        entries = []
        for i in range(len(t.test)):
            pair = given[i] if i < len(given) else None
            a1, a2 = _attempts(pair, fallback_attempts(t, i, fallback))
            entries.append({"attempt_1": to_list(a1), "attempt_2": to_list(a2)})
        sub[t.id] = entries
    return sub


def write_submission(sub: dict, path: str | os.PathLike) -> None:
    """Write JSON atomically: a temp file in the same folder, then ``os.replace``.

    A reader (or a kill) never sees a half-written submission.json. The file is 0644 like
    the run's other outputs (mkstemp alone would leave it private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(sub, f, separators=(",", ":"), default=partial(jsonable, grid=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_submission(path: str | os.PathLike) -> dict:
    """Read a submission JSON; ValueError naming the file when it is not a JSON object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: submission not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: line {e.lineno}, column {e.colno}: not valid JSON: {e.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected an object {{task_id: [...]}}, got {type(data).__name__}"
        )
    return data


def validate_submission(sub: Any, tasks: Iterable[Task]) -> list[str]:
    """Every problem of a submission against the tasks (empty list = valid).

    Checks: every task and test index present, each entry has attempt_1 and attempt_2,
    each a valid ARC grid (list of lists of ints 0-9, rectangular, 1..30), no extra ids.
    """
    tasks = list(tasks)
    if not isinstance(sub, dict):
        return [
            str(
                Problem(
                    "<submission>",
                    "top level",
                    f"expected an object, got {type(sub).__name__}",
                    'write {"<task id>": [{"attempt_1": grid, "attempt_2": grid}, ...]}',
                )
            )
        ]
    out: list[Problem] = []
    for t in tasks:
        n = len(t.test)
        if t.id not in sub:
            out.append(
                Problem(
                    t.id, "submission", "missing", f"add {n} entr{'y' if n == 1 else 'ies'} for it"
                )
            )
            continue
        entries = sub[t.id]
        if not isinstance(entries, list):
            out.append(
                Problem(
                    t.id,
                    "submission",
                    f"expected a list of {n} entries, got {type(entries).__name__}",
                    "give one {attempt_1, attempt_2} object per test input",
                )
            )
            continue
        if len(entries) != n:
            out.append(
                Problem(
                    t.id,
                    "submission",
                    f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'} for {n} test input{'' if n == 1 else 's'}",
                    "give exactly one {attempt_1, attempt_2} object per test input, in order",
                )
            )
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                out.append(
                    Problem(
                        t.id,
                        f"[{i}]",
                        f"expected an object, got {type(e).__name__}",
                        'write {"attempt_1": grid, "attempt_2": grid}',
                    )
                )
                continue
            for key in ("attempt_1", "attempt_2"):
                if key not in e:
                    out.append(Problem(t.id, f"[{i}]", f'missing "{key}"', f'add "{key}": grid'))
                    continue
                g = e[key].tolist() if isinstance(e[key], np.ndarray) else e[key]
                for message, fix in grid_problems(g):
                    out.append(Problem(t.id, f"[{i}].{key}", message, fix))
    known = {t.id for t in tasks}
    for tid in sub:
        if tid not in known:
            out.append(Problem(tid, "submission", "not a task of the challenges", "remove it"))
    return [str(p) for p in out]


@dataclass
class ScoreResult:
    score: float  # mean over tasks of the fraction of test outputs solved
    solved_tasks: int  # S: tasks with every test output solved
    total: int  # T: number of tasks
    per_task: dict[str, list[bool]] = field(
        default_factory=dict
    )  # task id -> solved per test output


def _outputs(tasks: Iterable[Task] | Mapping[str, list]) -> dict[str, list[Grid]]:
    if isinstance(tasks, Mapping):
        return {tid: [grid(g) for g in gs] for tid, gs in tasks.items()}
    out = {}
    for t in tasks:
        for i, ex in enumerate(t.test):
            if ex.output is None:
                raise ValueError(
                    f"{t.id}: test[{i}]: no known output to score against; "
                    "load the tasks with their solutions (--solutions)"
                )
        out[t.id] = [ex.output for ex in t.test]
    return out


def _same(attempt: Any, truth: Grid) -> bool:
    try:
        a = np.asarray(attempt)
    except (ValueError, TypeError):
        return False
    return a.shape == truth.shape and a.dtype.kind in "iu" and bool(np.array_equal(a, truth))


def score_submission(sub: Mapping, tasks: Iterable[Task] | Mapping[str, list]) -> ScoreResult:
    """ARC Prize score of ``sub`` against tasks with known test outputs.

    ``tasks`` may also be a solutions mapping ``{task_id: [output grid, ...]}``. Missing
    or malformed entries count as wrong (check with ``validate_submission`` first).
    """
    truth = _outputs(tasks)
    per_task: dict[str, list[bool]] = {}
    for tid, outputs in truth.items():
        entries = sub.get(tid) if isinstance(sub.get(tid), list) else []
        solved = []
        for i, y in enumerate(outputs):
            e = entries[i] if i < len(entries) and isinstance(entries[i], dict) else {}
            solved.append(any(_same(e.get(k), y) for k in ("attempt_1", "attempt_2") if k in e))
        per_task[tid] = solved
    fractions = [sum(s) / len(s) if s else 0.0 for s in per_task.values()]
    score = sum(fractions) / len(fractions) if fractions else 0.0
    full = sum(1 for s in per_task.values() if s and all(s))
    return ScoreResult(score, full, len(per_task), per_task)


def format_score(result: ScoreResult) -> str:
    """``score: X.XXXX (S/T tasks)``."""
    return f"score: {result.score:.4f} ({result.solved_tasks}/{result.total} tasks)"
