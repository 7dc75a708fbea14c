"""`run(config)`: load -> TTT -> inference over views -> selection -> submission, under a budget.

What a competitor runs (the Kaggle notebook, `arc-ttft run`, the dry run). Guarantees:
- a complete, valid ``submission.json`` from the first seconds (fallback attempts), rewritten
  atomically after every task's answers are selected: kill the process at any moment and
  the file on disk is valid;
- the budget guard plans TTT steps from measured costs and never starts work that cannot
  finish before the deadline minus the inference reserve;
- per-task results on disk (``tasks/<id>/``: adapter, ``ttt.json``, ``answers.json``), so
  ``--resume`` trains nothing twice;
- a fault in one task (exception, out-of-memory, hung inference) falls that task back and
  the run goes on.
Several GPUs: one worker process per GPU, tasks sharded by estimated cost.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft import budget as B
from arc_ttft import config as C
from arc_ttft import encoding, submission
from arc_ttft.events import EventLog
from arc_ttft.tasks import Task, load_tasks, select_tasks


@dataclass
class RunResult:
    """Where a run's outputs are and how it went."""

    output: Path
    submission: Path
    n_tasks: int
    score: submission.ScoreResult | None
    seconds: float
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def score_line(self) -> str | None:
        return submission.format_score(self.score) if self.score is not None else None


# ---------------------------------------------------------------------------------------
# Per-task results on disk (what --resume reads back)
# ---------------------------------------------------------------------------------------


def task_dir(out: Path, task_id: str) -> Path:
    return out / "tasks" / task_id


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return str(x)


def read_answers(out: Path, task_id: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The selected attempts of a finished task, or None."""
    f = task_dir(out, task_id) / "answers.json"
    if not f.exists():
        return None
    data = json.loads(f.read_text())
    return [
        (np.array(a["attempt_1"], dtype=np.int8), np.array(a["attempt_2"], dtype=np.int8))
        for a in data["attempts"]
    ]


def read_ttt(out: Path, task_id: str) -> dict[str, Any] | None:
    f = task_dir(out, task_id) / "ttt.json"
    return json.loads(f.read_text()) if f.exists() else None


def collect_answers(out: Path, tasks: list[Task]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    answers = {}
    for t in tasks:
        a = read_answers(out, t.id)
        if a is not None:
            answers[t.id] = a
    return answers


def write_submission_now(out: Path, tasks: list[Task], fallback: str = "input") -> dict:
    """Rebuild submission.json from every finished task (fallbacks elsewhere), atomically."""
    sub = submission.build_submission(tasks, collect_answers(out, tasks), fallback=fallback)
    submission.write_submission(sub, out / "submission.json")
    return sub


# ---------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------


def estimate_tokens(task: Task, fmt: str, max_seq_len: int | None) -> int:
    n = encoding.task_tokens(task, fmt)
    return min(n, max_seq_len) if max_seq_len else n


def _device(worker_device: str | None) -> str:
    if worker_device:
        return worker_device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


def ttt_stage(
    tasks: list[Task],
    cfg: C.RunConfig,
    out: Path,
    guard: B.Budget,
    cost: B.CostModel,
    events: EventLog,
    device: str,
    progress: bool,
) -> dict[str, str | None]:
    """Train an adapter per task under the guard; returns task id -> adapter folder (or None)."""
    from arc_ttft import models, ttt

    adapters: dict[str, str | None] = {}
    todo = []
    for t in tasks:
        done = read_ttt(out, t.id)
        if cfg.resume and done is not None:
            adapters[t.id] = done.get("adapter")
            events.log("ttt", task=t.id, decision="resumed", adapter=done.get("adapter"))
        else:
            todo.append(t)
    if cfg.ttt.ttt_steps == 0 or not todo:
        for t in todo:
            adapters[t.id] = None
        return adapters

    max_seq_len = cfg.model.max_seq_len or models.default_seq_len(cfg.model.model)
    t0 = time.monotonic()
    model, tokenizer = models.load_model(cfg.model, device=device, for_training=True)
    model = ttt.prepare_peft_model(model, cfg.ttt)
    cost.observe_overhead("load_train", time.monotonic() - t0)
    tokens = {t.id: estimate_tokens(t, cfg.model.format, max_seq_len) for t in todo}

    if cfg.ttt.adapter_mode == "shared":
        # One adapter for the whole shard; the step guard alone keeps it inside the budget.
        reserve = inference_reserve(tasks, cfg, cost)
        step_s = float(np.mean([cost.ttt_step_seconds(n) for n in tokens.values()]))
        res = ttt.train_shared(
            model, tokenizer, todo, cfg.ttt, cfg.model.format, max_seq_len,
            output_dir=out / "adapters", events=events, progress=progress,
            should_stop=guard.step_guard(step_s, reserve_seconds=reserve),
        )  # fmt: skip
        for t in todo:
            adapters[t.id] = res.adapter
            _write_json(task_dir(out, t.id) / "ttt.json", {**res.to_dict(), "shared": True})
        del model
        _free_memory()
        return adapters

    for i, task in enumerate(todo):
        remaining = [(t.id, tokens[t.id]) for t in todo[i:]]
        reserve = inference_reserve(tasks, cfg, cost)
        plan = B.plan_steps(remaining, guard, cost, cfg.ttt.ttt_steps, reserve_seconds=reserve)
        steps = plan.steps.get(task.id, 0)
        events.log("budget", task=task.id, **plan.figures(task.id))
        if steps <= 0:
            adapters[task.id] = None
            _write_json(
                task_dir(out, task.id) / "ttt.json",
                {"adapter": None, "decision": plan.decision(task.id)},
            )
            continue
        stop = guard.step_guard(cost.ttt_step_seconds(tokens[task.id]), reserve_seconds=reserve)
        seq_len = max_seq_len
        result = None
        for attempt in range(2):
            try:
                result = ttt.train_task(
                    model,
                    tokenizer,
                    task,
                    cfg.ttt,
                    cfg.model.format,
                    seq_len,
                    steps=steps,
                    output_dir=out / "adapters",
                    events=events,
                    should_stop=stop,
                    progress=progress,
                )
                break
            except Exception as e:  # noqa: BLE001 - one task's fault must not end the run
                events.log(
                    "fault",
                    task=task.id,
                    where="ttt",
                    error=repr(e)[:500],
                    oom=_is_oom(e),
                    traceback=traceback.format_exc()[-2000:],
                )
                _free_memory()
                if attempt == 0 and _is_oom(e):
                    seq_len = max(256, seq_len // 2)  # retry shorter: drop pairs to fit
                    continue
                break
        adapter = result.adapter if result is not None else None
        if result is not None and result.steps:
            cost.observe_ttt(tokens[task.id], result.seconds / result.steps, result.steps)
        adapters[task.id] = adapter
        _write_json(
            task_dir(out, task.id) / "ttt.json",
            result.to_dict() if result else {"adapter": None, "decision": "fault"},
        )
    del model
    _free_memory()
    return adapters


def inference_workload(tasks: list[Task], cfg: C.RunConfig) -> tuple[int, float, int]:
    """(prompts, typical answer tokens, re-scoring calls) that inference of ``tasks`` needs."""
    n_tests = sum(len(t.test) for t in tasks)
    n_prompts = n_tests * cfg.infer.views * cfg.infer.samples
    n_scores = n_tests * cfg.infer.rescore * 2  # ~two distinct candidates per test input
    # Answer tokens ~ the size of the test input grid in digit rows: H x (W + 1).
    out_tokens = float(
        np.mean([ex.input.shape[0] * (ex.input.shape[1] + 1) for t in tasks for ex in t.test])
    )
    return n_prompts, out_tokens, n_scores


def inference_reserve(
    tasks: list[Task], cfg: C.RunConfig, cost: B.CostModel, include_load: bool = True
) -> float:
    """Seconds to keep for inference of ``tasks``, from the measured (or prior) costs."""
    if not tasks:
        return 0.0
    n_prompts, out_tokens, n_scores = inference_workload(tasks, cfg)
    # The floor guards against an optimistic prior; it scales with the budget so that a
    # short run (the dry run, tests) is not all reserve.
    floor = min(60.0, 0.1 * cfg.budget.budget_seconds()) if include_load else 0.0
    return B.inference_reserve(
        cost, n_prompts, out_tokens, n_scores, include_load=include_load, floor_seconds=floor
    )


def inference_stage(
    tasks: list[Task],
    adapters: dict[str, str | None],
    cfg: C.RunConfig,
    out: Path,
    guard: B.Budget,
    cost: B.CostModel,
    events: EventLog,
    device: str,
    progress: bool,
) -> None:
    """Views -> candidates -> vote/rescore for every unfinished task; writes answers + submission."""
    from arc_ttft import infer, models, select

    todo = [t for t in tasks if not (cfg.resume and read_answers(out, t.id) is not None)]
    if not todo:
        return
    t0 = time.monotonic()
    backend = infer.make_backend(cfg, device=device)
    tokenizer = backend.tokenizer
    cost.observe_overhead("load_infer", time.monotonic() - t0)
    max_seq_len = cfg.model.max_seq_len or models.default_seq_len(cfg.model.model)
    # One call per chunk: the whole shard for vLLM (it batches everything), small chunks
    # for transformers so that the submission improves as the run goes and the guard can
    # stop between chunks.
    chunk = (
        len(todo)
        if backend.name == "vllm"
        else max(1, cfg.infer.infer_batch_size // max(1, cfg.infer.views))
    )
    try:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            est = inference_reserve(part, cfg, cost, include_load=False)
            if not guard.can_start(est):
                events.log(
                    "budget",
                    decision="fallback",
                    tasks=[t.id for t in part],
                    estimated_seconds=round(est, 2),
                    remaining=round(guard.remaining(), 2),
                )
                continue
            t1 = time.monotonic()
            try:
                selections = B.with_deadline(
                    lambda part=part: select.predict_tasks(
                        part,
                        backend,
                        tokenizer,
                        cfg.infer,
                        cfg.model.format,
                        {t.id: adapters.get(t.id) for t in part},
                        max_seq_len,
                        seed=cfg.ttt.seed,
                        events=events,
                    ),
                    min(cfg.infer.infer_timeout_s, max(1.0, guard.remaining())),
                )
            except Exception as e:  # noqa: BLE001 - the chunk falls back, the run goes on
                events.log(
                    "fault",
                    where="inference",
                    tasks=[t.id for t in part],
                    error=repr(e)[:500],
                    traceback=traceback.format_exc()[-2000:],
                )
                _free_memory()
                if isinstance(e, B.DeadlineExceeded):
                    break  # a hung backend cannot be trusted with more work
                continue
            cost.observe_inference(
                cost.inference_seconds(*inference_workload(part, cfg)),
                time.monotonic() - t1,
            )
            for t in part:
                sels = selections[t.id]
                attempts = [s.attempts(t, i) for i, s in enumerate(sels)]
                _write_json(
                    task_dir(out, t.id) / "answers.json",
                    {
                        "attempts": [{"attempt_1": a, "attempt_2": b} for a, b in attempts],
                        "selections": [s.to_dict() for s in sels],
                    },
                )
                events.log("select", task=t.id, candidates=[len(s.candidates) for s in sels])
            write_submission_now(out, tasks, cfg.infer.fallback)
    finally:
        backend.close()


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


def _run_workers(
    shards: list[list[Task]],
    cfg: C.RunConfig,
    out: Path,
    guard: B.Budget,
    events: EventLog,
    all_tasks: list[Task],
) -> None:
    """One process per GPU (CUDA_VISIBLE_DEVICES), each running its shard; merge as they go."""
    import torch

    procs = []
    for gpu, shard in enumerate(shards):
        if not shard:
            continue
        env = dict(os.environ)
        if torch.cuda.is_available():
            env["CUDA_VISIBLE_DEVICES"] = str(gpu % torch.cuda.device_count())
        cmd = [
            sys.executable,
            "-m",
            "arc_ttft.pipeline",
            str(out / "config.json"),
            ",".join(t.id for t in shard),
            str(guard.remaining() + guard.margin),
            str(gpu),
        ]
        events.log("shard", gpu=gpu, tasks=len(shard))
        procs.append(subprocess.Popen(cmd, env=env))
    while any(p.poll() is None for p in procs):
        time.sleep(2)
        write_submission_now(
            out, all_tasks, cfg.infer.fallback
        )  # merge what the workers finished so far
        if guard.expired():
            for p in procs:
                p.terminate()
    for gpu, p in enumerate(procs):
        if p.returncode:
            events.log("fault", where="worker", gpu=gpu, returncode=p.returncode)


def process_shard(
    tasks: list[Task],
    cfg: C.RunConfig,
    out: Path,
    guard: B.Budget,
    events: EventLog,
    device: str | None = None,
    progress: bool = True,
) -> None:
    """TTT for the whole shard, then one inference engine for all its adapters."""
    dev = _device(device)
    cost = B.CostModel.for_device(dev, cfg.model.model)
    adapters = ttt_stage(tasks, cfg, out, guard, cost, events, dev, progress)
    inference_stage(tasks, adapters, cfg, out, guard, cost, events, dev, progress)


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
    out.model.max_seq_len = cfg.model.max_seq_len or models.default_seq_len(cfg.model.model)
    out.model.model, out.model.shrink_vocab, out.model.random_weights = str(folder), False, False
    events.log("shrink_vocab", source=cfg.model.model, folder=str(folder))
    return out


def run(cfg: C.RunConfig, *, clock: B.Clock | None = None, progress: bool = True) -> RunResult:
    """Run the whole pipeline; see the module docstring for the guarantees."""
    C.validate(cfg)
    clock = clock or B.Clock()
    guard = B.Budget(clock, cfg.budget.budget_seconds(), cfg.budget.margin_seconds())
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        for stale in ("run.jsonl", "submission.json"):
            (out / stale).unlink(missing_ok=True)
    events = EventLog(out / "run.jsonl")
    C.save(cfg, out / "config.json")
    cfg = use_shrunk_vocab(cfg, events)

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

    import torch

    n_workers = cfg.workers or max(1, torch.cuda.device_count())
    if n_workers > 1 and len(tasks) > 1:
        shards = shard_tasks(tasks, n_workers, cfg.model.format, cfg.ttt.ttt_steps)
        _run_workers(shards, cfg, out, guard, events, tasks)
    else:
        process_shard(tasks, cfg, out, guard, events, progress=progress)

    sub = write_submission_now(out, tasks, cfg.infer.fallback)
    problems = submission.validate_submission(sub, tasks)
    assert not problems, problems  # build_submission fills every gap; this is a bug if hit
    score = None
    if all(ex.output is not None for t in tasks for ex in t.test):
        score = submission.score_submission(sub, tasks)
    result = RunResult(out, out / "submission.json", len(tasks), score, round(guard.elapsed(), 2))
    result.tasks = {t.id: {"ttt": read_ttt(out, t.id)} for t in tasks}
    from arc_ttft import report

    header = {
        "model": cfg.model.model,
        "challenges": cfg.data.challenges,
        "budget used": f"{guard.fraction_used():.1%} of {cfg.budget.budget_seconds():.0f} s",
        "ttt steps (target)": cfg.ttt.ttt_steps,
        "views": cfg.infer.views,
    }
    report.write_outputs(out, tasks, sub, score, events, header)
    events.log(
        "end",
        seconds=result.seconds,
        score=score.score if score else None,
        used=round(guard.fraction_used(), 4),
    )
    return result


def _worker_main(argv: list[str]) -> int:
    """Entry of one GPU worker: ``python -m arc_ttft.pipeline CONFIG IDS SECONDS GPU``."""
    cfg_path, ids, seconds, gpu = argv
    cfg = C.load(C.RunConfig, cfg_path)
    out = Path(cfg.output)
    loaded = load_tasks(cfg.data.challenges, cfg.data.solutions, skip_invalid=True)
    wanted = set(ids.split(","))
    tasks = [t for t in loaded.tasks if t.id in wanted]
    guard = B.Budget(B.Clock(), float(seconds), cfg.budget.margin_seconds())
    events = EventLog(out / f"run.worker{gpu}.jsonl")
    import torch

    # CUDA_VISIBLE_DEVICES shows this worker one GPU; on CPU (tests) workers share the CPU.
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    process_shard(tasks, cfg, out, guard, events, device=device, progress=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))


__all__ = ["RunResult", "run", "shard_tasks"]
