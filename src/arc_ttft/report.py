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


def _answer_cell(ans: dict[str, Any], test: int, truth: Any) -> str:
    """``3x3 ok (8; adapter)``: the first attempt's shape, whether an attempt is right
    ("ok", or "ok 2nd" by the second attempt), its top votes and where it came from."""
    attempts, sels = ans.get("attempts", []), ans.get("selections", [])
    if test >= len(attempts):
        return "-"
    pair = attempts[test]

    def right(k: str) -> bool:
        return truth is not None and np.array_equal(np.asarray(pair[k]), np.asarray(truth))

    votes = [c.get("count", 0) for c in sels[test].get("candidates", [])[:3]] if sels else []
    source = (ans.get("sources") or [["?"]])[test][0]
    mark = "**ok**" if right("attempt_1") else "**ok 2nd**" if right("attempt_2") else "wrong"
    shown = "/".join(map(str, votes)) or "no candidate"
    return f"{_shape(pair['attempt_1'])} {mark} ({shown}; {source})"


def size_seen(task: Task, test_index: int) -> bool:
    """Whether some demonstration input has the shape of test input ``test_index``.

    A rule that moves cells (a flip, a rotation, a tiling) must then be applied at a size
    the demonstrations never showed; small models often learn such rules per size."""
    shape = np.shape(task.test[test_index].input)
    return any(np.shape(ex.input) == shape for ex in task.train)


def compare_runs(base_dir: Path, ttt_dir: Path, tasks: list[Task]) -> str:
    """Markdown: per task and test input, its size (``new`` when no demonstration input
    has it), the first attempt of a run without TTT and of a run with it (shape, right or
    wrong, top votes, where it came from), the TTT steps and final loss, and what changed;
    above the table, test inputs solved at seen and at new sizes. Both runs must be over
    ``tasks``."""
    base_cfg = _read(Path(base_dir) / "config.json") or {}
    ttt_cfg = _read(Path(ttt_dir) / "config.json") or {}
    inf, ttt = ttt_cfg.get("infer", {}), ttt_cfg.get("ttt", {})
    lines = [
        "| task | test | size | without TTT | with TTT | TTT steps | final loss | change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    counts = {"gained": 0, "lost": 0}
    # [seen, new] x [test inputs, solved without TTT, solved with TTT]
    by_size = {True: [0, 0, 0], False: [0, 0, 0]}
    for t in tasks:
        b = _read(Path(base_dir) / "tasks" / t.id / "answers.json") or {}
        a = _read(Path(ttt_dir) / "tasks" / t.id / "answers.json") or {}
        a = a or _read(Path(ttt_dir) / "tasks" / t.id / "answers.base.json") or {}
        info = _read(Path(ttt_dir) / "tasks" / t.id / "ttt.json") or {}
        loss = info.get("final_loss")
        for i, ex in enumerate(t.test):
            cells = [_answer_cell(b, i, ex.output), _answer_cell(a, i, ex.output)]
            ok = ["**ok" in c for c in cells]
            change = {(False, True): "gained", (True, False): "lost"}.get(tuple(ok), "")
            if change:
                counts[change] += 1
            seen = size_seen(t, i)
            by_size[seen] = [n + k for n, k in zip(by_size[seen], (1, *ok))]
            size = _shape(ex.input) + ("" if seen else " new")
            shown = f"{loss:.4f}" if isinstance(loss, (int, float)) else "-"
            if info.get("view_losses"):  # ttt_colours=fit: the family it chose
                shown += f" ({info.get('views')})"
            row = [t.id, i, size, *cells, info.get("steps", 0), shown, change]
            lines.append(_table_row(row))
    head = [
        f"- without TTT: `{base_dir}` (model {base_cfg.get('model', {}).get('model')})",
        f"- with TTT: `{ttt_dir}`: adapters trained on views with `ttt_transforms="
        f"{ttt.get('ttt_transforms')}` (geometry; pair order always varies) and `ttt_colours="
        f"{ttt.get('ttt_colours', 'permute')}`, asked in `view_transforms="
        f"{inf.get('view_transforms')}` ({inf.get('views')} views)",
        f"- test inputs gained by TTT: {counts['gained']}, lost: {counts['lost']}",
        *(
            f"- test inputs of a size {what}: {n}, solved without TTT {before}, with TTT {after}"
            for what, (n, before, after) in (
                ("some demonstration shows", by_size[True]),
                ("no demonstration shows (new)", by_size[False]),
            )
        ),
        "- a cell: the first attempt's shape, right or wrong, its top votes, and its source",
        "",
    ]
    return "\n".join(head + lines) + "\n"
