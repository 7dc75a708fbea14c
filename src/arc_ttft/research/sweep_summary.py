"""The results of `arc-ttft sweep`: each (arm, seed)'s shards merged into one submission
and scored, the mean over seeds with a 95% interval, per rule family or grid-size bucket;
``sweep.jsonl``, ``summary.md`` and ``sweep.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arc_ttft.research.sweep_spec import Arm, Job, SweepSpec, read_result, slug, write_json_atomic
from arc_ttft.tasks import Task

SIZE_BUCKETS = ((5, "sides <= 5"), (10, "sides 6-10"), (20, "sides 11-20"), (30, "sides 21-30"))
# Student's t at 97.5% for 1..10 degrees of freedom; 1.96 beyond (seed counts are small).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


@dataclass
class ArmSeed:
    """One arm under one seed: its shards merged."""

    arm: str
    seed: int
    score: Any  # submission.ScoreResult | None (no solutions, or a shard failed)
    submission: str
    failed_jobs: list[str]
    seconds: float  # summed over its jobs
    ttt_losses: list[float]
    faults: list[str]
    finetune: dict | None = None  # the fine-tune job's result


@dataclass
class ArmRow:
    """One arm over its seeds."""

    arm: str
    settings: str
    scores: list[float | None]  # per seed, in spec order
    mean: float | None
    low: float | None  # 95% interval over seeds (None with one seed)
    high: float | None
    solved: list[int | None]
    total: int
    failed_jobs: int
    groups: dict[str, list[int]]  # family or size bucket -> [solved, total] over seeds


@dataclass
class SweepResult:
    """A finished sweep: per (arm, seed) runs, per-arm rows, the summary and its files."""

    output: Path
    runs: dict[tuple[str, int], ArmSeed]
    rows: list[ArmRow]
    markdown: str
    paths: dict[str, str]
    jobs_run: int  # jobs this call ran (the others were finished already)
    jobs_failed: int


def ttt_final_losses(run_dir: str | Path) -> list[float]:
    """The final TTT loss of every task a run trained (its ``run.jsonl``)."""
    from arc_ttft.events import read_events

    return [
        e["final_loss"]
        for e in read_events(Path(run_dir) / "run.jsonl")
        if e["stage"] == "ttt" and e.get("steps") and e.get("final_loss") is not None
    ]


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


# ---------------------------------------------------------------------------------------
# Merging and the summary
# ---------------------------------------------------------------------------------------


def interval(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean and 95% interval (Student's t, clipped to [0, 1]) of per-seed scores; no
    interval for one seed."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)  # a score lies in [0, 1]


def group_of(task: Task) -> str:
    """A task's rule family (generated ids) or its grid-size bucket (real tasks)."""
    from arc_ttft.training import synthetic

    try:
        return synthetic.family_of(task.id)
    except ValueError:
        grids = [g for ex in task.train + task.test for g in (ex.input, ex.output) if g is not None]
        side = max(max(len(g), len(g[0]) if len(g) else 0) for g in grids)
        return next(name for limit, name in SIZE_BUCKETS if side <= limit)


def _group_order(item: tuple[str, Any]) -> tuple[int, str]:
    # size buckets smallest first, families by name
    buckets = [name for _, name in SIZE_BUCKETS]
    return (buckets.index(item[0]), "") if item[0] in buckets else (len(buckets), item[0])


def summarise(
    spec: SweepSpec, out: Path, tasks: list[Task], jobs: list[Job], jobs_run: int, jobs_failed: int
) -> SweepResult:
    """Merge each (arm, seed)'s shards into one submission, score it, write the summary."""
    from arc_ttft.submission import score_submission

    results = {j.id: read_result(j) or {"status": "missing"} for j in jobs}
    known = all(ex.output is not None for t in tasks for ex in t.test)
    group = {t.id: group_of(t) for t in tasks}
    runs: dict[tuple[str, int], ArmSeed] = {}
    rows = []
    for arm in spec.arms:
        groups: dict[str, list[int]] = {}
        for seed in spec.seeds:
            mine = [j for j in jobs if j.arm == arm.name and j.seed == seed]
            done = [results[j.id] for j in mine if results[j.id].get("status") == "done"]
            failed = [j.id for j in mine if results[j.id].get("status") != "done"]
            merged: dict = {}
            for r in done:
                merged.update(json.loads(Path(r["submission"]).read_text()))
            path = out / "arms" / slug(arm.name) / f"s{seed}" / "submission.json"
            write_json_atomic(path, merged)
            # a failed shard's tasks count as unsolved: the score stays on every task
            score = score_submission(merged, tasks) if known else None
            ft = results.get(mine[0].needs) if mine and mine[0].needs else None
            runs[(arm.name, seed)] = ArmSeed(
                arm.name, seed, score, str(path), failed,
                seconds=round(sum(r["seconds"] for r in done), 1),
                ttt_losses=[x for r in done for x in r["ttt_losses"]],
                faults=[f for r in done for f in r["faults"]],
                finetune=ft,
            )  # fmt: skip
            if score is not None:
                for tid, flags in score.per_task.items():
                    g = groups.setdefault(group[tid], [0, 0])
                    g[0] += int(bool(flags) and all(flags))
                    g[1] += 1
        per_seed = [runs[(arm.name, s)] for s in spec.seeds]
        scores = [r.score.score if r.score else None for r in per_seed]
        got = [s for s in scores if s is not None]
        mean, low, high = interval(got) if got else (None, None, None)
        rows.append(
            ArmRow(
                arm=arm.name,
                settings=_settings(arm),
                scores=scores,
                mean=mean,
                low=low,
                high=high,
                solved=[r.score.solved_tasks if r.score else None for r in per_seed],
                total=len(tasks),
                failed_jobs=sum(len(r.failed_jobs) for r in per_seed),
                groups=dict(sorted(groups.items(), key=_group_order)),
            )
        )
    when = time.strftime("%Y-%m-%d %H:%M")
    for row in rows:
        append_jsonl(out / "sweep.jsonl", {"event": "arm", "when": when, **dataclasses.asdict(row)})
    paths = {"summary": str(out / "summary.md"), "record": str(out / "sweep.jsonl")}
    if known:
        paths["plot"] = str(sweep_plot(rows, out / "sweep.png"))
    markdown = summary_markdown(spec, rows, len(tasks))
    (out / "summary.md").write_text(markdown + "\n")
    return SweepResult(out, runs, rows, markdown, paths, jobs_run, jobs_failed)


def _settings(arm: Arm) -> str:
    parts = [f"{k}={v}" for k, v in arm.run.items()]
    if arm.finetune is not None:
        parts.insert(0, "finetune(" + ", ".join(f"{k}={v}" for k, v in arm.finetune.items()) + ")")
    return ", ".join(parts) or "(shared settings)"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def summary_markdown(spec: SweepSpec, rows: list[ArmRow], n_tasks: int) -> str:
    """The per-arm table (mean, 95% interval over seeds, per seed) and the per-group one."""
    shared = ", ".join(f"{k}={v}" for k, v in spec.run.items()) or "-"
    lines = [
        f"# Sweep `{spec.name}`: {len(rows)} arms x {len(spec.seeds)} seeds on "
        f"`{spec.challenges}` ({n_tasks} tasks, {spec.shards} shards)",
        "",
        f"Shared run settings: {shared}. Score: ARC Prize score of the merged submission; "
        "mean over seeds with a 95% interval (Student's t).",
        "",
        "| arm | settings | score (mean) | 95% interval | per seed | solved per seed | failed jobs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = "-" if r.low is None else f"{r.low:.4f} to {r.high:.4f}"
        lines.append(
            f"| {r.arm} | {r.settings} | {_pct(r.mean)} | {ci} | "
            f"{', '.join(map(_pct, r.scores))} | "
            f"{', '.join('-' if s is None else f'{s}/{r.total}' for s in r.solved)} | "
            f"{r.failed_jobs} |"
        )
    names = [g for g, _ in sorted({g: 0 for r in rows for g in r.groups}.items(), key=_group_order)]
    if names:
        lines += ["", "Solved per group (family or grid size), over all seeds:", "",
                  "| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]  # fmt: skip
        for r in rows:
            cells = [f"{r.groups[g][0]}/{r.groups[g][1]}" if g in r.groups else "" for g in names]
            lines.append(f"| {r.arm} | " + " | ".join(cells) + " |")
        lines += ["", "![per-arm scores](sweep.png)"]
    return "\n".join(lines)


def sweep_plot(rows: list[ArmRow], path: Path) -> Path:
    """Per-arm mean score with its 95% interval, and each seed's score as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 2), 3.5))
    for i, r in enumerate(rows):
        if r.mean is None:
            continue
        err = None if r.low is None else [[r.mean - r.low], [r.high - r.mean]]
        ax.bar(i, r.mean, 0.6, yerr=err, capsize=4, color="#1E93FF")
        ax.plot([i] * len([s for s in r.scores if s is not None]),
                [s for s in r.scores if s is not None], "o", color="#333333", ms=4)  # fmt: skip
    ax.set_xticks(range(len(rows)), [r.arm for r in rows], rotation=20, ha="right")
    ax.set_ylabel("score (mean over seeds)")
    ax.set_title("sweep: per-arm score, 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
