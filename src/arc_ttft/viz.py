"""ARC grids in the ARC palette: matplotlib figures (PNG) and a self-contained HTML report.

``plot_task`` draws a task's train pairs, then per test input: the input, attempt 1,
attempt 2 and the solution when known. ``report_html`` writes one HTML page (inline SVG,
no external assets) with every task, its attempts and a solved / not solved badge.
Tasks are duck-typed: anything with ``id``, ``train`` and ``test`` lists of examples with
``input`` / ``output`` grids (``arc_ttft.tasks.Task``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The palette of the ARC web interface: 0 black ... 9 maroon.
PALETTE = (
    "#000000",  # 0 black
    "#0074D9",  # 1 blue
    "#FF4136",  # 2 red
    "#2ECC40",  # 3 green
    "#FFDC00",  # 4 yellow
    "#AAAAAA",  # 5 grey
    "#F012BE",  # 6 magenta
    "#FF851B",  # 7 orange
    "#7FDBFF",  # 8 sky
    "#870C25",  # 9 maroon
)
GRID_LINE = "#555555"

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _as_grid(g: Any) -> np.ndarray | None:
    """A 2-D int array, or None for a missing / malformed grid (drawn as an empty cell)."""
    if g is None:
        return None
    try:
        a = np.asarray(g, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if a.ndim != 2 or a.size == 0:
        return None
    return a


def _same(a: Any, b: Any) -> bool:
    a, b = _as_grid(a), _as_grid(b)
    return a is not None and b is not None and a.shape == b.shape and bool((a == b).all())


def attempts_solve(attempts: Sequence[Any] | None, solution: Any) -> bool | None:
    """True when either attempt equals the solution; None when the solution is unknown."""
    if _as_grid(solution) is None:
        return None
    return any(_same(a, solution) for a in (attempts or ()))


def _solutions_for(task: Any, solutions: Sequence[Any] | None) -> list[Any]:
    if solutions is not None:
        return list(solutions) + [None] * (len(task.test) - len(solutions))
    return [ex.output for ex in task.test]


def _attempts_for(predictions: Sequence[Any] | None, i: int) -> tuple[Any, Any]:
    if predictions is None or i >= len(predictions) or predictions[i] is None:
        return (None, None)
    pair = tuple(predictions[i]) + (None, None)
    return pair[0], pair[1]


def task_solved(task: Any, attempts: Sequence[Any] | None, solutions: Sequence[Any] | None = None):
    """True when every test input is solved (Kaggle's rule), None when a solution is unknown."""
    sols = _solutions_for(task, solutions)
    per = [attempts_solve(_attempts_for(attempts, i), s) for i, s in enumerate(sols)]
    if not per or any(p is None for p in per):
        return None
    return all(per)


# ---------------------------------------------------------------------------------------
# matplotlib
# ---------------------------------------------------------------------------------------


def _cmap():
    from matplotlib.colors import ListedColormap

    return ListedColormap(PALETTE, name="arc")


def plot_grid(ax, grid: Any, title: str | None = None) -> None:
    """Draw one grid on ``ax`` in the ARC palette with thin grid lines (None: an empty box)."""
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    g = _as_grid(grid)
    if g is None:
        ax.text(0.5, 0.5, "—", ha="center", va="center", fontsize=14, transform=ax.transAxes)
        for s in ax.spines.values():
            s.set_color("#CCCCCC")
        return
    h, w = g.shape
    ax.imshow(np.clip(g, 0, 9), cmap=_cmap(), vmin=0, vmax=9, interpolation="nearest")
    lw = 0.6 if max(h, w) <= 15 else 0.3
    ax.hlines(np.arange(-0.5, h), -0.5, w - 0.5, colors=GRID_LINE, linewidth=lw)
    ax.vlines(np.arange(-0.5, w), -0.5, h - 0.5, colors=GRID_LINE, linewidth=lw)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xlabel(f"{h}x{w}", fontsize=7, labelpad=1)


def plot_task(
    task: Any, predictions: Sequence[Any] | None = None, solutions: Sequence[Any] | None = None
):
    """A matplotlib Figure: one row per train pair (input, output), then one row per test
    input (input, attempt 1, attempt 2, solution). ``predictions``: per test input a pair
    (attempt_1, attempt_2); ``solutions``: per test input a grid (default: the task's own
    test outputs). Attempts are marked ✓ when they equal the solution.
    """
    from matplotlib.figure import Figure

    sols = _solutions_for(task, solutions)
    show_attempts = predictions is not None
    test_cols = 1 + (2 if show_attempts else 0) + (1 if any(s is not None for s in sols) else 0)
    ncols = max(2, test_cols)
    nrows = len(task.train) + len(task.test)
    fig = Figure(figsize=(2.1 * ncols, 2.1 * max(1, nrows)), constrained_layout=True)
    axes = fig.subplots(max(1, nrows), ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, ex in enumerate(task.train):
        for c, (g, name) in enumerate(((ex.input, "input"), (ex.output, "output"))):
            axes[r, c].set_axis_on()
            plot_grid(axes[r, c], g, f"train {r + 1} {name}")
    for i, ex in enumerate(task.test):
        r = len(task.train) + i
        cells: list[tuple[Any, str]] = [(ex.input, f"test {i + 1} input")]
        if show_attempts:
            for k, a in enumerate(_attempts_for(predictions, i)):
                mark = {True: " ✓", False: " ✗", None: ""}[
                    attempts_solve([a], sols[i]) if a is not None else None
                ]
                cells.append((a, f"attempt {k + 1}{mark}"))
        if test_cols > 1 + (2 if show_attempts else 0):
            cells.append((sols[i], "solution"))
        for c, (g, title) in enumerate(cells):
            axes[r, c].set_axis_on()
            plot_grid(axes[r, c], g, title)
    fig.suptitle(str(task.id), fontsize=10)
    return fig


def save_task_png(
    task: Any,
    path: str | Path,
    predictions: Sequence[Any] | None = None,
    solutions: Sequence[Any] | None = None,
    dpi: int = 100,
) -> Path:
    """Draw ``plot_task`` and write it as a PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_task(task, predictions, solutions)
    fig.savefig(path, dpi=dpi, format="png")
    return path


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------


def grid_html(grid: Any, cell_px: int = 12, title: str | None = None) -> str:
    """An inline SVG of a grid: one rect per run of equal cells in a row, thin grid lines.

    No external assets; a missing grid gives a small grey box with a dash.
    """
    label = f"<title>{html.escape(title)}</title>" if title else ""
    g = _as_grid(grid)
    if g is None:
        s = 3 * cell_px
        return (
            f'<svg class="grid missing" width="{s}" height="{s}" xmlns="http://www.w3.org/2000/svg">'
            f'{label}<rect width="{s}" height="{s}" fill="#EEEEEE" stroke="#CCCCCC"/>'
            f'<text x="50%" y="55%" text-anchor="middle" font-size="{cell_px}">—</text></svg>'
        )
    h, w = g.shape
    W, H = w * cell_px, h * cell_px
    parts = [
        f'<svg class="grid" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'xmlns="http://www.w3.org/2000/svg" shape-rendering="crispEdges">{label}'
    ]
    for y in range(h):
        row = g[y]
        x = 0
        while x < w:
            v = int(row[x])
            end = x + 1
            while end < w and row[end] == v:
                end += 1
            colour = PALETTE[v] if 0 <= v <= 9 else "#FFFFFF"
            parts.append(
                f'<rect x="{x * cell_px}" y="{y * cell_px}" width="{(end - x) * cell_px}" '
                f'height="{cell_px}" fill="{colour}"/>'
            )
            x = end
    lines = "".join(f"M0 {y * cell_px}H{W}" for y in range(h + 1))
    lines += "".join(f"M{x * cell_px} 0V{H}" for x in range(w + 1))
    parts.append(f'<path d="{lines}" stroke="{GRID_LINE}" stroke-width="0.5" fill="none"/>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.summary{border-collapse:collapse;margin-bottom:1em}
table.summary td,table.summary th{border:1px solid #ccc;padding:2px 8px;text-align:left}
section.task{border-top:1px solid #ddd;padding:.6em 0}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin:.4em 0}
figure{margin:0}figcaption{font-size:11px;color:#555}
.pair{display:flex;gap:6px;align-items:center}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;color:#fff}
.solved{background:#2ECC40}.unsolved{background:#FF4136}.unknown{background:#AAAAAA}
h2{font-size:16px;margin:.2em 0}
"""


def _badge(solved: bool | None) -> str:
    if solved is None:
        return '<span class="badge unknown">no solution</span>'
    if solved:
        return '<span class="badge solved">solved</span>'
    return '<span class="badge unsolved">not solved</span>'


def _fig(grid: Any, caption: str, cell_px: int) -> str:
    return f"<figure>{grid_html(grid, cell_px)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _cell_px(task: Any) -> int:
    """Smaller cells for big grids so a 30x30 grid stays about 240 px wide."""
    sizes = [
        np.shape(g)
        for ex in list(task.train) + list(task.test)
        for g in (ex.input, ex.output)
        if g is not None and np.ndim(g) == 2
    ]
    big = max((max(s) for s in sizes), default=10)
    return max(4, min(14, 240 // max(1, big)))


def task_html(
    task: Any,
    attempts: Sequence[Any] | None = None,
    solutions: Sequence[Any] | None = None,
) -> str:
    """One task's section: badge, train pairs, then per test input its attempts and solution."""
    sols = _solutions_for(task, solutions)
    px = _cell_px(task)
    tid = html.escape(str(task.id))
    out = [
        f'<section class="task" id="task-{tid}"><h2>{tid} {_badge(task_solved(task, attempts, sols))}</h2>'
    ]
    out.append('<div class="row">')
    for k, ex in enumerate(task.train):
        out.append(
            f'<div class="pair">{_fig(ex.input, f"train {k + 1} input", px)}'
            f"<span>→</span>{_fig(ex.output, f'train {k + 1} output', px)}</div>"
        )
    out.append("</div>")
    for i, ex in enumerate(task.test):
        a1, a2 = _attempts_for(attempts, i)
        solved = attempts_solve((a1, a2), sols[i])
        out.append(
            f'<div class="row"><div class="pair">{_fig(ex.input, f"test {i + 1} input", px)}'
        )
        out.append("<span>→</span>")
        out.append(_fig(a1, "attempt 1", px) + _fig(a2, "attempt 2", px))
        if sols[i] is not None:
            out.append(_fig(sols[i], "solution", px))
        out.append(f"</div>{_badge(solved) if len(task.test) > 1 else ''}</div>")
    out.append("</section>")
    return "".join(out)


def report_html(
    tasks: Iterable[Any],
    answers: dict[str, Sequence[Any]] | None = None,
    solutions: dict[str, Sequence[Any]] | None = None,
    summary: Sequence[tuple[str, Any]] | dict[str, Any] | None = None,
    title: str = "arc-ttft report",
) -> str:
    """A self-contained HTML page: summary rows, a task index with badges, then every task.

    ``answers``: task id -> per test input (attempt_1, attempt_2) grids; ``solutions``:
    task id -> per test input grid (default: the tasks' own test outputs); ``summary``:
    (label, value) rows shown at the top (e.g. score, budget used).
    """
    tasks = list(tasks)
    answers = answers or {}
    solutions = solutions or {}
    rows = list(summary.items()) if isinstance(summary, dict) else list(summary or [])
    verdicts = {t.id: task_solved(t, answers.get(t.id), solutions.get(t.id)) for t in tasks}
    n_solved = sum(v is True for v in verdicts.values())
    n_known = sum(v is not None for v in verdicts.values())
    note = " (of those with known solutions)" if n_known < len(tasks) else ""
    rows.append(("tasks solved", f"{n_solved}/{n_known}{note}"))
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<table class="summary">',
    ]
    out += [
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    ]
    out.append("</table><p>")
    out += [
        f'<a href="#task-{html.escape(str(t.id))}">{html.escape(str(t.id))}</a> {_badge(verdicts[t.id])} '
        for t in tasks
    ]
    out.append("</p>")
    out += [task_html(t, answers.get(t.id), solutions.get(t.id)) for t in tasks]
    out.append("</body></html>")
    return "\n".join(out)


def write_report_html(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """``report_html(...)`` written to ``path`` (UTF-8, parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(*args, **kwargs), encoding="utf-8")
    return path


__all__ = [
    "PALETTE",
    "grid_html",
    "plot_grid",
    "plot_task",
    "report_html",
    "save_task_png",
    "task_html",
    "task_solved",
    "attempts_solve",
    "write_report_html",
]
