"""The time budget: the deadline, the guards, TTT step planning, timeouts on calls.

Kaggle kills a run at 12 hours and a late submission scores zero, so every stage asks
this module before it starts work:

- ``Budget`` holds the deadline (start + total - safety margin) on a ``Clock`` (real, or
  ``FakeClock`` for tests and simulation).
- ``plan_steps`` gives every remaining task its TTT steps so that TTT of all of them plus
  the inference reserve fits before the deadline, priced by the cost model
  (``costs.CostModel``); it is a pure function of the current state, so the schedule
  calls it again before every task with fresh measurements.
- ``Budget.can_start`` / ``Budget.step_guard`` never let work start whose measured cost
  says it cannot finish before the deadline minus the reserve.
- ``with_deadline`` bounds a call (a cancel event, then abandonment); ``exit_code`` ends a
  process cleanly when an abandoned call still runs.

The order of work (probe, TTT, inference chunks) is ``schedule.run_shard``'s; the fake-clock
simulation of whole runs is ``research/simulate.py``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

DECISIONS = ("full", "cut", "no-ttt", "fallback")

# ---------------------------------------------------------------------------------------
# Clocks
# ---------------------------------------------------------------------------------------


class Clock:
    """The real clock: monotonic seconds (immune to wall-clock changes)."""

    def now(self) -> float:
        return time.monotonic()


@dataclass
class FakeClock:
    """A clock that only moves when told to (tests, simulation: no sleeping)."""

    t: float = 0.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds={seconds} must be >= 0")
        self.t += float(seconds)
        return self.t


# ---------------------------------------------------------------------------------------
# Budget and guards
# ---------------------------------------------------------------------------------------


def must_stop(now, limit, predicted, last_step, safety: float = 1.25):
    """True where a step started at ``now`` may not end before ``limit``.

    The step is assumed to take ``safety`` times the larger of the predicted and the last
    measured step time (``StepGuard`` asks it before every training step).
    """
    return now + safety * np.maximum(predicted, last_step) > limit


@dataclass
class Budget:
    """A wall-clock budget: ``deadline = start + total_seconds - margin_seconds``.

    The margin is never planned into: it absorbs what the estimates miss.
    """

    clock: Clock | FakeClock
    total_seconds: float
    margin_seconds: float = 0.0
    start: float | None = None

    def __post_init__(self) -> None:
        if not self.total_seconds > 0:
            raise ValueError(
                f"Budget: total_seconds={self.total_seconds} must be > 0 "
                "(fix: --budget-hours or --budget-minutes)"
            )
        if not 0 <= self.margin_seconds < self.total_seconds:
            raise ValueError(
                f"Budget: margin_seconds={self.margin_seconds} must be >= 0 and smaller than "
                f"total_seconds={self.total_seconds} (fix: --safety-margin-minutes)"
            )
        if self.start is None:
            self.start = self.clock.now()

    @property
    def margin(self) -> float:
        return self.margin_seconds

    @property
    def deadline(self) -> float:
        return self.start + self.total_seconds - self.margin_seconds

    def elapsed(self) -> float:
        return self.clock.now() - self.start

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once past it)."""
        return self.deadline - self.clock.now()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def fraction_used(self) -> float:
        """Share of the whole budget (margin included) used so far."""
        return self.elapsed() / self.total_seconds

    def can_start(
        self, estimated_seconds: float, reserve_seconds: float = 0.0, safety: float = 1.0
    ) -> bool:
        """True when work of ``estimated_seconds`` (times ``safety``) ends before the
        deadline minus the reserve.

        Keep ``safety`` at most the one the reserve was made with, or work the reserve was
        kept for is refused; > 1 suits small chunks whose cost varies (say 1.25).
        """
        return safety * estimated_seconds + reserve_seconds <= self.remaining()

    def step_guard(
        self, step_seconds: float, reserve_seconds: float = 0.0, safety: float = 1.25
    ) -> StepGuard:
        """A callable for a training loop: call it before every step; True means stop.

        ``step_seconds`` is the predicted step time; the guard also measures the time
        between its calls (= the last step) and uses the larger of the two.
        """
        return StepGuard(self, step_seconds, reserve_seconds, safety)

    def to_dict(self) -> dict[str, float]:
        return {
            "total_seconds": self.total_seconds,
            "margin_seconds": self.margin_seconds,
            "elapsed": round(self.elapsed(), 3),
            "remaining": round(self.remaining(), 3),
        }


@dataclass
class StepGuard:
    """``guard()`` before each training step: True when the next step must not start."""

    budget: Budget
    step_seconds: float
    reserve_seconds: float = 0.0
    safety: float = 1.25
    last_step: float = 0.0
    stopped: bool = False
    _last_call: float | None = field(default=None, repr=False)

    def __call__(self) -> bool:
        now = self.budget.clock.now()
        if self._last_call is not None:
            self.last_step = now - self._last_call
        self._last_call = now
        limit = self.budget.deadline - self.reserve_seconds
        self.stopped = bool(must_stop(now, limit, self.step_seconds, self.last_step, self.safety))
        return self.stopped


class DeadlineExceeded(TimeoutError):
    """``with_deadline``: the call did not return in time."""


# Threads with_deadline gave up on. One still inside torch when the interpreter shuts
# down aborts the process ("terminate called without an active exception", exit 134).
_ABANDONED: list[threading.Thread] = []


def exit_code(code: int) -> int:
    """``code``, for a process entry point to exit with; when an abandoned call is still
    running, flush the output and end the process here with ``code`` (``os._exit``), since
    a normal shutdown would abort under it. Only entry points call this (never a library
    caller: it would end the caller's process)."""
    if abandoned_alive():
        import os
        import sys

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not change the code
                pass
        os._exit(code)
    return code


# How long a cancelled call may take to reach its next token, DFS node or batch and end.
CANCEL_GRACE_S = 5.0


def abandoned_alive() -> bool:
    """Whether a call ``with_deadline`` gave up on is still running (and holding memory)."""
    return any(th.is_alive() for th in _ABANDONED)


def with_deadline(
    fn: Callable[[], T],
    seconds: float,
    cancel: threading.Event | None = None,
    grace: float = CANCEL_GRACE_S,
) -> T:
    """Run ``fn()`` and return its result, or raise DeadlineExceeded after ``seconds``.

    ``fn`` runs in a daemon thread. On a timeout ``cancel`` is set (a backend stops at its
    next token or batch: infer.base) and the call gets ``grace`` seconds to end, so that
    it frees what it holds. One that still runs is abandoned, not killed (Python cannot
    kill a thread): the caller should stop trusting whatever it was using.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    th = threading.Thread(target=target, daemon=True, name="with_deadline")
    th.start()
    th.join(max(0.0, seconds))
    if th.is_alive() and cancel is not None:
        cancel.set()
        th.join(max(0.0, grace))
        if not th.is_alive():
            raise DeadlineExceeded(f"call cancelled after {seconds:.1f} s (it has ended)")
    if th.is_alive():
        _ABANDONED.append(th)
        raise DeadlineExceeded(f"call did not finish within {seconds:.1f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------


def default_min_steps(target_steps: int) -> int:
    """The fewest TTT steps worth running: a quarter of the target, at least 4 (or target)."""
    return min(target_steps, max(4, target_steps // 4))


@dataclass
class Plan:
    """TTT steps for every remaining task, the decision behind each, and the figures.

    Decisions: ``full`` (target steps), ``cut`` (fewer), ``no-ttt`` (0 steps: the base model
    answers), ``fallback`` (even inference does not fit: default attempts). Per-task values
    are kept as sequences in task order (cheap to build on every re-plan); ``steps`` and
    ``decisions`` are the same as dicts by task id.
    """

    task_ids: tuple[str, ...]
    step_counts: list[int]
    decision_list: list[str]
    step_seconds_list: list[float]  # predicted seconds of one step, per task
    target_steps: int
    min_steps: int
    even_steps: int  # the evenly cut step count (target when nothing is cut)
    remaining_seconds: float
    reserve_seconds: float
    available_seconds: float  # remaining - reserve: what TTT may use
    estimated_seconds: float  # TTT seconds of this plan
    full_seconds: float  # TTT seconds if every task got target steps
    task_overhead: float

    @cached_property
    def steps(self) -> dict[str, int]:
        return dict(zip(self.task_ids, self.step_counts))

    @cached_property
    def decisions(self) -> dict[str, str]:
        return dict(zip(self.task_ids, self.decision_list))

    def decision(self, task_id: str) -> str:
        return self.decisions.get(task_id, "no-ttt")

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(DECISIONS, 0)
        for d in self.decision_list:
            out[d] += 1
        return out

    def figures(self, task_id: str | None = None) -> dict[str, Any]:
        """JSON-ready numbers for the event log (no ``stage``/``task`` keys)."""
        out: dict[str, Any] = {}
        if task_id is not None:
            i = self.task_ids.index(task_id) if task_id in self.task_ids else None
            out["decision"] = self.decision_list[i] if i is not None else "no-ttt"
            out["steps"] = self.step_counts[i] if i is not None else 0
            out["step_seconds"] = round(self.step_seconds_list[i], 4) if i is not None else None
        out.update(
            target_steps=self.target_steps,
            min_steps=self.min_steps,
            even_steps=self.even_steps,
            tasks_left=len(self.task_ids),
            remaining=round(self.remaining_seconds, 2),
            reserve=round(self.reserve_seconds, 2),
            available=round(self.available_seconds, 2),
            estimated=round(self.estimated_seconds, 2),
            full=round(self.full_seconds, 2),
            counts=self.counts(),
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        out = {k: v for k, v in asdict(self).items() if not k.endswith(("_list", "_counts"))}
        out["task_ids"] = list(self.task_ids)
        out["steps"] = self.steps
        out["decisions"] = self.decisions
        return out


def plan_steps(
    tasks_remaining: Sequence[tuple[str, float]],
    budget: Budget,
    cost: Any,  # costs.CostModel (its ttt_step_seconds and task_overhead)
    target_steps: int,
    reserve_seconds: float = 0.0,
    *,
    min_steps: int | None = None,
) -> Plan:
    """TTT steps per remaining task so that their TTT plus the reserve ends by the deadline.

    ``tasks_remaining``: (task_id, tokens) for every task not trained yet, the next one
    first. ``reserve_seconds``: what inference and writing still need (``inference_reserve``).
    In order of shrinking time:

    1. everything fits: every task gets ``target_steps`` ("full");
    2. steps are cut evenly to the largest count that fits ("cut");
    3. below ``min_steps`` (default ``default_min_steps``), the cheapest tasks get
       ``min_steps`` as long as they fit ("cut") and the others 0 ("no-ttt");
    4. the reserve itself does not fit: no TTT, and the share of tasks whose inference
       does not fit, from the end of the list, is marked "fallback".

    A pure function of (tasks, clock, cost model): call it again before every task.
    """
    ids, toks = zip(*tasks_remaining) if tasks_remaining else ((), ())
    tokens = np.array(toks, dtype=float)
    n = len(ids)
    target = max(0, int(target_steps))
    lo = default_min_steps(target) if min_steps is None else max(1, min(int(min_steps), target))
    remaining = budget.remaining()
    available = remaining - reserve_seconds
    step_s = np.asarray(cost.ttt_step_seconds(tokens), dtype=float)
    over = cost.task_overhead
    per_step = float(step_s.sum())
    full_seconds = target * per_step + n * over if target else 0.0

    steps = np.zeros(n, dtype=int)
    dec = ["no-ttt"] * n
    even = target
    if n == 0 or target == 0:
        even = 0
    elif available <= 0:
        even = 0
        # Inference of every task does not fit: the tail of the list falls back.
        fits = max(0.0, remaining) / reserve_seconds if reserve_seconds > 0 else 0.0
        k = int(math.floor(fits * n))
        dec = ["no-ttt"] * k + ["fallback"] * (n - k)
    elif full_seconds <= available:
        steps[:] = target
        dec = ["full"] * n
    else:
        even = int((available - n * over) // per_step) if per_step > 0 else target
        even = max(0, min(even, target))
        if even >= lo:
            steps[:] = even
            dec = ["cut"] * n
        else:
            # Not even min_steps for all: as many tasks as fit get min_steps, cheapest first.
            each = lo * step_s + over
            order = np.argsort(each, kind="stable")
            k = int(np.searchsorted(np.cumsum(each[order]), available, side="right"))
            steps[order[:k]] = lo
            for j in order[:k].tolist():
                dec[j] = "cut" if lo < target else "full"
    estimated = float((steps * step_s).sum() + np.count_nonzero(steps) * over)
    return Plan(
        task_ids=tuple(ids),
        step_counts=steps.tolist(),
        decision_list=dec,
        step_seconds_list=step_s.tolist(),
        target_steps=target,
        min_steps=lo,
        even_steps=even,
        remaining_seconds=remaining,
        reserve_seconds=float(reserve_seconds),
        available_seconds=available,
        estimated_seconds=estimated,
        full_seconds=full_seconds,
        task_overhead=over,
    )


__all__ = [
    "Budget",
    "Clock",
    "DeadlineExceeded",
    "FakeClock",
    "Plan",
    "StepGuard",
    "default_min_steps",
    "must_stop",
    "plan_steps",
    "with_deadline",
    "abandoned_alive",
]
