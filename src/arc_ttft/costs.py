"""The one cost model: what TTT steps and inference cost, predicted and then measured.

- ``CostModel`` predicts seconds per TTT step from the sequence length (a prior, then a
  least-squares fit ``seconds ~ a + b * tokens`` over the measured steps) and inference
  seconds (a prior, scaled by what was measured, answers that stopped early counted at
  their length);
- the workload of inference (``inference_workload``: prompts x answer tokens, plus the
  re-scoring calls) and what it costs (``inference_seconds``, ``inference_reserve``), from
  the tasks and the run's config.

``budget.plan_steps`` and ``schedule.run_shard`` read it; they never price work themselves.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft import config as C
from arc_ttft.infer.base import answer_shape
from arc_ttft.tasks import Task

CHUNKS = 8  # inference is split into about this many chunks (plus the measuring one)
CHUNK_SAFETY = 1.2  # a chunk starts only if 1.2x its estimate fits (its cost varies)
RESERVE_SAFETY = CHUNK_SAFETY  # what the inference reserve keeps per predicted second


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
STEP_FIXED_PER_M = 0.03  # prior: at most this fixed cost per TTT step per million parameters


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
        The per-token rates scale with the model's parameter count (a registry name's, or a
        model folder's from its config.json; 500M when unknown).
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
        # A step's fixed cost (optimizer, autograd, Python) is capped by the model's size
        # too: the 1.1M-parameter arc-nano2 measured 0.024 s a step on CPU, priced at 1.0 s,
        # and the dry run's first plan, made on that prior, cut 3c9b0459 to 18 of 64 steps
        # (wrong; at 64 it is solved). From ~33M parameters up the caps below hold.
        fixed = STEP_FIXED_PER_M * params_m
        if gpu:
            # ~1 s/step at 2048 tokens for a 0.5B model on a T4, LoRA, fp16.
            return cls(
                step_a=min(0.3, fixed),
                step_b=1e-6 * params_m,
                gen_seconds_per_token=1.5e-6 * params_m,
                score_seconds_per_token=2e-7 * params_m,
            )
        # CPU, measured here: 0.5B LoRA, 13.6 s/step at 1024 tokens, 35.5 s at 2048.
        return cls(
            step_a=min(1.0, fixed),
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
    """Parameters (millions) of a registry model, or of a model folder counted from its
    ``config.json`` (what ``arc-ttft finetune`` writes); None when unknown."""
    if not model:
        return None
    try:
        from arc_ttft import models, registry

        cand = models.find_candidate(model)
        if cand is not None:
            return cand.params_m
        config = Path(model) / "config.json"
        if config.is_file():
            return registry.config_params(json.loads(config.read_text())) / 1e6
    except Exception:  # noqa: BLE001 - a prior only; any failure means "unknown"
        return None
    return None


# ---------------------------------------------------------------------------------------
# The workload of inference, priced
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _answer_grid(train: tuple, tests: tuple) -> tuple[int, int]:
    """The largest ``answer_shape`` over a task's test inputs, from the grids' shapes only
    (cached: the planner asks for every remaining task before every piece of work)."""
    grid = lambda shape: None if shape is None else np.zeros(shape, np.int8)  # noqa: E731
    examples = [(grid(i), grid(o)) for i, o in train]
    shapes = [answer_shape(examples, grid(q)) for q in tests]
    return max(s[0] for s in shapes), max(s[1] for s in shapes)


def answer_tokens(task: Task, cfg: C.RunConfig) -> float:
    """Tokens one answer of ``task`` may take: the grid of ``answer_shape`` (the largest
    train output or test input, or what the task's size rule predicts), in digit rows,
    H x (W + 1), plus the end marker: what a trained model's answers mostly are."""
    h, w = _answer_grid(*task.shapes)
    n = h * (w + 1) + 2
    return float(min(n, cfg.infer.max_new_tokens) if cfg.infer.max_new_tokens else n)


DFS_PATHS = 3  # prior: answers' worth of one-token expansions per DFS view
DFS_CANDIDATES = 4  # prior: distinct candidates per test input to score after DFS


def inference_workload(
    tasks: list[Task], cfg: C.RunConfig, base: bool = False
) -> tuple[int, float, int]:
    """(prompts, typical answer tokens, re-scoring calls) that inference of ``tasks`` needs
    (``base``: the probe's, without adapters)."""
    from arc_ttft.selection import request_fields, resolve_rescore, resolve_sampling, resolve_scorer

    sampling = resolve_sampling(cfg.infer)
    n_tests = sum(len(t.test) for t in tasks)
    if sampling == "dfs":
        # A walk expands the greedy path and the branches above min_prob: a prior of
        # DFS_PATHS answers' worth of tokens per view; the probe measures the real cost.
        n_prompts = n_tests * cfg.infer.views * DFS_PATHS
        n_cands = DFS_CANDIDATES
    else:
        n_prompts = n_tests * cfg.infer.views * request_fields(cfg.infer, sampling)["n"]
        n_cands = 2  # ~two distinct candidates per test input
    if cfg.infer.base_votes and cfg.ttt.ttt_steps > 0 and not base:
        n_prompts *= 2  # every view is asked with and without the adapter
    scoring = resolve_scorer(cfg.infer, sampling) != "vote"
    n_scores = n_tests * resolve_rescore(cfg.infer) * n_cands if scoring else 0
    out_tokens = float(np.mean([answer_tokens(t, cfg) for t in tasks for _ in t.test]))
    return n_prompts, out_tokens, n_scores


def planned_per_request(tasks: list[Task], cfg: C.RunConfig, base: bool = False) -> float:
    """Tokens the planner prices per request: an answer's length for greedy or sampling;
    under DFS, ``DFS_PATHS`` answers' worth walked per view."""
    from arc_ttft.selection import resolve_sampling

    per_request = inference_workload(tasks, cfg, base)[1]
    return per_request * (DFS_PATHS if resolve_sampling(cfg.infer) == "dfs" else 1)


def answer_share(
    tasks: list[Task], cfg: C.RunConfig, base: bool, written: float | None
) -> float | None:
    """What a chunk wrote per request (answer tokens; under DFS, the tokens its walks
    took: the backend's nodes) over what the planner priced. The probe's base model stops
    early either way, so its chunks must not make whole answers or walks look cheap."""
    return None if written is None else written / planned_per_request(tasks, cfg, base)


def inference_seconds(
    tasks: list[Task], cfg: C.RunConfig, cost: CostModel, base: bool = False
) -> float:
    """Predicted seconds of inference of ``tasks`` on a loaded backend."""
    return cost.inference_seconds(*inference_workload(tasks, cfg, base)) if tasks else 0.0


def inference_reserve(
    tasks: list[Task], cfg: C.RunConfig, cost: CostModel, include_load: bool = True
) -> float:
    """Seconds to keep for inference of ``tasks``: their predicted cost x ``RESERVE_SAFETY``,
    the backend's load (unless ``include_load=False``, once it is loaded) and one write per
    chunk, at least a floor that scales with the budget (a short run, the dry run or a
    test, is not all reserve)."""
    if not tasks:
        return 0.0
    # The loop starts a chunk only when CHUNK_SAFETY x its estimate fits: the reserve
    # keeps that much, or its last chunks fall back (4 of 30 ARC-AGI-2-sized tasks did).
    est = RESERVE_SAFETY * cost.inference_seconds(*inference_workload(tasks, cfg))
    est += (CHUNKS + 1) * cost.overhead("write")  # every chunk publishes the submission
    est += cost.overhead("load_infer") if include_load else 0.0
    floor = min(60.0, 0.1 * cfg.budget.budget_seconds()) if include_load else 0.0
    return max(floor, est)


__all__ = [
    "CHUNKS",
    "CHUNK_SAFETY",
    "CostModel",
    "MIN_ANSWER_SHARE",
    "PER_PROMPT_SHARE",
    "answer_share",
    "answer_tokens",
    "inference_reserve",
    "inference_seconds",
    "inference_workload",
    "planned_per_request",
]
