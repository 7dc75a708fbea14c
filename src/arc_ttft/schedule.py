"""The shard schedule: what runs when, under the budget guard.

One loop decides the order of work and asks the guard before each piece. The pipeline
runs it with real operations (``shard.ShardWork``); the simulator (``research/simulate.py``)
runs the very same loop with fake operations on a fake clock, so what the simulation
proves holds for the pipeline.

Order, chosen so that inference for every task comes first when the budget binds (a
task with no inference scores nothing, whatever its TTT):

1. **probe**: the base model answers a few tasks before any TTT. Inference is then
   measured, not taken from a prior, when TTT decides how much time to leave for it
   (a prior 2x off either wastes a third of the budget or starves inference). The
   answers are kept as the base answers of those tasks.
2. **TTT**: before every task, ``budget.plan_steps`` gives the remaining tasks their
   steps so that their TTT plus the inference reserve of *all* tasks fits.
3. **inference** in chunks sized from the measured cost and the time left; the
   submission is published after every chunk. When the budget bound TTT, answers stop
   at the predicted grid's length, what the reserve priced: answers that do not stop
   run on to 30x30 and take the time of the tasks after them (measured: the tiny
   model's adapters on 20 small tasks, a chunk of 10 averaging 165 tokens, the other 10
   tasks left without their adapter's inference). The price: 38 of 2,078 ARC test
   outputs (1.8%, ARC-AGI-1 and -2) are larger than predicted and cannot come out whole
   then. A chunk that does not fit is tried task
   by task; a hung chunk costs that chunk only (the backend is rebuilt).

Faults of a stage (a model that cannot load, an exception in a task) are logged as
``fault`` events; the schedule goes on with what it has and never raises.
"""

from __future__ import annotations

import copy
import functools
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from arc_ttft import budget as B
from arc_ttft import config as C
from arc_ttft import costs
from arc_ttft.events import EventLog
from arc_ttft.tasks import Task

TASK_OVERRUN = 2.0  # a task may always train to this multiple of its planned seconds
MAX_BACKEND_REBUILDS = 2  # after a hang; a backend that keeps hanging is given up
CHUNK_MIN_SECONDS = 5.0
PROBE_SHARE = 0.05  # the probe may use at most this share of the time left
HANG_FACTOR = 4.0  # a chunk is abandoned after this many times its estimate...
HANG_FLOOR_SECONDS = 60.0  # ...but never sooner than this


@dataclass
class TrainOutcome:
    """What one training call did."""

    steps: int
    seconds: float
    adapter: str | None


class ShardOps(Protocol):
    """The operations the schedule orders; each may raise (the schedule logs a fault)."""

    def load_trainer(self) -> None: ...

    def train(self, task: Task, steps: int, should_stop: Callable[[], bool]) -> TrainOutcome: ...

    def train_shared(self, tasks: list[Task], should_stop: Callable[[], bool]) -> TrainOutcome: ...

    def close_trainer(self) -> None: ...

    def load_backend(self) -> None: ...

    def infer(
        self,
        tasks: list[Task],
        adapters: dict[str, str | None],
        timeout_s: float,
        base: bool,
        predicted_cap: bool = False,
    ) -> float | None:
        """Answer ``tasks`` and store the answers (``base``: as base-model answers);
        raise ``budget.DeadlineExceeded`` after ``timeout_s``. ``predicted_cap``: answers
        stop at the predicted grid's length (what the reserve priced), not at 30x30.
        Returns the mean tokens of the answers written (None when not known)."""
        ...

    def close_backend(self) -> None: ...

    def publish(self) -> None:
        """Make the answers so far visible (the submission, or the parent's merge)."""
        ...


@dataclass
class ShardReport:
    """What the schedule did for a shard (the pipeline's summary and the simulator read it)."""

    trained: dict[str, int] = field(default_factory=dict)  # task id -> steps run
    inferred: list[str] = field(default_factory=list)  # tasks answered with their adapter
    probed: list[str] = field(default_factory=list)  # tasks answered by the base model first
    faults: list[str] = field(default_factory=list)  # one line per fault
    budget_bound: bool = False  # the latest TTT plan cut or skipped a task for the reserve


# ---------------------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------------------


def chunk_target(
    todo: list[Task], cfg: C.RunConfig, cost: costs.CostModel, guard: B.Budget
) -> float:
    """Seconds an inference chunk aims at: the work of ``todo`` split into ``costs.CHUNKS``
    equal chunks (big enough for the engine to batch, small enough that the submission
    improves as the run goes and that a hang or a refusal costs little), at most a
    quarter of the time left and half the hang timeout."""
    share = costs.inference_seconds(todo, cfg, cost) / costs.CHUNKS
    cap = min(0.25 * guard.remaining(), 0.5 * cfg.infer.infer_timeout_s)
    return max(CHUNK_MIN_SECONDS, min(share, cap))


def next_chunk(todo: list[Task], cfg: C.RunConfig, cost: costs.CostModel, target: float) -> int:
    """How many of ``todo`` (in order) the next inference chunk takes: one task until
    inference is measured (it measures), then as many as stay under ``target`` seconds."""
    if cost.infer_scale is None:
        return 1
    k = 1
    while k < len(todo) and costs.inference_seconds(todo[: k + 1], cfg, cost) <= target:
        k += 1
    return k


def chunk_timeout(
    estimate: float, cfg: C.RunConfig, guard: B.Budget, keep_seconds: float = 0.0
) -> float:
    """Seconds after which a chunk counts as hung: a multiple of its estimate, floored,
    never past the configured timeout, nor past the deadline minus ``keep_seconds`` (the
    writes that must still follow)."""
    hang = max(HANG_FLOOR_SECONDS, HANG_FACTOR * estimate)
    left = guard.remaining() - keep_seconds
    return max(1.0, min(cfg.infer.infer_timeout_s, hang, left))


def probe_order(todo: list[Task], tokens: dict[str, float], k: int) -> list[Task]:
    """``k`` tasks spread over the sizes of ``todo``, in an order that keeps the spread if
    the probe is cut short (median, then the extremes, then the gaps between).

    The pooled measured/estimated ratio of a probe is what the reserve for *all* tasks is
    scaled by: the first tasks of the list (often similar, or all small) would bias it.
    """
    ranked = sorted(todo, key=lambda t: tokens.get(t.id, 0.0))
    k = min(k, len(ranked))
    picks = [ranked[int((i + 0.5) * len(ranked) / k)] for i in range(k)]
    order = [picks.pop(k // 2)]
    while picks:  # alternate the smallest and the largest of what is left
        order.append(picks.pop(0 if len(order) % 2 else -1))
    return order


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


def _fault(events: EventLog, report: ShardReport, where: str, e: BaseException, **kw: Any):
    events.log(
        "fault", where=where, error=repr(e)[:500], traceback=traceback.format_exc()[-2000:], **kw
    )
    report.faults.append(f"{where}: {type(e).__name__}: {str(e)[:200]}")


def run_shard(
    cfg: C.RunConfig,
    ops: ShardOps,
    guard: B.Budget,
    cost: costs.CostModel,
    events: EventLog,
    *,
    tokens: dict[str, float],
    ttt_todo: list[Task],
    infer_todo: list[Task],
    adapters: dict[str, str | None],
) -> ShardReport:
    """Probe, TTT, inference for one shard (see the module docstring). Never raises.

    ``tokens``: task id -> training tokens of that task; ``adapters``: task id -> adapter
    folder already known (resumed), filled in as tasks train.
    """
    report = ShardReport()
    clock = guard.clock
    do_ttt = bool(ttt_todo) and cfg.ttt.ttt_steps > 0
    if not do_ttt:
        for t in ttt_todo:
            adapters.setdefault(t.id, None)

    if do_ttt and infer_todo and cfg.infer.probe_tasks > 0:
        probe = probe_order(infer_todo, tokens, cfg.infer.probe_tasks)
        if _load_backend(ops, cost, events, report, guard):
            limit = clock.now() + PROBE_SHARE * guard.remaining()
            done = _infer(
                cfg, ops, guard, cost, events, report, probe, adapters, base=True, until=limit
            )
            report.probed += done
            ops.close_backend()

    if do_ttt:
        _train(cfg, ops, guard, cost, events, report, tokens, ttt_todo, infer_todo, adapters)

    if infer_todo and _load_backend(ops, cost, events, report, guard):
        # Probed tasks last: if time runs out, the tasks it refuses have base answers.
        probed = set(report.probed)
        infer_todo = [t for t in infer_todo if t.id not in probed] + [
            t for t in infer_todo if t.id in probed
        ]
        report.inferred += _infer(
            cfg, ops, guard, cost, events, report, infer_todo, adapters, base=False,
            predicted_cap=report.budget_bound,
        )  # fmt: skip
        ops.close_backend()
    return report


def _within_budget(load, guard) -> None:
    """A model load that has not returned by the deadline is abandoned (a hung read of a
    mounted dataset, a stuck engine start): the tasks keep the answers they have."""
    B.with_deadline(load, max(1.0, guard.remaining()))


def _load_backend(ops, cost, events, report, guard) -> bool:
    clock = guard.clock
    t0 = clock.now()
    try:
        _within_budget(ops.load_backend, guard)
    except Exception as e:  # noqa: BLE001 - no backend: every task keeps its fallback
        _fault(events, report, "load_backend", e)
        return False
    cost.observe_overhead("load_infer", clock.now() - t0)
    return True


def _train(cfg, ops, guard, cost, events, report, tokens, todo, infer_todo, adapters) -> None:
    clock = guard.clock
    t0 = clock.now()
    try:
        _within_budget(ops.load_trainer, guard)
    except Exception as e:  # noqa: BLE001 - no TTT: the base model answers
        _fault(events, report, "load_trainer", e)
        for t in todo:
            adapters.setdefault(t.id, None)
        return
    cost.observe_overhead("load_train", clock.now() - t0)
    # Inference has not started: the reserve covers every task of the shard.
    reserve = lambda: costs.inference_reserve(infer_todo, cfg, cost)  # noqa: E731

    if cfg.ttt.adapter_mode == "shared":
        # One adapter for the whole shard; the step guard alone keeps it inside the budget.
        step_s = float(np.mean([cost.ttt_step_seconds(tokens[t.id]) for t in todo]))
        try:
            out = ops.train_shared(todo, guard.step_guard(step_s, reserve_seconds=reserve()))
            for t in todo:
                adapters[t.id] = out.adapter
                report.trained[t.id] = out.steps
        except Exception as e:  # noqa: BLE001
            _fault(events, report, "ttt", e, task="shared")
        ops.close_trainer()
        return

    for i, task in enumerate(todo):
        remaining = [(t.id, tokens[t.id]) for t in todo[i:]]
        res = reserve()
        plan = B.plan_steps(remaining, guard, cost, cfg.ttt.ttt_steps, reserve_seconds=res)
        steps = plan.steps.get(task.id, 0)
        events.log("budget", task=task.id, **plan.figures(task.id))
        # The latest plan, the best informed, decides: a first plan priced on the slow
        # prior may cut a task where the measured speed then leaves time to spare.
        report.budget_bound = any(d != "full" for d in plan.decisions.values())
        if steps <= 0:
            adapters[task.id] = None
            continue
        step_s = cost.ttt_step_seconds(tokens[task.id])
        others = [(plan.steps[tid], n) for tid, n in remaining[1:] if plan.steps.get(tid, 0)]
        free_seconds = functools.partial(_free_seconds, guard.remaining(), others, infer_todo, cfg)
        stop = _task_guard(
            guard.step_guard(step_s, reserve_seconds=res),
            clock,
            steps * step_s,
            free_seconds,
            cost,
            tokens[task.id],
        )
        t1 = clock.now()
        try:
            out = ops.train(task, steps, stop)
        except Exception as e:  # noqa: BLE001 - one task's fault must not end the run
            _fault(events, report, "ttt", e, task=task.id)
            adapters[task.id] = None
            continue
        adapters[task.id] = out.adapter
        report.trained[task.id] = out.steps
        if out.steps:
            cost.observe_ttt(tokens[task.id], out.seconds / out.steps, out.steps)
            cost.observe_overhead("ttt_task", max(0.0, clock.now() - t1 - out.seconds))
    ops.close_trainer()


def _free_seconds(left, others, infer_todo, cfg, learned: costs.CostModel) -> float:
    """Of ``left`` seconds, what one task may take without touching the other tasks'
    plans (``others``: (steps, tokens) pairs) or the inference reserve, priced by
    ``learned``."""
    need = sum(steps * learned.ttt_step_seconds(n) for steps, n in others)
    return left - costs.inference_reserve(infer_todo, cfg, learned) - need


def _task_guard(step_guard, clock, planned_seconds, free_seconds, cost, tokens):
    """The step guard, plus a stop once a task runs past the time no other task's plan
    needs (``free_seconds(cost)``), and never before ``TASK_OVERRUN`` times its plan.

    The cost model learns mid-task: after steps 2, 4, 8, ... a copy of ``cost`` takes the
    speed measured so far and the free time is priced again. A prior far too optimistic
    (a loaded machine, a slower GPU) makes every later task slower too, so it shrinks
    what this task may take; with time to spare, an underestimated task still trains to
    its planned steps (a cap on its plan alone cut 03560426 at 36 of 64 steps with
    41,000 s left)."""
    start = clock.now()
    floor = TASK_OVERRUN * planned_seconds
    limit = start + max(floor, free_seconds(cost))
    done, learn_at, first = 0, 2, start

    def stop() -> bool:
        nonlocal done, learn_at, limit, first
        if step_guard():
            return True
        now = clock.now()
        if done == 0:
            first = now  # steps are timed from here: set-up before them is not a step
        elif done >= learn_at:
            learn_at *= 2
            learned = copy.deepcopy(cost)
            learned.observe_ttt(tokens, (now - first) / done, done)
            limit = start + max(floor, free_seconds(learned))
        done += 1
        return now > limit

    return stop


def _infer(
    cfg,
    ops,
    guard,
    cost,
    events,
    report,
    todo,
    adapters,
    *,
    base: bool,
    until: float = math.inf,
    predicted_cap: bool = False,
) -> list[str]:
    """Chunks of ``todo`` while they fit (and, for the probe, end before ``until`` on the
    clock); returns the ids answered. ``predicted_cap``: passed to ``ops.infer``."""
    done: list[str] = []
    rebuilds = 0
    todo = list(todo)
    target = None  # set once inference is measured
    while todo:
        if target is None and cost.infer_scale is not None:
            # The probe is small: the rest of it goes as one chunk.
            target = math.inf if base else chunk_target(todo, cfg, cost, guard)
        k = next_chunk(todo, cfg, cost, target or 0.0)
        part, est = todo[:k], costs.inference_seconds(todo[:k], cfg, cost, base)
        # After the chunk: its publish and the run's last write (each may run slow too).
        writes, safety = 2 * costs.CHUNK_SAFETY * cost.overhead("write"), costs.CHUNK_SAFETY
        if k > 1 and not guard.can_start(est, writes, safety):
            part, est = todo[:1], costs.inference_seconds(todo[:1], cfg, cost, base)  # one may fit
        todo = todo[len(part) :]
        if base and guard.clock.now() + safety * est > until:
            return done  # the probe has measured enough; it must not eat the run's time
        if not guard.can_start(est, writes, safety):
            events.log(
                "budget",
                decision="fallback",
                tasks=[t.id for t in part],
                estimated_seconds=round(est, 2),
                remaining=round(guard.remaining(), 2),
            )
            continue
        t0 = guard.clock.now()
        try:
            timeout = chunk_timeout(est, cfg, guard, writes)
            written = ops.infer(part, adapters, timeout, base, predicted_cap)
        except Exception as e:  # noqa: BLE001 - the chunk falls back, the run goes on
            _fault(events, report, "inference", e, tasks=[t.id for t in part], base=base)
            if isinstance(e, B.DeadlineExceeded):
                # A hung backend cannot be trusted with more work: build a fresh one.
                ops.close_backend()
                rebuilds += 1
                if (
                    rebuilds > MAX_BACKEND_REBUILDS
                    or not guard.can_start(cost.overhead("load_infer"), writes)
                    or not _load_backend(ops, cost, events, report, guard)
                ):
                    return done  # the rest keep their fallbacks
            continue
        # Measured against the answers actually written: the base model's answers (the
        # probe) often stop early, and adapters' whole grids must not cost more than reserved.
        share = costs.answer_share(part, cfg, base, written)
        cost.observe_inference(est, guard.clock.now() - t0, answer_share=share)
        done += [t.id for t in part]
        try:
            ops.publish()
        except Exception as e:  # noqa: BLE001 - the answers are on disk; the next one may work
            _fault(events, report, "publish", e)
    return done


__all__ = [
    "ShardOps",
    "ShardReport",
    "TrainOutcome",
    "chunk_timeout",
    "chunk_target",
    "next_chunk",
    "probe_order",
    "run_shard",
]
