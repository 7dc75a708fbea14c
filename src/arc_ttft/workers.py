"""Several GPUs: one worker process per GPU (``python -m arc_ttft.workers``), the tasks
sharded by estimated cost.

The parent alone writes ``submission.json``, merging the workers' per-task results every
second; at the deadline it sends SIGTERM, then SIGKILL to a worker still alive after
``KILL_GRACE_S``. A worker that dies (OOM, kill), or that ends with ``WORKER_FRESH_EXIT``
because a call it abandoned still holds GPU memory, is replaced by a fresh process for
its unfinished tasks, which resumes from what is on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft import budget as B
from arc_ttft import config as C
from arc_ttft import encoding
from arc_ttft.events import EventLog
from arc_ttft.results import read_answers, write_submission_now
from arc_ttft.shard import process_shard
from arc_ttft.tasks import Task, load_tasks


def shard_tasks(tasks: list[Task], n: int, fmt: str, steps: int) -> list[list[Task]]:
    """Longest-processing-time-first: biggest estimated cost to the least loaded shard."""
    cost = {t.id: encoding.task_tokens(t, fmt) * max(1, steps) for t in tasks}
    shards: list[list[Task]] = [[] for _ in range(n)]
    load = [0.0] * n
    for t in sorted(tasks, key=lambda t: -cost[t.id]):
        i = int(np.argmin(load))
        shards[i].append(t)
        load[i] += cost[t.id]
    order = {t.id: k for k, t in enumerate(tasks)}
    return [sorted(s, key=lambda t: order[t.id]) for s in shards]


MAX_WORKER_RESTARTS = 2  # per GPU: a worker that keeps dying is given up
WORKER_CONFIG = "worker-config.json"  # the resolved config the workers run (shrunk model...)
MERGE_EVERY_S = 1.0
KILL_GRACE_S = 15.0  # after the deadline's SIGTERM, a worker still alive gets SIGKILL


@dataclass
class _Slot:
    gpu: int
    tasks: list[Task]
    proc: subprocess.Popen
    restarts: int = 0
    terminated_at: float | None = None  # when SIGTERM went out (time.monotonic)


def _spawn_worker(
    out: Path, gpu: int, tasks: list[Task], guard: B.Budget, resume: bool, n_workers: int
):
    import torch

    env = dict(os.environ)
    if torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = str(gpu % torch.cuda.device_count())
    elif "OMP_NUM_THREADS" not in env:
        # Workers share the CPU: each taking every core oversubscribes it (measured: a
        # 0.5B TTT step 6x slower with two workers on two cores, not 2x).
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_workers))
    cmd = [
        sys.executable, "-m", "arc_ttft.workers", str(out / WORKER_CONFIG),
        ",".join(t.id for t in tasks), f"{guard.remaining() + guard.margin:.3f}", str(gpu),
        "resume" if resume else "fresh",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env)


def run_workers(
    shards: list[list[Task]],
    cfg: C.RunConfig,
    out: Path,
    guard: B.Budget,
    events: EventLog,
    all_tasks: list[Task],
) -> list[str]:
    """One process per GPU (CUDA_VISIBLE_DEVICES), each running its shard.

    The parent alone writes ``submission.json``: it merges the workers' per-task answers
    every second. A worker that dies (OOM, kill) before finishing its tasks is replaced by
    a new one on the same GPU for the unfinished tasks, while the budget allows. Returns
    one line per fault.
    """
    faults: list[str] = []
    slots = []
    for gpu, shard in enumerate(shards):
        if shard:
            events.log("shard", gpu=gpu, tasks=len(shard))
            proc = _spawn_worker(out, gpu, shard, guard, cfg.resume, len(shards))
            slots.append(_Slot(gpu, shard, proc))
    while any(s.proc.poll() is None for s in slots):
        time.sleep(MERGE_EVERY_S)
        write_submission_now(out, all_tasks, cfg.infer.fallback)
        if guard.expired():
            # SIGTERM first (a worker ends its step and exits); one that does not end
            # within the grace period (hung in a CUDA call) is killed.
            now = time.monotonic()
            for s in slots:
                if s.proc.poll() is not None:
                    continue
                if s.terminated_at is None:
                    s.proc.terminate()
                    s.terminated_at = now
                elif now - s.terminated_at > KILL_GRACE_S:
                    s.proc.kill()
                    events.log("fault", where="worker", gpu=s.gpu, error="killed after SIGTERM")
                    faults.append(f"worker {s.gpu}: killed {KILL_GRACE_S:.0f} s after SIGTERM")
            continue
        for s in slots:
            rc = s.proc.poll()
            if rc in (None, 0):
                continue
            left = unfinished(out, s.tasks)
            events.log("fault", where="worker", gpu=s.gpu, returncode=rc, unfinished=len(left))
            faults.append(f"worker {s.gpu}: exit code {rc}, {len(left)} tasks unfinished")
            if left and s.restarts < MAX_WORKER_RESTARTS and guard.remaining() > 0:
                # The new worker resumes: adapters trained before the death are reused.
                s.tasks, s.restarts = left, s.restarts + 1
                s.proc = _spawn_worker(out, s.gpu, left, guard, True, len(shards))
                events.log("worker_restart", gpu=s.gpu, tasks=len(left), restarts=s.restarts)
            else:
                s.tasks = []  # given up: its tasks keep what is on disk
    for s in slots:
        for e in read_events_safe(out / f"run.worker{s.gpu}.jsonl"):
            if e.get("stage") == "fault":
                faults.append(f"worker {s.gpu} {e.get('where')}: {str(e.get('error'))[:200]}")
    return faults


def read_events_safe(path: Path) -> list[dict[str, Any]]:
    """Events of a log that a killed process may have left with a torn last line."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def worker_main(argv: list[str]) -> int:
    """One GPU worker: ``python -m arc_ttft.workers CONFIG IDS SECONDS GPU resume|fresh``.

    It writes per-task results only; the parent merges them into the submission.
    """
    cfg_path, ids, seconds, gpu, mode = argv
    cfg = C.load(C.RunConfig, cfg_path)
    cfg.resume = cfg.resume or mode == "resume"
    out = Path(cfg.output)
    loaded = load_tasks(cfg.data.challenges, cfg.data.solutions, skip_invalid=True)
    wanted = set(ids.split(","))
    tasks = [t for t in loaded.tasks if t.id in wanted]
    guard = B.Budget(B.Clock(), float(seconds), cfg.budget.margin_seconds())
    events = EventLog(out / f"run.worker{gpu}.jsonl")
    from arc_ttft import models

    # CUDA_VISIBLE_DEVICES shows this worker one GPU; on CPU (tests) workers share the CPU.
    device = models.default_device()
    process_shard(tasks, cfg, out, guard, events, device=device, progress=False, worker=int(gpu))
    return worker_exit(out, tasks, events)


def unfinished(out: Path, tasks: list[Task]) -> list[Task]:
    """The tasks without their adapters' answers on disk (the probe's do not count)."""
    return [t for t in tasks if read_answers(out, t.id, base_ok=False) is None]


WORKER_FRESH_EXIT = 75  # EX_TEMPFAIL: unfinished tasks for a fresh worker


def worker_exit(out: Path, tasks: list[Task], events: EventLog) -> int:
    """A worker's exit code: ``WORKER_FRESH_EXIT`` when a call it abandoned is still
    running (its memory is held until the process ends) and tasks are unfinished, so that
    the parent starts a fresh worker for them; else 0."""
    left = unfinished(out, tasks)
    if B.abandoned_alive() and left:
        events.log("worker_exit", reason="abandoned call", unfinished=len(left))
        return WORKER_FRESH_EXIT
    return 0


if __name__ == "__main__":
    raise SystemExit(B.exit_code(worker_main(sys.argv[1:])))


__all__ = ["WORKER_FRESH_EXIT", "run_workers", "shard_tasks", "worker_exit", "worker_main"]
