"""`arc-ttft lora-rank-sweep` on the tiny offline model."""

from __future__ import annotations

import csv
import math

import numpy as np

from arc_ttft.research import rank_sweep
from arc_ttft.tasks import Example, Task


def _flip_task(seed: int) -> Task:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(4):
        g = rng.integers(0, 10, size=(3, 4)).astype(np.int8)
        pairs.append(Example(g, g[:, ::-1].copy()))
    return Task(f"flip{seed}", pairs[:3], pairs[3:])


def test_rank_sweep_writes_csv_and_plot(tmp_path):
    cfg = rank_sweep.RankSweepConfig(ranks=[2, 8], ttt_steps=3, last_k=2, output=str(tmp_path))
    res = rank_sweep.run_rank_sweep(cfg, progress=False, tasks=[_flip_task(0), _flip_task(1)])
    assert len(res.per_task) == 4
    for rec in res.per_task:
        assert math.isfinite(rec["train_loss"]) and math.isfinite(rec["val_loss"])
        assert rec["steps"] == 3
    assert [s["rank"] for s in res.summary] == [2, 8]
    assert all(s["n_tasks"] == 2 for s in res.summary)
    with open(res.paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["task_id"] for r in rows} == {"flip0", "flip1"}
    png = (tmp_path / "lora-rank-sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "| 2 | 2 |" in res.table
