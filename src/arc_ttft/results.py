"""Per-task results on disk: what a run writes for each task and reads back, to merge the
submission and to ``--resume`` without training anything twice.

``<output>/tasks/<id>/``: ``ttt.json`` (the adapter and its steps), ``answers.json`` (the
selected attempts with the task's adapter) and the probe's ``answers.base.json``; adapters
live under ``scratch_dir`` (or the output). Files are replaced atomically, and readers
never raise on one a killed worker left unreadable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft import config as C
from arc_ttft import submission
from arc_ttft.events import jsonable
from arc_ttft.tasks import Task

ANSWERS = "answers.json"  # the selected attempts with the task's adapter
ANSWERS_BASE = "answers.base.json"  # the probe's base-model attempts (a fallback)


def task_dir(out: Path, task_id: str) -> Path:
    return out / "tasks" / task_id


def adapters_root(cfg: C.RunConfig, out: Path) -> Path:
    """Where LoRA adapters go: ``<scratch_dir>/adapters``, else ``<output>/adapters``."""
    return Path(cfg.scratch_dir) / "adapters" if cfg.scratch_dir else out / "adapters"


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, default=jsonable))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON at ``path``, or None when missing or unreadable (never raises: the parent
    merges files that workers may be killed while writing)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_answers(
    out: Path, task_id: str, base_ok: bool = True
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The selected attempts of a finished task (with ``base_ok``, the probe's base-model
    attempts when the task has no others), or None."""
    names = (ANSWERS, ANSWERS_BASE) if base_ok else (ANSWERS,)
    for name in names:
        data = read_json(task_dir(out, task_id) / name)
        if data is not None:
            return [
                (np.array(a["attempt_1"], dtype=np.int8), np.array(a["attempt_2"], dtype=np.int8))
                for a in data["attempts"]
            ]
    return None


def earlier_answers(out: Path, task_id: str) -> list[list[list[list[int]]]]:
    """Per test input, the real answers earlier inferences of the task found (an
    adapter's candidates, then the probe's), best first, without fallbacks or repeats."""
    merged: list[list[list[list[int]]]] = []
    for name in (ANSWERS, ANSWERS_BASE):
        data = read_json(task_dir(out, task_id) / name) or {}
        for i, sel in enumerate(data.get("selections", [])):
            if i == len(merged):
                merged.append([])
            merged[i] += [
                c["grid"] for c in sel.get("candidates", []) if c["grid"] not in merged[i]
            ]
    return merged


def read_ttt(out: Path, task_id: str) -> dict[str, Any] | None:
    return read_json(task_dir(out, task_id) / "ttt.json")


def collect_answers(out: Path, tasks: list[Task]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    answers = {}
    for t in tasks:
        a = read_answers(out, t.id)
        if a is not None:
            answers[t.id] = a
    return answers


def write_submission_now(out: Path, tasks: list[Task], fallback: str = "input") -> dict:
    """Rebuild submission.json from every finished task (fallbacks elsewhere), atomically.

    Only the process that owns the run calls this, with every task of the run: a worker
    writing its own shard would leave a file short of the other shards' tasks.
    """
    sub = submission.build_submission(tasks, collect_answers(out, tasks), fallback=fallback)
    submission.write_submission(sub, out / "submission.json")
    return sub


def clear_previous_run(cfg: C.RunConfig, out: Path) -> None:
    """A fresh run (no --resume) must not merge what an earlier run left in its folder."""
    import shutil

    for folder in (out / "tasks", adapters_root(cfg, out)):
        shutil.rmtree(folder, ignore_errors=True)
    for f in [out / "run.jsonl", *out.glob("run.worker*.jsonl")]:
        f.unlink(missing_ok=True)
