"""The seed's data-mix experiment (notebooks/data_mix.py): fine-tune once per mix with
`arc-ttft finetune` (``training.finetune``), then score each model on the held-out
tasks with and without TTT through ``pipeline.run``, all as one ``arc-ttft sweep``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arc_ttft import config as C
from arc_ttft.submission import score_submission
from arc_ttft.tasks import load_tasks
from arc_ttft.training.config import FinetuneConfig
from arc_ttft.training.finetune import HOLDOUT, resolve_mix


def default_mixes(train_set: str, eval_set: str) -> dict[str, list[str]]:
    """The four mixes: train; eval; train+eval; train + eval minus the held-out tasks.

    Every mix holds out the same seeded share of ``eval_set`` (so every model is scored on
    the same tasks); in ``eval`` and ``train+eval`` those tasks stay in training as well
    (they are trained on what they are scored on: an upper reference), in
    ``train+eval(n-1)`` they are removed.
    """
    return {
        "train": [train_set],
        "eval": [eval_set],
        "train+eval": [train_set, eval_set],
        "train+eval(n-1)": [train_set, eval_set, f"{HOLDOUT}{eval_set}"],
    }


@dataclass
class MixRow:
    """One mix's model, scored on the held-out tasks without and with TTT."""

    mix: str
    data: str
    train_tasks: int
    steps: int
    final_loss: float | None
    holdout_in_training: int  # held-out tasks this model trained on
    solved_base: int
    solved_ttt: int
    total: int
    model_dir: str


def data_mix_experiment(
    work_dir: str | Path,
    *,
    mixes: dict[str, list[str]] | None = None,
    train_set: str = "arc1-train",
    eval_set: str = "arc1-eval",
    finetune_overrides: dict[str, Any] | None = None,
    run_overrides: dict[str, Any] | None = None,
    ttt_steps: int = 8,
    address: str | None = None,
) -> list[MixRow]:
    """Fine-tune once per mix (``finetune_overrides``: FinetuneConfig fields), then score
    each model on the held-out ``eval_set`` tasks through ``pipeline.run`` with
    ``ttt_steps=0`` and with ``ttt_steps`` (``run_overrides``: RunConfig fields).

    It runs as one ``arc-ttft sweep`` (Ray: here, or the cluster at ``address``): two arms
    per mix, one without TTT and one with, sharing the mix's fine-tune."""
    from arc_ttft.research import sweep
    from arc_ttft.research.sweep_spec import read_spec

    work = Path(work_dir)
    mixes = mixes or default_mixes(train_set, eval_set)
    base = {"holdout_fraction": 0.5, "checkpoint_minutes": None, **(finetune_overrides or {})}
    # The held-out ids every mix is scored on: those of eval_set under the shared seed.
    ref = C.from_flat(FinetuneConfig, {**base, "data": [eval_set, f"{HOLDOUT}{eval_set}"]})
    held = resolve_mix(ref).holdout_ids
    arms = {
        f"{name} ttt{steps}": {"finetune": {"data": data}, "run": {"ttt_steps": steps}}
        for name, data in mixes.items()
        for steps in (0, ttt_steps)
    }
    spec = read_spec(
        {
            "name": "data mix",
            "challenges": eval_set,
            "tasks": held,
            "finetune": base,
            "run": {
                "backend": "hf",
                "probe_tasks": 0,
                "budget_minutes": 30.0,
                **(run_overrides or {}),
            },
            "arms": arms,
        }
    )
    out = work / "sweeps" / time.strftime("%Y%m%d-%H%M%S")
    done = sweep.sweep(spec, out, address=address, progress=False)
    rows = []
    for name, data in mixes.items():
        base_run, ttt_run = (done.runs[(f"{name} ttt{s}", 0)] for s in (0, ttt_steps))
        if base_run.failed_jobs or ttt_run.failed_jobs:
            failed = base_run.failed_jobs + ttt_run.failed_jobs
            raise RuntimeError(f"{name}: jobs failed: {', '.join(failed)} (see {out})")
        ft = ttt_run.finetune
        rows.append(
            MixRow(
                mix=name,
                data=",".join(data),
                train_tasks=ft["train_tasks"],
                steps=ft["steps"],
                final_loss=None if ft["final_loss"] is None else round(ft["final_loss"], 4),
                holdout_in_training=len(ft["scored_in_training"]),
                solved_base=base_run.score.solved_tasks if base_run.score else 0,
                solved_ttt=ttt_run.score.solved_tasks if ttt_run.score else 0,
                total=len(held),
                model_dir=ft["model_dir"],
            )
        )
    return rows


def mix_table(rows: list[MixRow]) -> str:
    """The experiment as a markdown table."""
    head = ["mix", "data", "train tasks", "held-out in training", "steps", "final loss",
            "solved (no TTT)", "solved (TTT)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        loss = "-" if r.final_loss is None else f"{r.final_loss:.4f}"
        cells = [r.mix, f"`{r.data}`", r.train_tasks, f"{r.holdout_in_training}/{r.total}",
                 r.steps, loss, f"{r.solved_base}/{r.total}", f"{r.solved_ttt}/{r.total}"]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def mix_plot(rows: list[MixRow], path: str | Path) -> Path:
    """Held-out tasks solved per mix, without and with TTT (grouped bars), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([i - 0.2 for i in x], [r.solved_base for r in rows], 0.4, label="no TTT")
    ax.bar([i + 0.2 for i in x], [r.solved_ttt for r in rows], 0.4, label="TTT")
    ax.set_xticks(x, [r.mix for r in rows])
    ax.set_ylabel(f"held-out tasks solved (of {rows[0].total if rows else 0})")
    ax.set_title("fine-tuning data mix")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------
# The real-ARC arms (scripts/data_mix_arms.sh): a table from their folders
# ---------------------------------------------------------------------------------------


def half_scores(run_dir: str | Path, sets: tuple[str, ...]) -> dict[str, tuple[float, int, int]]:
    """A run's submission scored on each bundled set in ``sets`` it answered: set ->
    (score, solved tasks, tasks). A run over all 77 small evaluation tasks scores on each
    half alike."""
    sub = json.loads((Path(run_dir) / "submission.json").read_text())
    out = {}
    for name in sets:
        tasks = [t for t in load_tasks(name).tasks if t.id in sub]
        if tasks:
            r = score_submission({t.id: sub[t.id] for t in tasks}, tasks)
            out[name] = (r.score, r.solved_tasks, r.total)
    return out


def arms_table(root: str | Path, base_runs: str | Path | None = None) -> str:
    """Markdown: per arm (a folder of ``root`` with ``summary.json`` and ``eval/``) and per
    held-out half it was scored on, the score without and with TTT; ``base_runs`` (a
    folder with ``arc1-eval-small-ttt0`` and ``-ttt64`` runs of the arms' starting model
    over all 77 tasks) adds the starting point."""
    halves = ("arc1-eval-small-a", "arc1-eval-small-b")

    def score(run: Path, half: str) -> str:
        got = half_scores(run, (half,)).get(half) if (run / "submission.json").exists() else None
        return "-" if got is None else f"{got[0]:.4f} ({got[1]}/{got[2]})"

    arms = []  # (name, data, steps, final loss, {half: (run without TTT, run with TTT)})
    if base_runs is not None:
        b = Path(base_runs)
        both = (b / "arc1-eval-small-ttt0", b / "arc1-eval-small-ttt64")
        arms.append(("arc-nano2 (start)", "-", "0", "-", {h: both for h in halves}))
    for arm in sorted(Path(root).iterdir()):
        if not (arm / "summary.json").exists():
            continue
        info = json.loads((arm / "summary.json").read_text())
        data = json.loads((arm / "config.json").read_text())["data"]
        loss = "-" if info.get("final_loss") is None else f"{info['final_loss']:.3f}"
        ev = arm / "eval"
        runs = {
            h: (ev / f"{h}-ttt0", ev / f"{h}-ttt64") for h in halves if (ev / f"{h}-ttt0").exists()
        }
        arms.append((arm.name, f"`{','.join(data)}`", str(info["steps"]), loss, runs))
    rows = [
        "| arm | data | steps | final loss | scored on | no TTT | TTT |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, data, steps, loss, runs in arms:
        for h, (no_ttt, ttt) in runs.items():
            rows.append(
                f"| {name} | {data} | {steps} | {loss} | {h[-1]} | {score(no_ttt, h)} | "
                f"{score(ttt, h)} |"
            )
    return "\n".join(rows)
