"""`arc-ttft lora-rank-sweep`: train and validation loss per LoRA rank.

``run_rank_sweep`` trains one adapter per task and LoRA rank on all train pairs but one,
and reports the mean train loss (last steps) and the validation loss on the held-out pair:
lora-rank-sweep.csv (per task), lora-rank-sweep-summary.csv, .md and a .png plot.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arc_ttft.config import ConfigError, at_least, command_line, option
from arc_ttft.research.candidates import int_list, write_csv

# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


@dataclass
class RankSweepConfig:
    """`arc-ttft lora-rank-sweep`: train and validation loss per LoRA rank."""

    ranks: list[int] = option([4, 8, 16, 32, 64], "LoRA ranks to compare (comma separated).")
    challenges: str = option("arc1-eval", "Tasks: challenges JSON, folder or bundled set name.")
    tasks: list[str] = option([], "Only these task ids (comma separated).")
    max_tasks: int | None = option(8, "Only the first N tasks with at least 2 train pairs.")
    ttt_steps: int = option(16, "Optimizer steps per task and rank.")
    model: str = option("tiny", "Model (registry name, hub id or folder).")
    random_weights: bool = option(False, "Random weights (timing only; losses then mean little).")
    format: str = option("digits", "Grid text format.")
    max_seq_len: int | None = option(None, "Longest sequence (default: the registry's).")
    learning_rate: float = option(1e-4, "Peak learning rate.")
    alpha_ratio: float = option(
        2.0, "LoRA alpha = ratio x rank (keeps the update scale comparable across ranks)."
    )
    lora_targets: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that get LoRA adapters.",
    )
    last_k: int = option(4, "Train loss = mean of the last K steps.")
    device: str = option("auto", "auto (cuda when available), cpu, cuda, ...")
    seed: int = option(0, "Seed for views and adapter initialisation.")
    output: str = option("benchmarks", "Folder for lora-rank-sweep.csv / .png / .md.")

    def __post_init__(self) -> None:
        self.ranks = int_list("ranks", self.ranks)

    def problems(self) -> list[str]:
        out = []
        if not self.ranks or min(self.ranks) < 1:
            out.append(f"ranks: {self.ranks} needs values >= 1")
        return out + at_least(self, 1, "ttt_steps", "last_k")


# ---------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------


@dataclass
class RankSweepResult:
    per_task: list[dict[str, Any]]  # rank, task_id, train_loss, val_loss, base_val_loss, ...
    summary: list[dict[str, Any]]  # rank, n_tasks, train_mean, train_sem, val_mean, val_sem
    table: str
    paths: dict[str, str]


def _mean_sem(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n)


def _sweep_tasks(cfg: RankSweepConfig):
    from arc_ttft import tasks as T

    loaded = T.load_tasks(cfg.challenges, skip_invalid=True).tasks
    chosen = T.select_tasks(loaded, cfg.tasks or None)
    usable = [t for t in chosen if len(t.train) >= 2]  # one pair held out, one trained on
    if cfg.max_tasks is not None:
        usable = usable[: cfg.max_tasks]
    if not usable:
        raise ConfigError(
            [f"challenges: no task in {cfg.challenges!r} has 2+ train pairs (one is held out)"]
        )
    return usable


def run_rank_sweep(cfg: RankSweepConfig, *, progress: bool = True, tasks=None) -> RankSweepResult:
    """Per rank and task: fresh adapter, ``ttt_steps`` steps on all train pairs but the
    last, then the loss on the held-out last pair. Writes lora-rank-sweep.csv (per task),
    lora-rank-sweep-summary.csv, .md and .png to ``cfg.output``.

    ``tasks`` (a list of tasks.Task) replaces loading ``cfg.challenges``.
    """
    import torch

    from arc_ttft import models, ttt, ttt_samples
    from arc_ttft.config import ModelConfig, TTTConfig, validate

    validate(cfg)
    task_list = list(tasks) if tasks is not None else _sweep_tasks(cfg)
    task_list = [t for t in task_list if len(t.train) >= 2]
    mcfg = ModelConfig(model=cfg.model, random_weights=cfg.random_weights, format=cfg.format)
    device = models.default_device() if cfg.device == "auto" else cfg.device
    model, tok = models.load_model(mcfg, device=device, for_training=True)
    max_len = cfg.max_seq_len or models.default_seq_len(cfg.model)

    def val_loss(m, sample) -> float:
        m.eval()
        with torch.no_grad():
            loss, _ = ttt_samples.answer_loss(m, ttt_samples.pack([sample], device))
        return float(loss)

    holdouts = {
        t.id: ttt_samples.holdout_sample(t, len(t.train) - 1, cfg.format, tok, max_len)
        for t in task_list
    }
    base_val = {t.id: val_loss(model, holdouts[t.id]) for t in task_list}
    per_task: list[dict[str, Any]] = []
    for rank in cfg.ranks:
        tcfg = TTTConfig(
            ttt_steps=cfg.ttt_steps,
            lora_rank=rank,
            lora_alpha=cfg.alpha_ratio * rank,
            lora_targets=list(cfg.lora_targets),
            learning_rate=cfg.learning_rate,
            seed=cfg.seed,
        )
        pm = ttt.prepare_peft_model(model, tcfg)
        for i, task in enumerate(task_list):
            seed = cfg.seed + i
            ttt.reset_adapter(pm, seed)
            samples = ttt_samples.make_samples(
                task, cfg.format, tok, cfg.ttt_steps, seed, max_len, holdout=len(task.train) - 1
            )
            losses, _, _, seconds = ttt.train_steps(pm, samples, tcfg, cfg.ttt_steps)
            tail = losses[-cfg.last_k :]
            rec = {
                "rank": rank,
                "task_id": task.id,
                "train_loss": round(sum(tail) / len(tail), 5),
                "val_loss": round(val_loss(pm, holdouts[task.id]), 5),
                "base_val_loss": round(base_val[task.id], 5),
                "steps": len(losses),
                "seconds": round(seconds, 3),
            }
            per_task.append(rec)
            if progress:
                print(f"[rank-sweep] r={rank} {task.id}: train {rec['train_loss']:.4f} "
                      f"val {rec['val_loss']:.4f}", file=sys.stderr, flush=True)  # fmt: skip
        model = pm.unload()  # the base model back, without this rank's adapter
    summary = _summarise(per_task, cfg.ranks)
    table = format_rank_table(summary, cfg, len(task_list))
    paths = write_rank_outputs(per_task, summary, table, cfg)
    return RankSweepResult(per_task, summary, table, paths)


def _summarise(per_task: list[dict[str, Any]], ranks: list[int]) -> list[dict[str, Any]]:
    out = []
    for rank in ranks:
        recs = [r for r in per_task if r["rank"] == rank]
        tm, ts = _mean_sem([r["train_loss"] for r in recs])
        vm, vs = _mean_sem([r["val_loss"] for r in recs])
        bm, _ = _mean_sem([r["base_val_loss"] for r in recs])
        steps = sum(r["steps"] for r in recs)
        out.append({
            "rank": rank, "n_tasks": len(recs),
            "train_mean": round(tm, 5), "train_sem": round(ts, 5),
            "val_mean": round(vm, 5), "val_sem": round(vs, 5),
            "base_val_mean": round(bm, 5),
            "sec_per_step": round(sum(r["seconds"] for r in recs) / max(1, steps), 4),
        })  # fmt: skip
    return out


def format_rank_table(summary: list[dict[str, Any]], cfg: RankSweepConfig, n_tasks: int) -> str:
    lines = [
        f"# LoRA rank sweep ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `{command_line(cfg, 'lora-rank-sweep')}`",
        "",
        f"{n_tasks} tasks, {cfg.ttt_steps} steps per task and rank, alpha = {cfg.alpha_ratio:g} "
        f"x rank, lr {cfg.learning_rate:g}. Train loss: mean of the last {cfg.last_k} steps. "
        "Validation: the loss on each task's last train pair, held out of training "
        "(other pairs as examples, identity view). Mean +- standard error over tasks.",
        "",
        "| rank | tasks | train loss | val loss | val loss before TTT | s/step |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['rank']} | {s['n_tasks']} | {s['train_mean']:.4f} +- {s['train_sem']:.4f} | "
            f"{s['val_mean']:.4f} +- {s['val_sem']:.4f} | {s['base_val_mean']:.4f} | "
            f"{s['sec_per_step']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_rank_outputs(per_task, summary, table, cfg: RankSweepConfig) -> dict[str, str]:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": str(out / "lora-rank-sweep.csv"),
        "summary_csv": str(out / "lora-rank-sweep-summary.csv"),
        "markdown": str(out / "lora-rank-sweep.md"),
        "png": str(out / "lora-rank-sweep.png"),
    }
    write_csv(paths["csv"], per_task)
    write_csv(paths["summary_csv"], summary)
    Path(paths["markdown"]).write_text(table)
    plot_rank_sweep(summary, paths["png"], title=f"LoRA rank sweep: {cfg.model}")
    return paths


def plot_rank_sweep(summary: list[dict[str, Any]], path: str, title: str = "") -> None:
    """Loss vs rank (log2 x axis), train and validation lines with standard-error bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ranks = [s["rank"] for s in summary]
    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=150)
    ax.errorbar(ranks, [s["train_mean"] for s in summary], yerr=[s["train_sem"] for s in summary],
                marker="o", ms=4, capsize=3, lw=1.5, label="train (last steps)")  # fmt: skip
    ax.errorbar(ranks, [s["val_mean"] for s in summary], yerr=[s["val_sem"] for s in summary],
                marker="s", ms=4, capsize=3, lw=1.5, label="validation (held-out pair)")  # fmt: skip
    ax.axhline(summary[0]["base_val_mean"], color="grey", ls=":", lw=1, label="validation, no TTT")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks)
    ax.set_xticklabels([str(r) for r in ranks])
    ax.set_xlabel("LoRA rank")
    ax.set_ylabel("cross-entropy (answer tokens)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
