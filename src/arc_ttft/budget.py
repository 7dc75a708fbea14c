"""The time budget: deadline, measured costs, TTT step planning, reserves, guards.

Kaggle kills a run at 12 hours and a late submission scores zero, so every stage asks
this module before it starts work:

- ``Budget`` holds the deadline (start + total - safety margin) on a ``Clock`` (real, or
  ``FakeClock`` for tests and simulation).
- ``CostModel`` predicts seconds per TTT step from the sequence length (a prior, then a
  least-squares fit ``seconds ~ a + b * tokens`` over the measured steps) and inference
  seconds (a prior, scaled by what was measured).
- ``plan_steps`` gives every remaining task its TTT steps so that TTT of all of them plus
  the inference reserve fits before the deadline; it is a pure function of the current
  state, so the pipeline calls it again before every task with fresh measurements.
- ``Budget.can_start`` / ``Budget.step_guard`` never let work start whose measured cost
  says it cannot finish before the deadline minus the reserve.

The order of work (probe, TTT, inference chunks) is ``schedule.run_shard``'s; the fake-clock
simulation of whole runs is ``research/simulate.py``.

Over 500 lines: the guard, the cost model it learns and the planner that reads it are one
contract (every figure a plan uses is the cost model's), kept in one file to read together.
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
    measured step time. Works on floats and on numpy arrays (the simulation uses it
    vectorised, the training loop through ``StepGuard``).
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
# Cost model
# ---------------------------------------------------------------------------------------


# Share of a full-length answer's inference cost that does not grow with its length (the
# prompt's prefill, the request's set-up). Measured with the tiny model on CPU: an answer
# that stopped at once cost 0.06 s per request, whole grids about 0.35 s.
PER_PROMPT_SHARE = 0.15
# The shortest answers (over their estimated length) a measurement is counted at. Measured
# on arc1-eval with the tiny model: the probe's answers stopped after 1.4 tokens, and
# answers after a few TTT steps ran from 1.2 tokens to well past the estimate. Taken as
# if whole, the probe left 45 s for 55 s of inference (7 of 40 tasks lost theirs); taken
# at its 1.4 tokens, 190 s for 25 s (TTT starved).
MIN_ANSWER_SHARE = 0.25


@dataclass
class CostModel:
    """Seconds per TTT step and per inference, from a prior and then from measurements.

    TTT: ``seconds/step = a + b * tokens``. Until measurements span a useful range of
    lengths (max/min >= 1.5 over >= 3 tasks) the prior's shape is kept and only scaled by
    the measured/predicted ratio; afterwards a weighted least-squares line is fitted over
    every observed task (weight = its steps). Running sums keep each update O(1).

    Inference: ``seconds = scale * (n_prompts * out_tokens * gen_seconds_per_token +
    n_scores * out_tokens * score_seconds_per_token)``. Until inference is measured,
    ``scale`` is the TTT speed factor (a device slower than assumed is slower at both);
    afterwards the measured seconds over the unscaled estimates, pooled over every call.

    Overheads (model loads, writing, per-task adapter work) start at prior values and are
    replaced by the latest measurement.
    """

    step_a: float = 0.5
    step_b: float = 1e-3
    gen_seconds_per_token: float = 2e-3
    score_seconds_per_token: float = 2e-4
    task_overhead: float = 2.0
    overheads: dict[str, float] = field(
        default_factory=lambda: {"load_train": 60.0, "load_infer": 120.0, "write": 5.0}
    )
    # measurement state (running sums, weights = steps)
    n_obs: int = 0
    infer_scale: float | None = None
    _infer_sums: list[float] = field(default_factory=lambda: [0.0, 0.0], repr=False)
    _sums: list[float] = field(default_factory=lambda: [0.0] * 6, repr=False)
    _xmin: float = math.inf
    _xmax: float = 0.0
    _fit: tuple[float, float] | None = field(default=None, repr=False)

    @classmethod
    def for_device(cls, device: Any = None, model: str | None = None) -> CostModel:
        """A prior for a device ("cpu", "cuda:0", ...) and model name (registry or path).

        Rough, deliberately on the slow side; measurements take over after the first task.
        The per-token rates scale with the model's parameter count when it is a registry name.
        """
        dev = str(device or "cpu")
        gpu = dev.startswith("cuda")
        if model == "tiny":
            return cls(
                step_a=0.02 if gpu else 0.03,
                step_b=5e-6 if gpu else 3e-5,
                gen_seconds_per_token=5e-5 if gpu else 2e-4,
                score_seconds_per_token=1e-5 if gpu else 2e-5,
                task_overhead=0.2,
                overheads={"load_train": 5.0, "load_infer": 5.0, "write": 1.0},
            )
        params_m = _params_m(model) or 500.0
        if gpu:
            # ~1 s/step at 2048 tokens for a 0.5B model on a T4, LoRA, fp16.
            return cls(
                step_a=0.3,
                step_b=1e-6 * params_m,
                gen_seconds_per_token=1.5e-6 * params_m,
                score_seconds_per_token=2e-7 * params_m,
            )
        # CPU, measured here: 0.5B LoRA, 13.6 s/step at 1024 tokens, 35.5 s at 2048.
        return cls(
            step_a=1.0,
            step_b=3.5e-5 * params_m,
            gen_seconds_per_token=4e-5 * params_m,
            score_seconds_per_token=5e-6 * params_m,
            overheads={"load_train": 30.0, "load_infer": 30.0, "write": 5.0},
        )

    # --- TTT ---------------------------------------------------------------------------

    def _prior(self, tokens):
        return self.step_a + self.step_b * tokens

    def speed_factor(self) -> float:
        """Measured / prior seconds over all observed TTT steps (1.0 before any)."""
        sw, _, sy, _, _, sp = self._sums
        return sy / sp if sw > 0 and sp > 0 else 1.0

    def ttt_fit(self) -> tuple[float, float]:
        """The current (a, b) of ``seconds/step = a + b * tokens``."""
        if self._fit is None:
            self._fit = self._compute_fit()
        return self._fit

    def _compute_fit(self) -> tuple[float, float]:
        scaled = (self.step_a * self.speed_factor(), self.step_b * self.speed_factor())
        if self.n_obs < 3 or self._xmax < 1.5 * self._xmin:
            return scaled
        sw, sx, sy, sxx, sxy, _ = self._sums
        det = sw * sxx - sx * sx
        if det <= 0:
            return scaled
        b = (sw * sxy - sx * sy) / det
        a = (sy - b * sx) / sw
        if b <= 0:
            return scaled
        if a < 0:  # a negative intercept would make short tasks free: fit through 0
            a, b = 0.0, sxy / sxx
        return a, b

    def ttt_step_seconds(self, tokens):
        """Predicted seconds of one TTT step on ``tokens`` (a number or a numpy array)."""
        a, b = self.ttt_fit()
        return a + b * tokens

    def observe_ttt(self, tokens: float, seconds_per_step: float, steps: int = 1) -> None:
        """Record a task's measured mean step time (``steps`` weights it)."""
        if steps <= 0 or not seconds_per_step > 0 or not tokens > 0:
            return
        w, x, y = float(steps), float(tokens), float(seconds_per_step)
        s = self._sums
        s[0] += w
        s[1] += w * x
        s[2] += w * y
        s[3] += w * x * x
        s[4] += w * x * y
        s[5] += w * self._prior(x)
        self._xmin = min(self._xmin, x)
        self._xmax = max(self._xmax, x)
        self.n_obs += 1
        self._fit = None

    # --- inference ---------------------------------------------------------------------

    def _infer_scale(self) -> float:
        return self.infer_scale if self.infer_scale is not None else self.speed_factor()

    def inference_seconds(self, n_prompts: int, out_tokens: float, n_scores: int = 0) -> float:
        """Predicted seconds to generate ``n_prompts`` answers of ``out_tokens`` tokens and
        re-score ``n_scores`` candidates (no model load: see ``overhead``)."""
        raw = (
            n_prompts * out_tokens * self.gen_seconds_per_token
            + n_scores * out_tokens * self.score_seconds_per_token
        )
        return raw * self._infer_scale()

    def observe_inference(
        self, estimated_seconds: float, actual_seconds: float, answer_share: float | None = None
    ) -> None:
        """Record an inference call: ``estimated_seconds`` must come from
        ``inference_seconds`` with the current state (the pipeline computes it right before).
        ``answer_share``: the answers' mean length over the length estimated for them. The
        estimate is then taken at that length (all but ``PER_PROMPT_SHARE`` of an answer's
        cost grows with it), so answers that stopped early do not make full ones look cheap.
        Shares below ``MIN_ANSWER_SHARE`` count as that: answers that stopped at once (a
        model that had not learnt the task) say little about how long the next ones get.
        """
        if answer_share is not None:  # 0: every answer ended at once
            share = max(answer_share, MIN_ANSWER_SHARE)
            estimated_seconds *= PER_PROMPT_SHARE + (1 - PER_PROMPT_SHARE) * share
        if not estimated_seconds > 0 or actual_seconds < 0:
            return
        # Pooled over every call (sum of actual / sum of raw estimates): one noisy chunk
        # must not swing the reserve that TTT leaves for all the others.
        self._infer_sums[0] += actual_seconds
        self._infer_sums[1] += estimated_seconds / self._infer_scale()
        self.infer_scale = self._infer_sums[0] / self._infer_sums[1]

    # --- overheads ---------------------------------------------------------------------

    def overhead(self, name: str) -> float:
        """Measured (or prior) seconds of a fixed cost: load_train, load_infer, write, ..."""
        return self.overheads.get(name, 0.0)

    def observe_overhead(self, name: str, seconds: float) -> None:
        """Record a fixed cost; the latest measurement replaces the prior."""
        if name == "ttt_task":
            self.task_overhead = float(seconds)
        else:
            self.overheads[name] = float(seconds)

    def to_dict(self) -> dict[str, Any]:
        """What the event log records about the cost model."""
        a, b = self.ttt_fit()
        return {
            "step_a": round(a, 6),
            "step_b": round(b, 9),
            "ttt_observations": self.n_obs,
            "speed_factor": round(self.speed_factor(), 4),
            "infer_scale": None if self.infer_scale is None else round(self.infer_scale, 4),
            "task_overhead": round(self.task_overhead, 3),
            "overheads": {k: round(v, 3) for k, v in self.overheads.items()},
        }


def _params_m(model: str | None) -> float | None:
    """Parameters (millions) of a registry model, or None (unknown, or models missing)."""
    if not model:
        return None
    try:
        from arc_ttft import models

        cand = models.find_candidate(model)
    except Exception:  # noqa: BLE001 - a prior only; any failure means "unknown"
        return None
    return cand.params_m if cand is not None else None


def inference_reserve(
    cost: CostModel,
    n_prompts: int,
    out_tokens: float,
    n_scores: int = 0,
    *,
    safety: float = 1.1,
    include_load: bool = True,
    floor_seconds: float = 60.0,
) -> float:
    """Seconds to keep free for inference: measured cost x safety + overheads, floored.

    ``n_prompts`` = test inputs x views x samples; ``out_tokens`` = typical answer tokens.
    Overheads: loading the inference backend (unless ``include_load=False``, once it is
    loaded) and writing the submission.
    """
    est = safety * cost.inference_seconds(n_prompts, out_tokens, n_scores)
    est += cost.overhead("write") + (cost.overhead("load_infer") if include_load else 0.0)
    return max(floor_seconds, est)


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
    cost: CostModel,
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
    "CostModel",
    "DeadlineExceeded",
    "FakeClock",
    "Plan",
    "StepGuard",
    "default_min_steps",
    "inference_reserve",
    "must_stop",
    "plan_steps",
    "with_deadline",
    "abandoned_alive",
]
