"""Demonstration recall: proof that training changes the answers the pipeline writes.

After per-task TTT, each train pair of a task is asked as if it were a test input, through
exactly the path a test input takes (leave-one-out prompt, N views, inversion, voting,
re-scoring). A model that learned its training data recalls it; a broken chain (labels
shifted by a token, the adapter not applied at inference, a prompt built differently in
training and inference, a view inverted wrongly) does not. The same questions asked of the
base model (no adapter) give the "without TTT" figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arc_ttft import config as C
from arc_ttft.events import EventLog
from arc_ttft.tasks import Task, load_tasks, select_tasks

# "Default TTT settings scaled to CPU" for `arc-ttft recall` (flags override any of them).
# The tiny random model cannot learn an ARC rule, only memorise, so training sees the
# plain task only (ttt_views=1: exactly the leave-one-out prompts inference asks) with a
# high LoRA rank and a cosine-annealed rate (a constant rate leaves loss spikes at the
# end, and one wrong token fails a grid); 800 steps, because at 400 the 14x14 answers
# still kept one wrong token (benchmarks/recall.md). LoRA also covers lm_head: the tiny
# model's end-of-text token is its pad token, so its tied embedding row is all zeros and
# its logit is stuck at 0 unless the output layer can move. Inference asks one view: a
# memoriser answers only the prompts it trained on, and other views are prompts it never
# saw (with 4 views they out-voted correct identity answers). Inversion and voting over
# several views are proven with a truthful backend in tests/test_selection.py.
RECALL_DEFAULTS: dict[str, object] = {
    "challenges": "arc1-eval",
    "model": "tiny",
    "max_seq_len": 2048,  # fewer dropped pairs than 1024: more to learn from per prompt
    "ttt_steps": 800,
    "ttt_views": 1,
    "lora_rank": 64,
    "lora_alpha": 128.0,
    "lora_targets": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head",
    "learning_rate": 1e-3,
    "lr_schedule": "cosine",
    "views": 1,
    "rescore": 0,
    "backend": "hf",
    "output": "runs/recall",
}


@dataclass
class RecallResult:
    with_ttt: float
    without_ttt: float
    n: int  # demonstrations asked
    per_task: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # (with, without, n)

    def line(self) -> str:
        return (
            f"recall: {self.with_ttt:.4f} with TTT, {self.without_ttt:.4f} without "
            f"({self.n} demonstrations)"
        )


def demonstration_tasks(task: Task) -> list[Task]:
    """One task per train pair: that pair is the test, the others are the examples."""
    out = []
    for j, ex in enumerate(task.train):
        others = [e for i, e in enumerate(task.train) if i != j]
        out.append(Task(f"{task.id}#{j}", others or [ex], [ex]))
    return out


def _hits(selections: dict, demos: list[Task]) -> dict[str, bool]:
    hits = {}
    for d in demos:
        sel = selections[d.id][0]
        a1, _ = sel.attempts(d, 0)
        hits[d.id] = bool(np.array_equal(np.asarray(a1), d.test[0].output))
    return hits


def measure_recall(
    tasks: list[Task], cfg: C.RunConfig, output: str | Path, *, progress: bool = False
) -> RecallResult:
    """Train an adapter per task, then ask every demonstration with and without it."""
    from arc_ttft import infer, models, selection, ttt

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    events = EventLog(out / "run.jsonl")
    C.save(cfg, out / "config.json")
    results = ttt.run_ttt(
        tasks, cfg.model, cfg.ttt, out / "adapters", events=events, progress=progress
    )
    adapters = {r.task_id: r.adapter for r in results}

    backend = infer.make_backend(cfg)
    max_seq_len = models.resolve_max_seq_len(cfg.model)
    demos = {t.id: demonstration_tasks(t) for t in tasks}
    flat = [d for t in tasks for d in demos[t.id]]
    try:
        kw = dict(seed=cfg.ttt.seed, events=events, adapter_transforms=cfg.ttt.ttt_transforms)
        with_sel = selection.predict_tasks(
            flat, backend, backend.tokenizer, cfg.infer, cfg.model.format,
            {d.id: adapters.get(d.id.rsplit("#", 1)[0]) for d in flat}, max_seq_len, **kw,
        )  # fmt: skip
        base_sel = selection.predict_tasks(
            flat, backend, backend.tokenizer, cfg.infer, cfg.model.format, {}, max_seq_len, **kw
        )
    finally:
        backend.close()
    hit_with, hit_base = _hits(with_sel, flat), _hits(base_sel, flat)
    per_task = {
        t.id: (
            sum(hit_with[d.id] for d in demos[t.id]),
            sum(hit_base[d.id] for d in demos[t.id]),
            len(demos[t.id]),
        )
        for t in tasks
    }
    n = len(flat)
    result = RecallResult(sum(hit_with.values()) / n, sum(hit_base.values()) / n, n, per_task)
    events.log("recall", with_ttt=result.with_ttt, without_ttt=result.without_ttt, n=n)
    return result


def recall_from_config(cfg: C.RunConfig, progress: bool = True) -> RecallResult:
    loaded = load_tasks(cfg.data.challenges, cfg.data.solutions, skip_invalid=cfg.data.skip_invalid)
    tasks = select_tasks(loaded.tasks, cfg.data.tasks or None, cfg.data.max_tasks)
    return measure_recall(tasks, cfg, cfg.output, progress=progress)
