"""`run(config)`: load -> TTT -> inference over views -> selection -> submission, under a budget.

What a competitor runs (the Kaggle notebook, `arc-ttft run`, the dry run). Guarantees:
- a complete, valid ``submission.json`` from the first seconds (fallback attempts), rewritten
  atomically after every inference chunk, and only by the process that owns the run (a
  worker writing its own shard would leave a file short of tasks): kill any process at
  any moment and the file on disk is valid;
- the budget counts from ``started_at`` (the notebook's first cell on Kaggle, where the 12
  hours include installs and loading), and ``schedule.run_shard`` orders the work so that
  every task gets inference before TTT takes what is left;
- per-task results on disk (``tasks/<id>/``: ``ttt.json``, ``answers.json``, the probe's
  ``answers.base.json``; adapters under ``scratch_dir``), so ``--resume`` trains nothing
  twice; a fresh run clears what an earlier run left;
- a fault in one task (exception, out-of-memory, hung inference) falls that task or chunk
  back, and a stage that fails outright (a model that cannot load) ends that stage: the
  run still finishes normally, and the summary names the fault.
Several GPUs: one worker process per GPU (``workers``); one shard's work on real models
is ``shard``; the per-task files are ``results``.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_ttft import budget as B
from arc_ttft import config as C
from arc_ttft import submission
from arc_ttft.events import EventLog
from arc_ttft.results import clear_previous_run, read_ttt, write_submission_now
from arc_ttft.shard import process_shard
from arc_ttft.tasks import load_tasks, select_tasks
from arc_ttft.workers import WORKER_CONFIG, run_workers, shard_tasks


@dataclass
class RunResult:
    """Where a run's outputs are and how it went."""

    output: Path
    submission: Path
    n_tasks: int
    score: submission.ScoreResult | None
    seconds: float
    faults: list[str] = field(default_factory=list)  # one line per stage that failed
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs_on: dict[str, Any] = field(default_factory=dict)  # auto.describe: device, choices

    def score_line(self) -> str | None:
        return submission.format_score(self.score) if self.score is not None else None


# ---------------------------------------------------------------------------------------
# run()
# ---------------------------------------------------------------------------------------


def use_shrunk_vocab(cfg: C.RunConfig, events: EventLog) -> C.RunConfig:
    """With ``shrink_vocab``, train and serve the shrunk copy of the model (shrunk_vocab.py).

    Both stages must see the same folder: adapters trained on the shrunk model only fit it.
    The sequence length is resolved from the original name first (the registry knows it,
    the cache folder does not).
    """
    if not cfg.model.shrink_vocab:
        return cfg
    import copy

    from arc_ttft import models
    from arc_ttft import shrunk_vocab as vocab

    folder = vocab.shrunk_folder(cfg.model)
    out = copy.deepcopy(cfg)
    out.model.max_seq_len = models.resolve_max_seq_len(cfg.model)
    out.model.model, out.model.shrink_vocab, out.model.random_weights = str(folder), False, False
    events.log("shrink_vocab", source=cfg.model.model, folder=str(folder))
    return out


def start_time(cfg: C.RunConfig, clock: B.Clock | B.FakeClock) -> float | None:
    """The budget's start on ``clock``: from ``started_at`` (or $ARC_TTFT_STARTED_AT), so
    that time spent before ``run`` (installs, imports: Kaggle counts them) is counted."""
    started = cfg.budget.started_at
    if started is None and os.environ.get("ARC_TTFT_STARTED_AT"):
        started = float(os.environ["ARC_TTFT_STARTED_AT"])
    if started is None:
        return None
    return clock.now() - max(0.0, time.time() - started)


def run(cfg: C.RunConfig, *, clock: B.Clock | None = None, progress: bool = True) -> RunResult:
    """Run the whole pipeline; see the module docstring for the guarantees.

    A stage that fails (a model that cannot load, a dead worker) is logged as a fault and
    its tasks keep their fallback answers: ``run`` returns normally, and the summary names
    the fault.
    """
    C.validate(cfg)
    clock = clock or B.Clock()
    guard = B.Budget(
        clock,
        cfg.budget.budget_seconds(),
        cfg.budget.margin_seconds(),
        start=start_time(cfg, clock),
    )
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        clear_previous_run(cfg, out)
    events = EventLog(out / "run.jsonl")
    # Every `auto` made concrete once, here: config.json and the workers get the choices.
    from arc_ttft import auto

    machine = auto.machine_for(cfg.profile)
    cfg = auto.resolve(cfg, machine)
    runs_on = auto.describe(cfg, machine)
    events.log("decisions", **runs_on)
    for w in runs_on["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if progress:
        print(auto.describe_line(runs_on), flush=True)
    C.save(cfg, out / "config.json")

    loaded = load_tasks(cfg.data.challenges, cfg.data.solutions, skip_invalid=cfg.data.skip_invalid)
    for p in loaded.problems:
        events.log("invalid", problem=str(p))
    tasks = select_tasks(loaded.tasks, cfg.data.tasks or None, cfg.data.max_tasks)
    events.log(
        "start",
        tasks=len(tasks),
        budget_seconds=cfg.budget.budget_seconds(),
        deadline_in=round(guard.remaining(), 1),
        source=cfg.data.challenges,
    )
    # A valid submission before any model is loaded.
    write_submission_now(out, tasks, cfg.infer.fallback)

    faults: list[str] = []
    try:
        import torch

        cfg = use_shrunk_vocab(cfg, events)
        n_workers = cfg.workers or max(1, torch.cuda.device_count())
        # On a GPU even one worker is a process of its own: one whose call was abandoned
        # (holding GPU memory) is replaced by a fresh process that has all of it.
        if (n_workers > 1 or torch.cuda.is_available()) and len(tasks) > 1:
            C.save(cfg, out / WORKER_CONFIG)  # resolved: the workers run exactly this
            shards = shard_tasks(tasks, n_workers, cfg.model.format, cfg.ttt.ttt_steps)
            faults += run_workers(shards, cfg, out, guard, events, tasks)
        else:
            publish = lambda: write_submission_now(out, tasks, cfg.infer.fallback)  # noqa: E731
            report = process_shard(
                tasks, cfg, out, guard, events, progress=progress, publish_fn=publish
            )
            faults += report.faults
    except Exception as e:  # noqa: BLE001 - the submission on disk stays; the run ends normally
        events.log(
            "fault", where="run", error=repr(e)[:500], traceback=traceback.format_exc()[-2000:]
        )
        faults.append(f"run: {type(e).__name__}: {str(e)[:200]}")

    sub = write_submission_now(out, tasks, cfg.infer.fallback)
    problems = submission.validate_submission(sub, tasks)
    assert not problems, problems  # build_submission fills every gap; this is a bug if hit
    score = None
    if all(ex.output is not None for t in tasks for ex in t.test):
        score = submission.score_submission(sub, tasks)
    result = RunResult(
        out, out / "submission.json", len(tasks), score, round(guard.elapsed(), 2), faults=faults,
        runs_on=runs_on,
    )  # fmt: skip
    result.tasks = {t.id: {"ttt": read_ttt(out, t.id)} for t in tasks}
    from arc_ttft import report

    header = {
        "model": cfg.model.model,
        "challenges": cfg.data.challenges,
        "budget used": f"{guard.fraction_used():.1%} of {cfg.budget.budget_seconds():.0f} s",
        "ttt steps (target)": cfg.ttt.ttt_steps,
        "views": cfg.infer.views,
        "runs on": auto.describe_line(runs_on),
        "faults": "; ".join(faults) if faults else "none",
    }
    report.write_outputs(out, tasks, sub, score, events, header)
    events.log(
        "end",
        seconds=result.seconds,
        score=score.score if score else None,
        used=round(guard.fraction_used(), 4),
        faults=len(faults),
    )
    return result


__all__ = ["RunResult", "run", "start_time", "use_shrunk_vocab"]
