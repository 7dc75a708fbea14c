"""ARC palette plots (PNG) and the self-contained HTML report."""

from __future__ import annotations

import re

import numpy as np
import pytest

from arc_ttft import viz
from arc_ttft.tasks import Example, Task


def g(rows):
    return np.array(rows, dtype=np.int8)


def _task(task_id="t1", solved_output=True):
    return Task(
        id=task_id,
        train=[
            Example(g([[1, 0], [0, 2]]), g([[2, 0], [0, 1]])),
            Example(g([[3, 3, 4]]), g([[4, 3, 3]])),
        ],
        test=[Example(g([[5, 6], [7, 8]]), g([[8, 7], [6, 5]]) if solved_output else None)],
    )


def test_palette_is_the_arc_palette():
    assert viz.PALETTE[0] == "#000000" and viz.PALETTE[1] == "#0074D9"
    assert viz.PALETTE[9] == "#870C25" and len(viz.PALETTE) == 10


def test_save_task_png_writes_a_png(tmp_path):
    task = _task()
    preds = [(g([[8, 7], [6, 5]]), g([[0]]))]
    path = viz.save_task_png(task, tmp_path / "sub" / "t1.png", predictions=preds)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    # without predictions or solutions too
    p2 = viz.save_task_png(_task(solved_output=False), tmp_path / "t2.png")
    assert p2.stat().st_size > 1000


def test_plot_task_layout_and_marks():
    task = _task()
    fig = viz.plot_task(task, predictions=[(g([[8, 7], [6, 5]]), None)])
    visible = [ax for ax in fig.axes if ax.axison]
    # 2 train rows x 2 + test row: input, attempt 1, attempt 2, solution
    assert len(visible) == 2 * 2 + 4
    titles = [ax.get_title() for ax in visible]
    assert "attempt 1 ✓" in titles and "solution" in titles and "attempt 2" in titles


def test_plot_grid_colours_match_palette():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    viz.plot_grid(ax, g([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]), "all colours")
    img = ax.images[0]
    rgba = img.cmap(img.norm(img.get_array()))[0]
    hexes = ["#{:02X}{:02X}{:02X}".format(*(int(round(c * 255)) for c in px[:3])) for px in rgba]
    assert hexes == list(viz.PALETTE)


def test_grid_html_is_svg_with_palette_colours():
    snippet = viz.grid_html(g([[0, 1, 1], [9, 9, 4]]), cell_px=10)
    assert snippet.startswith("<svg") and snippet.endswith("</svg>")
    assert 'width="30" height="20"' in snippet
    for colour in ("#000000", "#0074D9", "#870C25", "#FFDC00"):
        assert colour in snippet
    assert snippet.count("<rect") == 4  # runs: [0],[1 1] / [9 9],[4]
    assert "—" in viz.grid_html(None)


def test_report_html_has_tasks_badges_colours_and_no_external_assets(tmp_path):
    t1, t2, t3 = _task("aaa111"), _task("bbb222"), _task("ccc333", solved_output=False)
    answers = {
        "aaa111": [(g([[0]]), g([[8, 7], [6, 5]]))],  # attempt 2 right
        "bbb222": [(g([[1]]), g([[2]]))],
    }
    page = viz.report_html([t1, t2, t3], answers, summary=[("score", "0.5000 (1/2 tasks)")])
    for tid in ("aaa111", "bbb222", "ccc333"):
        assert tid in page
    assert page.count('class="badge solved"') >= 1 and 'class="badge unsolved"' in page
    assert "no solution" in page
    assert "0.5000 (1/2 tasks)" in page and "1/2" in page
    for colour in ("#0074D9", "#FF4136", "#F012BE", "#7FDBFF"):
        assert colour in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # self-contained
    path = viz.write_report_html(tmp_path / "r" / "report.html", [t1], answers)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_html_escapes_ids_and_summary():
    evil = _task('<script>alert("x")</script>')
    page = viz.report_html([evil], {}, summary={"<b>": "<i>"})
    assert "<script>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;" in page and "&lt;i&gt;" in page


def test_solutions_override_and_missing_attempts():
    task = _task(solved_output=False)
    sol = {task.id: [g([[8, 7], [6, 5]])]}
    assert viz.task_solved(task, [(g([[8, 7], [6, 5]]), None)], sol[task.id]) is True
    assert viz.task_solved(task, None, sol[task.id]) is False
    assert viz.task_solved(task, None) is None
    page = viz.report_html([task], {}, sol)
    assert 'class="badge unsolved"' in page and "solution" in page


@pytest.mark.parametrize("bad", [None, [], [[1, 2], [3]], "x"])
def test_malformed_grids_do_not_crash(bad):
    assert "<svg" in viz.grid_html(bad)
    assert viz.attempts_solve([bad], [[1]]) is False
