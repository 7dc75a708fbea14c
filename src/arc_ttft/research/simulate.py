"""Whole runs on a fake clock: the pipeline's own schedule with fake, noisy operations.

``simulate`` runs ``schedule.run_shard`` (the loop ``pipeline.run`` uses) with
``FakeShard`` operations that only advance a ``budget.FakeClock``: training steps, model
loads, inference chunks each cost their "true" seconds, jittered, while the cost model
starts from a prior that is off by a chosen factor and learns from what it measures.
No sleeping, so 12-hour runs over 400 tasks take well under a second each. It counts
overruns (runs that end after the deadline), the budget used and how many tasks got
inference: the figures of ``benchmarks/budget.md`` (``scripts/bench_budget.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from arc_ttft import budget as B
from arc_ttft import config as C
from arc_ttft import schedule, shard
from arc_ttft.costs import PER_PROMPT_SHARE, CostModel, inference_workload, planned_per_request
from arc_ttft.events import EventLog
from arc_ttft.tasks import Task


@dataclass
class TrueCosts:
    """What things really cost in a simulated run (seconds), before jitter."""

    step_per_token: float  # one TTT step = this x the task's tokens
    gen_per_token: float  # inference: this x prompts x answer tokens (schedule's workload)
    load_seconds: float = 60.0  # each model load (trainer, backend)
    task_overhead: float = 2.0  # per trained task (adapter save)
    write_seconds: float = 1.0  # per published chunk
    jitter: float = 0.3  # every cost x uniform(1 - jitter, 1 + jitter)
    # The probe's base-model answers (or DFS walks) stop at this share of the planned
    # length; adapters' run whole. Its chunks cost PER_PROMPT_SHARE + the rest x this.
    probe_share: float = 1.0
    # Adapters' answers run to this share of the planned length (> 1: answers that do not
    # stop), except when the schedule caps them at the prediction (a binding budget).
    adapter_share: float = 1.0
    # Inference per answer token grows with the prompt (attention over a longer context,
    # a longer prefill): x (1 + prompt tokens / context_tokens). The planner prices answer
    # tokens only, so this truth is not its own formula. 0: no growth.
    context_tokens: float = 0.0

    def context_factor(self, tokens: float) -> float:
        return 1.0 + tokens / self.context_tokens if self.context_tokens > 0 else 1.0


@dataclass
class FakeShard:
    """``schedule.ShardOps`` that advance a fake clock by the true, jittered costs."""

    clock: B.FakeClock
    cfg: C.RunConfig
    costs: TrueCosts
    tokens: dict[str, float]
    rng: np.random.Generator
    answered: set[str] = field(default_factory=set)
    hang_once: bool = False  # the next chunk of several tasks hangs (then this resets)

    def _jit(self) -> float:
        j = self.costs.jitter
        return float(self.rng.uniform(1 - j, 1 + j))

    def load_trainer(self) -> None:
        self.clock.advance(self.costs.load_seconds * self._jit())

    def _steps(self, tokens: float, steps: int, should_stop) -> tuple[int, float]:
        t0, done = self.clock.now(), 0
        while done < steps and not should_stop():
            self.clock.advance(self.costs.step_per_token * tokens * self._jit())
            done += 1
        return done, self.clock.now() - t0

    def train(self, task: Task, steps: int, should_stop) -> schedule.TrainOutcome:
        done, seconds = self._steps(self.tokens[task.id], steps, should_stop)
        self.clock.advance(self.costs.task_overhead * self._jit())
        return schedule.TrainOutcome(done, seconds, "adapter" if done else None)

    def train_shared(self, tasks: list[Task], should_stop) -> schedule.TrainOutcome:
        mean = float(np.mean([self.tokens[t.id] for t in tasks]))
        done, seconds = self._steps(mean, self.cfg.ttt.ttt_steps * len(tasks), should_stop)
        return schedule.TrainOutcome(done, seconds, "shared" if done else None)

    def close_trainer(self) -> None:
        pass

    def load_backend(self) -> None:
        self.clock.advance(self.costs.load_seconds * self._jit())

    def infer(
        self, tasks: list[Task], adapters, timeout_s: float, base: bool, predicted_cap: bool = False
    ) -> float | None:
        if self.hang_once and len(tasks) > 1:
            self.hang_once = False
            self.clock.advance(timeout_s)
            raise B.DeadlineExceeded(f"simulated hang after {timeout_s:.0f} s")
        share = self.costs.probe_share if base else self.costs.adapter_share
        if predicted_cap:
            share = min(share, 1.0)
        truth = sum(
            self.costs.gen_per_token
            * _raw_workload([t], self.cfg, base)
            * self.costs.context_factor(self.tokens[t.id])
            * self._jit()
            for t in tasks
        ) * (PER_PROMPT_SHARE + (1 - PER_PROMPT_SHARE) * share)
        if truth > timeout_s:
            self.clock.advance(timeout_s)
            raise B.DeadlineExceeded(f"simulated chunk took over {timeout_s:.0f} s")
        self.clock.advance(truth)
        self.answered |= {t.id for t in tasks}
        if share == 1.0:
            return None  # whole answers: what the planner priced
        # what the backend reports: tokens written (or walked, under DFS) per request
        return share * planned_per_request(tasks, self.cfg, base)

    def close_backend(self) -> None:
        pass

    def publish(self) -> None:
        self.clock.advance(self.costs.write_seconds * self._jit())


def _raw_workload(tasks: list[Task], cfg: C.RunConfig, base: bool = False) -> float:
    """prompts x answer tokens (+ re-scoring at the same rate): the unit of inference cost."""
    n_prompts, out_tokens, n_scores = inference_workload(tasks, cfg, base)
    return (n_prompts + 0.1 * n_scores) * out_tokens


@dataclass
class SimulationResult:
    """What ``simulate`` saw over all runs."""

    runs: int
    tasks: int
    budget_seconds: float
    margin_seconds: float
    overruns: int  # runs that ended after the deadline (start + budget - margin)
    hard_overruns: int  # runs that ended after start + budget (Kaggle would kill them)
    max_overrun_seconds: float  # worst end past the deadline (0 when none)
    mean_fraction_used: float  # end time / budget, mean over runs
    min_fraction_used: float
    max_fraction_used: float
    mean_steps: float  # TTT steps per task actually run
    mean_first_steps: float  # steps of the first task trained (on the prior alone)
    mean_inferred: float  # share of tasks answered with their adapter
    mean_answered: float  # share of tasks with any model answer (adapter or probe)
    mean_faults: float  # fault events per run (hangs, refused backends, ...)

    def summary(self) -> str:
        return (
            f"{self.runs} runs x {self.tasks} tasks: overruns {self.overruns} "
            f"(hard {self.hard_overruns}, worst {self.max_overrun_seconds:.0f} s), "
            f"budget used mean {self.mean_fraction_used:.4f} (min {self.min_fraction_used:.4f}, "
            f"max {self.max_fraction_used:.4f}), steps/task {self.mean_steps:.1f}, "
            f"inferred {self.mean_inferred:.3f}, answered {self.mean_answered:.3f}, "
            f"faults {self.mean_faults:.2f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def true_costs_for(
    tasks: Sequence[Task],
    cfg: C.RunConfig,
    ttt_ratio: float = 2.0,
    infer_share: float = 0.1,
    **kw: Any,
) -> TrueCosts:
    """True costs scaled to the budget: full TTT (target steps everywhere) needs
    ``ttt_ratio`` x the budget, and inference of every task ``infer_share`` of it."""
    total = cfg.budget.budget_seconds()
    tokens = sum(_tokens(t, cfg) for t in tasks)
    grow = TrueCosts(0.0, 0.0, context_tokens=kw.get("context_tokens", 0.0)).context_factor
    work = sum(_raw_workload([t], cfg) * grow(_tokens(t, cfg)) for t in tasks)
    return TrueCosts(
        step_per_token=ttt_ratio * total / (max(1, cfg.ttt.ttt_steps) * tokens),
        gen_per_token=infer_share * total / work,
        **kw,
    )


_TOKENS: dict[tuple[str, str, int | None], int] = {}  # counting is slow: once per task


def _tokens(task: Task, cfg: C.RunConfig) -> float:
    """The pipeline's own training-token estimate of ``task`` (cached)."""
    key = (task.id, cfg.model.format, cfg.model.max_seq_len)
    if key not in _TOKENS:
        _TOKENS[key] = shard.estimate_tokens(task, *key[1:])
    return float(_TOKENS[key])


def simulate(
    tasks: Sequence[Task],
    cfg: C.RunConfig,
    costs: TrueCosts,
    *,
    runs: int = 100,
    seed: int = 0,
    prior_factor: float = 1.0,
    infer_prior_factor: float | None = None,
    hang_once: bool = False,
) -> SimulationResult:
    """Run ``schedule.run_shard`` ``runs`` times on a fake clock; count what matters.

    The cost model's prior is ``prior_factor`` x the truth for TTT and
    ``infer_prior_factor`` (default the same) x the truth for inference and loads.
    ``cfg`` gives the budget, margin, steps, views, probe size: the settings the
    pipeline would run with. ``hang_once``: in every run, the first inference chunk of
    several tasks hangs until its timeout.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("simulate: tasks is empty; give at least one task")
    ipf = prior_factor if infer_prior_factor is None else infer_prior_factor
    tokens = {t.id: _tokens(t, cfg) for t in tasks}
    score_rate = 0.1 * costs.gen_per_token  # as _raw_workload counts re-scoring
    total, margin = cfg.budget.budget_seconds(), cfg.budget.margin_seconds()
    rng = np.random.default_rng(seed)
    used, steps, first, inferred, answered, faults = [], [], [], [], [], []
    over = hard = 0
    worst = 0.0
    for _ in range(runs):
        clock = B.FakeClock()
        guard = B.Budget(clock, total, margin)
        cost = CostModel(
            step_a=0.0,
            step_b=costs.step_per_token * prior_factor,
            gen_seconds_per_token=costs.gen_per_token * ipf,
            score_seconds_per_token=score_rate * ipf,
            task_overhead=costs.task_overhead * prior_factor,
            overheads={
                "load_train": costs.load_seconds * ipf,
                "load_infer": costs.load_seconds * ipf,
                "write": costs.write_seconds,
            },
        )
        ops = FakeShard(clock, cfg, costs, tokens, rng, hang_once=hang_once)
        events = EventLog()
        report = schedule.run_shard(
            cfg, ops, guard, cost, events,
            tokens=tokens, ttt_todo=tasks, infer_todo=tasks, adapters={},
        )  # fmt: skip
        clock.advance(costs.write_seconds * ops._jit())  # the final submission
        end = guard.elapsed()
        over += end > total - margin
        hard += end > total
        worst = max(worst, end - (total - margin))
        used.append(end / total)
        steps.append(sum(report.trained.values()) / len(tasks))
        first.append(next(iter(report.trained.values()), 0))  # in training order
        inferred.append(len(set(report.inferred)) / len(tasks))
        answered.append(len(set(report.inferred) | set(report.probed)) / len(tasks))
        faults.append(len(report.faults))
    u = np.array(used)
    return SimulationResult(
        runs=runs,
        tasks=len(tasks),
        budget_seconds=float(total),
        margin_seconds=float(margin),
        overruns=int(over),
        hard_overruns=int(hard),
        max_overrun_seconds=float(max(0.0, worst)),
        mean_fraction_used=float(u.mean()),
        min_fraction_used=float(u.min()),
        max_fraction_used=float(u.max()),
        mean_steps=float(np.mean(steps)),
        mean_first_steps=float(np.mean(first)),
        mean_inferred=float(np.mean(inferred)),
        mean_answered=float(np.mean(answered)),
        mean_faults=float(np.mean(faults)),
    )


__all__ = ["FakeShard", "SimulationResult", "TrueCosts", "simulate", "true_costs_for"]
