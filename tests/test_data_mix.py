"""The real-ARC arms' table (research.data_mix.arms_table) from their folders."""

from __future__ import annotations

import json

from arc_ttft.research import data_mix
from arc_ttft.tasks import load_tasks, to_list


def _submission(folder, tasks, right):
    """A submission answering the tasks in ``right`` correctly, the others with [[0]]."""
    folder.mkdir(parents=True)
    sub = {
        t.id: [
            {"attempt_1": to_list(ex.output) if t.id in right else [[0]], "attempt_2": [[0]]}
            for ex in t.test
        ]
        for t in tasks
    }
    (folder / "submission.json").write_text(json.dumps(sub))


def test_arms_table_scores_each_arm_on_the_half_it_held_out(tmp_path):
    a = load_tasks("arc1-eval-small-a").tasks
    b = load_tasks("arc1-eval-small-b").tasks
    arm = tmp_path / "arms" / "gen+train+a"  # trained on half a: scored on b only
    arm.mkdir(parents=True)
    (arm / "summary.json").write_text(json.dumps({"steps": 500, "final_loss": 0.25}))
    (arm / "config.json").write_text(json.dumps({"data": ["arc1-train", "arc1-eval-small-a"]}))
    _submission(arm / "eval" / "arc1-eval-small-b-ttt0", b, set())
    _submission(arm / "eval" / "arc1-eval-small-b-ttt64", b, {b[0].id, b[1].id})
    base = tmp_path / "base"  # the starting model over all 77 tasks
    _submission(base / "arc1-eval-small-ttt0", a + b, {a[0].id})
    _submission(base / "arc1-eval-small-ttt64", a + b, {a[0].id, b[0].id})
    rows = data_mix.arms_table(tmp_path / "arms", base).splitlines()[2:]
    assert rows == [
        "| arc-nano2 (start) | - | 0 | - | a | 0.0256 (1/39) | 0.0256 (1/39) |",
        "| arc-nano2 (start) | - | 0 | - | b | 0.0000 (0/38) | 0.0263 (1/38) |",
        "| gen+train+a | `arc1-train,arc1-eval-small-a` | 500 | 0.250 | b | 0.0000 (0/38) | "
        "0.0526 (2/38) |",
    ]
