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
Several GPUs: one worker process per GPU, tasks sharded by estimated cost; the parent
merges their results every second and replaces a worker that dies.

Over 500 lines: the run's real operations, resume files, sharding and the worker
supervisor are the one place where the stages meet; each part is its own section.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft import budget as B
from arc_ttft import config as C
from arc_ttft import encoding, schedule, submission
from arc_ttft.events import EventLog, jsonable
from arc_ttft.tasks import Task, load_tasks, select_tasks


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
# Per-task results on disk (what --resume reads back)
# ---------------------------------------------------------------------------------------


ANSWERS = "answers.json"  # the selected attempts with the task's adapter
ANSWERS_BASE = "answers.base.json"  # the probe's base-model attempts (a fallback)
DFS_SHARE_OF_TIMEOUT = 0.8  # of an inference call's time limit, for DFS (then scoring)


def task_dir(out: Path, task_id: str) -> Path:
    return out / "tasks" / task_id


def adapters_root(cfg: C.RunConfig, out: Path) -> Path:
    """Where LoRA adapters go: ``<scratch_dir>/adapters``, else ``<output>/adapters``."""
    return Path(cfg.scratch_dir) / "adapters" if cfg.scratch_dir else out / "adapters"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, default=jsonable))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    """The JSON at ``path``, or None when missing or unreadable (never raises: the parent
    merges files that workers may be killed while writing)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_answers(
    out: Path, task_id: str, base_ok: bool = True
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The selected attempts of a finished task (with ``base_ok``, the probe's base-model
    attempts when the task has no others), or None."""
    names = (ANSWERS, ANSWERS_BASE) if base_ok else (ANSWERS,)
    for name in names:
        data = _read_json(task_dir(out, task_id) / name)
        if data is not None:
            return [
                (np.array(a["attempt_1"], dtype=np.int8), np.array(a["attempt_2"], dtype=np.int8))
                for a in data["attempts"]
            ]
    return None


def earlier_answers(out: Path, task_id: str) -> list[list[list[list[int]]]]:
    """Per test input, the real answers earlier inferences of the task found (an
    adapter's candidates, then the probe's), best first, without fallbacks or repeats."""
    merged: list[list[list[list[int]]]] = []
    for name in (ANSWERS, ANSWERS_BASE):
        data = _read_json(task_dir(out, task_id) / name) or {}
        for i, sel in enumerate(data.get("selections", [])):
            if i == len(merged):
                merged.append([])
            merged[i] += [
                c["grid"] for c in sel.get("candidates", []) if c["grid"] not in merged[i]
            ]
    return merged


def read_ttt(out: Path, task_id: str) -> dict[str, Any] | None:
    return _read_json(task_dir(out, task_id) / "ttt.json")


def collect_answers(out: Path, tasks: list[Task]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    answers = {}
    for t in tasks:
        a = read_answers(out, t.id)
        if a is not None:
            answers[t.id] = a
    return answers


def write_submission_now(out: Path, tasks: list[Task], fallback: str = "input") -> dict:
    """Rebuild submission.json from every finished task (fallbacks elsewhere), atomically.

    Only the process that owns the run calls this, with every task of the run: a worker
    writing its own shard would leave a file short of the other shards' tasks.
    """
    sub = submission.build_submission(tasks, collect_answers(out, tasks), fallback=fallback)
    submission.write_submission(sub, out / "submission.json")
    return sub


def clear_previous_run(cfg: C.RunConfig, out: Path) -> None:
    """A fresh run (no --resume) must not merge what an earlier run left in its folder."""
    import shutil

    for folder in (out / "tasks", adapters_root(cfg, out)):
        shutil.rmtree(folder, ignore_errors=True)
    for f in [out / "run.jsonl", *out.glob("run.worker*.jsonl")]:
        f.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# The shard's real operations (schedule.run_shard decides when each runs)
# ---------------------------------------------------------------------------------------


def estimate_tokens(task: Task, fmt: str, max_seq_len: int | None) -> int:
    n = encoding.task_tokens(task, fmt)
    return min(n, max_seq_len) if max_seq_len else n


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


@dataclass
class ShardWork:
    """``schedule.ShardOps`` on real models: TTT with peft, inference with a backend.

    ``worker``: the worker's index when several run (its shared adapter gets a folder of
    its own); ``publish``: what to call after every inference chunk (the single process
    rewrites the submission; a worker leaves the merge to its parent).
    """

    cfg: C.RunConfig
    out: Path
    events: EventLog
    device: str
    progress: bool = True
    worker: int | None = None
    publish_fn: Any = None
    model: Any = None
    tokenizer: Any = None
    backend: Any = None

    @property
    def max_seq_len(self) -> int:
        from arc_ttft import models

        return models.resolve_max_seq_len(self.cfg.model)

    def adapters_dir(self) -> Path:
        root = adapters_root(self.cfg, self.out)
        return root if self.worker is None else root / f"worker{self.worker}"

    def load_trainer(self) -> None:
        from arc_ttft import models, ttt

        model, self.tokenizer = models.load_model(
            self.cfg.model, device=self.device, for_training=True
        )
        self.model = ttt.prepare_peft_model(model, self.cfg.ttt)
        self.events.log(
            "load", what="trainer", model=self.cfg.model.model, vocab=len(self.tokenizer)
        )

    def train(self, task: Task, steps: int, should_stop) -> schedule.TrainOutcome:
        from arc_ttft import models, ttt

        seq_len = self.max_seq_len
        for attempt in range(2):
            try:
                res = ttt.train_task(
                    self.model, self.tokenizer, task, self.cfg.ttt, self.cfg.model.format,
                    seq_len, steps=steps, output_dir=self.adapters_dir(), events=self.events,
                    should_stop=should_stop, progress=self.progress,
                )  # fmt: skip
                break
            except Exception as e:
                if attempt == 0 and models.is_oom(e):
                    self.events.log(
                        "fault", task=task.id, where="ttt", error=repr(e)[:500], oom=True
                    )
                    _free_memory()
                    seq_len = max(256, seq_len // 2)  # retry shorter: drop pairs to fit
                    continue
                _write_json(
                    task_dir(self.out, task.id) / "ttt.json", {"adapter": None, "decision": "fault"}
                )
                raise
        _write_json(task_dir(self.out, task.id) / "ttt.json", res.to_dict())
        return schedule.TrainOutcome(res.steps, res.seconds, res.adapter)

    def train_shared(self, tasks: list[Task], should_stop) -> schedule.TrainOutcome:
        from arc_ttft import ttt

        res = ttt.train_shared(
            self.model, self.tokenizer, tasks, self.cfg.ttt, self.cfg.model.format,
            self.max_seq_len, output_dir=self.adapters_dir(), events=self.events,
            progress=self.progress, should_stop=should_stop,
        )  # fmt: skip
        for t in tasks:
            _write_json(task_dir(self.out, t.id) / "ttt.json", {**res.to_dict(), "shared": True})
        return schedule.TrainOutcome(res.steps, res.seconds, res.adapter)

    def close_trainer(self) -> None:
        self.model = None
        _free_memory()

    def load_backend(self) -> None:
        from arc_ttft import infer

        if B.abandoned_alive() and self.device.startswith("cuda"):
            # Its engine still holds the GPU's memory: a second one would not fit. The
            # worker ends instead and a fresh process takes the rest (_worker_main).
            raise RuntimeError(
                "a call abandoned at its deadline still holds GPU memory; a fresh worker "
                "takes the unfinished tasks"
            )
        self.backend = infer.make_backend(self.cfg, device=self.device)
        # Warm up (vLLM builds its engine at the first call): the load's cost is measured
        # here, not charged to the first inference chunk, whose time scales the reserve.
        tok = self.backend.tokenizer
        self.backend.generate([infer.Request(tok("0\n")["input_ids"], max_new_tokens=1)])
        self.events.log(
            "load", what="backend", backend=self.backend.name, model=self.cfg.model.model,
            vocab=len(self.backend.tokenizer),
        )  # fmt: skip

    def infer(self, tasks: list[Task], adapters, timeout_s: float, base: bool) -> float | None:
        from arc_ttft import selection

        backend = self.backend
        # DFS stops itself before the hard timeout, keeping what it found and leaving time
        # to score the candidates; the timeout then only catches a hung engine.
        dfs_deadline = time.time() + DFS_SHARE_OF_TIMEOUT * timeout_s
        measured: dict[str, Any] = {}
        cancel = threading.Event()  # set at the timeout: the backend stops and lets go
        backend.cancel = cancel
        selections = B.with_deadline(
            lambda: selection.predict_tasks(
                tasks, backend, backend.tokenizer, self.cfg.infer, self.cfg.model.format,
                {} if base else {t.id: adapters.get(t.id) for t in tasks}, self.max_seq_len,
                seed=self.cfg.ttt.seed, events=self.events,
                adapter_transforms=self.cfg.ttt.ttt_transforms, deadline=dfs_deadline,
                measured=measured,
            ),
            timeout_s,
            cancel,
        )  # fmt: skip
        name = ANSWERS_BASE if base else ANSWERS
        for t in tasks:
            sels = selections[t.id]
            # An earlier real answer (the probe's, or an adapter's before a resume) fills
            # the gaps before any fallback: an empty inference must never erase it.
            earlier = [] if base else earlier_answers(self.out, t.id)
            # who answered: the probe (base model), the task's adapter, or the base model
            # when the task has no adapter (no TTT, or TTT skipped by the budget)
            source = "probe" if base else "adapter" if adapters.get(t.id) else "base"
            sourced = [
                s.sourced_attempts(t, i, earlier[i] if i < len(earlier) else (), source)
                for i, s in enumerate(sels)
            ]
            _write_json(
                task_dir(self.out, t.id) / name,
                {
                    "attempts": [{"attempt_1": a, "attempt_2": b} for (a, b), _ in sourced],
                    "sources": [list(src) for _, src in sourced],
                    "selections": [s.to_dict() for s in sels],
                    "base": base,
                },
            )
            self.events.log(
                "select", task=t.id, base=base, candidates=[len(s.candidates) for s in sels]
            )
            for i, s in enumerate(sels):
                reason = s.empty_reason(self.cfg.infer.views)
                if reason or s.dfs_stopped in ("nodes", "deadline"):  # cut short
                    self.events.log(
                        "empty" if reason else "dfs_stopped", task=t.id, test=i, base=base,
                        reason=reason or s.dfs_stopped, samples=s.samples, invalid=s.invalid,
                        kept=[src for src in sourced[i][1] if src != "fallback"],
                    )  # fmt: skip
        return measured.get("answer_tokens")

    def close_backend(self) -> None:
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception as e:  # noqa: BLE001 - a broken engine must not end the run
                self.events.log("fault", where="close_backend", error=repr(e)[:500])
        self.backend = None
        _free_memory()

    def publish(self) -> None:
        if self.publish_fn is not None:
            self.publish_fn()


# ---------------------------------------------------------------------------------------
# Sharding over GPUs
# ---------------------------------------------------------------------------------------


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
        sys.executable, "-m", "arc_ttft.pipeline", str(out / WORKER_CONFIG),
        ",".join(t.id for t in tasks), f"{guard.remaining() + guard.margin:.3f}", str(gpu),
        "resume" if resume else "fresh",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env)


def _run_workers(
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
            left = [t for t in s.tasks if read_answers(out, t.id, base_ok=False) is None]
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


def process_shard(
    tasks: list[Task],
    cfg: C.RunConfig,
    out: Path,
    guard: B.Budget,
    events: EventLog,
    device: str | None = None,
    progress: bool = True,
    worker: int | None = None,
    publish_fn: Any = None,
) -> schedule.ShardReport:
    """TTT for the whole shard, then one inference engine for all its adapters (the order
    and the budget are ``schedule.run_shard``'s)."""
    from arc_ttft import models

    dev = device or models.default_device()
    cost = B.CostModel.for_device(dev, cfg.model.model)
    work = ShardWork(cfg, out, events, dev, progress, worker, publish_fn)
    adapters: dict[str, str | None] = {}
    ttt_todo = []
    for t in tasks:
        done = read_ttt(out, t.id) if cfg.resume else None
        if done is not None:
            adapters[t.id] = done.get("adapter")
            events.log("ttt", task=t.id, decision="resumed", adapter=done.get("adapter"))
        else:
            ttt_todo.append(t)
    infer_todo = [t for t in tasks if not (cfg.resume and read_answers(out, t.id, False))]
    max_seq_len = models.resolve_max_seq_len(cfg.model)
    tokens = {t.id: estimate_tokens(t, cfg.model.format, max_seq_len) for t in tasks}
    return schedule.run_shard(
        cfg, work, guard, cost, events,
        tokens=tokens, ttt_todo=ttt_todo, infer_todo=infer_todo, adapters=adapters,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# run()
# ---------------------------------------------------------------------------------------


def use_shrunk_vocab(cfg: C.RunConfig, events: EventLog) -> C.RunConfig:
    """With ``shrink_vocab``, train and serve the shrunk copy of the model (vocab.py).

    Both stages must see the same folder: adapters trained on the shrunk model only fit it.
    The sequence length is resolved from the original name first (the registry knows it,
    the cache folder does not).
    """
    if not cfg.model.shrink_vocab:
        return cfg
    import copy

    from arc_ttft import models, vocab

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
            faults += _run_workers(shards, cfg, out, guard, events, tasks)
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


def _worker_main(argv: list[str]) -> int:
    """One GPU worker: ``python -m arc_ttft.pipeline CONFIG IDS SECONDS GPU resume|fresh``.

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


WORKER_FRESH_EXIT = 75  # EX_TEMPFAIL: unfinished tasks for a fresh worker


def worker_exit(out: Path, tasks: list[Task], events: EventLog) -> int:
    """A worker's exit code: ``WORKER_FRESH_EXIT`` when a call it abandoned is still
    running (its memory is held until the process ends) and tasks are unfinished, so that
    the parent starts a fresh worker for them; else 0."""
    left = [t.id for t in tasks if read_answers(out, t.id, base_ok=False) is None]
    if B.abandoned_alive() and left:
        events.log("worker_exit", reason="abandoned call", unfinished=len(left))
        return WORKER_FRESH_EXIT
    return 0


if __name__ == "__main__":
    raise SystemExit(B.exit_code(_worker_main(sys.argv[1:])))


__all__ = ["RunResult", "ShardWork", "run", "shard_tasks"]
