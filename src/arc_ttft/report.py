"""A run's human-readable outputs: ``summary.md`` (a table per task) and ``report.html``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft import viz
from arc_ttft.events import EventLog
from arc_ttft.submission import ScoreResult, format_score
from arc_ttft.tasks import Task


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _shape(g: Any) -> str:
    a = np.asarray(g)
    return f"{a.shape[0]}x{a.shape[1]}" if a.ndim == 2 else "?"


# Between the values of a task's test inputs inside one cell ("|" would start a new cell).
PER_TEST = "; "


def task_rows(out: Path, tasks: list[Task], score: ScoreResult | None) -> list[dict[str, Any]]:
    """One row per task from the files the pipeline left in ``out/tasks/<id>/``; values
    per test input are joined with :data:`PER_TEST`."""
    rows = []
    for t in tasks:
        d = out / "tasks" / t.id
        ttt = _read(d / "ttt.json") or {}
        # the adapter's answers, else the probe's (the submission holds those, too)
        ans = _read(d / "answers.json") or _read(d / "answers.base.json") or {}
        sources = ans.get("sources") or [["probe" if ans.get("base") else "model"] * 2] * len(
            ans.get("attempts", [])
        )
        sels = ans.get("selections", [])
        cands = [len(s.get("candidates", [])) for s in sels]
        votes = [
            "/".join(str(c.get("count", 0)) for c in s.get("candidates", [])[:3]) or "-"
            for s in sels
        ]
        attempts = ans.get("attempts", [])
        solved = score.per_task.get(t.id) if score is not None else None
        rows.append(
            {
                "task": t.id,
                "steps": ttt.get("steps", 0),
                "seconds": ttt.get("seconds", 0.0),
                "loss": ttt.get("final_loss"),
                "ttt": ttt.get("stop_reason") or ttt.get("decision") or "-",
                "candidates": PER_TEST.join(map(str, cands)) or "-",
                "votes": PER_TEST.join(votes) or "-",
                "attempts": PER_TEST.join(
                    f"{_shape(a['attempt_1'])}, {_shape(a['attempt_2'])} ({'/'.join(src)})"
                    for a, src in zip(attempts, sources)
                )
                or "fallback",
                "solved": "-" if solved is None else f"{sum(solved)}/{len(solved)}",
            }
        )
    return rows


COLUMNS = [
    "task",
    "TTT steps",
    "TTT s",
    "final loss",
    "TTT stop",
    "candidates",
    "top votes",
    "attempts (shapes)",
    "solved",
]


def _table_row(cells: list[Any]) -> str:
    # A "|" inside a value would add a cell: escape it, so every row has the header's cells.
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def summary_markdown(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The run's summary.md: the header as a list, then one table row per task with
    exactly the columns of :data:`COLUMNS`."""
    lines = ["# arc-ttft run summary", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", _table_row(COLUMNS), "|" + "---|" * len(COLUMNS)]
    for r in rows:
        loss = f"{r['loss']:.4f}" if isinstance(r["loss"], (int, float)) else "-"
        cells = [r["task"], r["steps"], f"{r['seconds']:.1f}", loss, r["ttt"]]
        cells += [r["candidates"], r["votes"], r["attempts"], r["solved"]]
        lines.append(_table_row(cells))
    return "\n".join(lines) + "\n"


def write_outputs(
    out: Path,
    tasks: list[Task],
    sub: dict,
    score: ScoreResult | None,
    events: EventLog,
    header: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``report.html`` next to the submission."""
    header = dict(header or {})
    header.setdefault("tasks", len(tasks))
    if score is not None:
        header["score"] = format_score(score).removeprefix("score: ")  # the key says it
    rows = task_rows(out, tasks, score)
    summary = out / "summary.md"
    summary.write_text(summary_markdown(rows, header))
    answers = {
        tid: [(np.array(a["attempt_1"]), np.array(a["attempt_2"])) for a in entries]
        for tid, entries in ((tid, sub[tid]) for tid in sub)
    }
    report = viz.write_report_html(
        out / "report.html", tasks, answers, None, list(header.items()), title="arc-ttft run report"
    )
    return summary, report
