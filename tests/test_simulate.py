"""Whole runs on a fake clock through the pipeline's own schedule (simulate.py)."""

from __future__ import annotations

import time
from functools import cache

import pytest

from arc_ttft import config as C
from arc_ttft import costs as K
from arc_ttft import pipeline, schedule
from arc_ttft.research import simulate as S
from arc_ttft.schedule import TASK_OVERRUN
from arc_ttft.tasks import load_tasks


@cache
def _arc1_eval():
    return tuple(load_tasks("arc1-eval").tasks)


def _cfg(**kw) -> C.RunConfig:
    return C.validate(C.from_flat(C.RunConfig, {"budget_hours": 12, "ttt_steps": 32, **kw}))


@pytest.mark.parametrize("prior_factor", [0.5, 1.0, 2.0])
def test_twelve_hours_of_arc1_eval_no_overruns_every_task_answered(prior_factor):
    """400 tasks, 12 h, full TTT would need 2x the budget, costs +-30%, prior off 2x. The
    truth is not the planner's formula: inference per answer token grows with the prompt
    (x2 at 8k tokens), which the planner does not model."""
    tasks, cfg = _arc1_eval(), _cfg()
    costs = S.true_costs_for(tasks, cfg, ttt_ratio=2.0, infer_share=0.1, context_tokens=8000)
    r = S.simulate(tasks, cfg, costs, runs=8, seed=7, prior_factor=prior_factor)
    print(r.summary())
    assert r.tasks == 400
    assert r.overruns == 0 and r.hard_overruns == 0
    assert r.mean_fraction_used >= 0.90
    assert r.mean_answered == 1.0 and r.mean_inferred >= 0.99
    assert 0 < r.mean_steps < 32


@pytest.mark.parametrize("infer_prior_factor", [0.5, 2.0])
def test_probe_corrects_a_wrong_inference_prior(infer_prior_factor):
    """An inference prior 2x off either starves inference or wastes the budget; the probe
    measures inference before TTT decides how much time to leave for it."""
    tasks = _arc1_eval()[:120]
    cfg = _cfg()
    costs = S.true_costs_for(tasks, cfg, ttt_ratio=2.0, infer_share=0.2, context_tokens=8000)
    kw = dict(runs=6, seed=1, infer_prior_factor=infer_prior_factor)
    probed = S.simulate(tasks, cfg, costs, **kw)
    blind = S.simulate(tasks, _cfg(probe_tasks=0), costs, **kw)
    print("probe:", probed.summary(), "\nno probe:", blind.summary())
    assert probed.overruns == 0 and probed.mean_fraction_used >= 0.90
    assert probed.mean_inferred >= 0.98
    if infer_prior_factor < 1:  # optimistic prior: TTT eats the inference time
        assert blind.mean_inferred < 0.9
    else:  # pessimistic prior: TTT stops early and the budget is left unused
        assert blind.mean_fraction_used < probed.mean_fraction_used - 0.05


def test_answers_that_run_on_stop_at_the_prediction_when_the_budget_binds(monkeypatch):
    """Measured with the tiny model on 20 small tasks at one core: adapters' answers ran
    on past their grids (a chunk of 10 averaged 165 tokens) and the other 10 tasks lost
    their adapter's inference. When the budget binds, answers stop at the predicted grid,
    the length the reserve priced; with time to spare they may still grow to 30x30."""
    tasks, cfg = _arc1_eval()[:40], _cfg()
    calls: list[tuple[bool, bool]] = []  # (base, predicted_cap) of every chunk
    real = S.FakeShard.infer

    def record(self, tasks, adapters, timeout_s, base, predicted_cap=False):
        calls.append((base, predicted_cap))
        return real(self, tasks, adapters, timeout_s, base, predicted_cap)

    monkeypatch.setattr(S.FakeShard, "infer", record)
    run_on = S.true_costs_for(tasks, cfg, ttt_ratio=2.0, infer_share=0.1, adapter_share=5.0)
    capped = S.simulate(tasks, cfg, run_on, runs=4, seed=5)
    print("capped:", capped.summary())
    assert capped.overruns == 0 and capped.mean_inferred >= 0.95
    assert all(cap != base for base, cap in calls)  # the probe's answers are not capped
    # Before: the cap ignored, answers 5x their estimate take the other tasks' time.
    monkeypatch.setattr(
        S.FakeShard, "infer", lambda self, *a, predicted_cap=False: real(self, *a, False)
    )
    uncapped = S.simulate(tasks, cfg, run_on, runs=4, seed=5)
    print("uncapped:", uncapped.summary())
    assert uncapped.mean_inferred < 0.8
    # Time to spare: no task cut, no answer capped.
    calls.clear()
    monkeypatch.setattr(S.FakeShard, "infer", record)
    ample = S.true_costs_for(tasks, cfg, ttt_ratio=0.3, infer_share=0.1, adapter_share=2.0)
    r = S.simulate(tasks, cfg, ample, runs=2, seed=5)
    assert r.mean_inferred == 1.0 and r.mean_steps == 32
    assert calls and not any(cap for _, cap in calls)
    # A prior 4x too slow cuts the first task's plan; the measured speed then leaves time
    # to spare, and the latest plan (all full) decides: no answer capped.
    calls.clear()
    slow = S.simulate(tasks, cfg, ample, runs=2, seed=5, prior_factor=4.0)
    print("slow prior:", slow.summary())
    assert slow.mean_first_steps < 32 and slow.mean_inferred == 1.0
    assert calls and not any(cap for _, cap in calls)


def test_an_underestimated_task_trains_fully_when_the_budget_is_ample():
    """Seen on 03560426: planned at 0.032 s a step, it took 0.11 s and stopped at 36 of
    64 steps (TASK_OVERRUN x its plan) with 41,000 s left. The cap must cut only when the
    overrun would take time that other tasks' plans need."""
    tasks, cfg = _arc1_eval()[:20], _cfg(ttt_steps=64)
    costs = S.true_costs_for(tasks, cfg, ttt_ratio=0.05, infer_share=0.02, jitter=0.0)
    r = S.simulate(tasks, cfg, costs, runs=2, seed=3, prior_factor=1 / 3.4)
    print(r.summary())
    assert r.overruns == 0 and r.mean_steps == 64
    # A binding budget still cuts: the same prior, full TTT needing 2x the budget.
    tight = S.true_costs_for(tasks, cfg, ttt_ratio=2.0, infer_share=0.1)
    r = S.simulate(tasks, cfg, tight, runs=4, seed=3, prior_factor=1 / 3.4)
    assert r.overruns == 0 and r.mean_inferred >= 0.95


def test_the_cost_model_learns_within_the_first_task():
    """A prior 3.4x too fast and a binding budget: priced on the prior, the other tasks'
    plans looked cheap, so the first task trained all 64 steps (3.4x its plan) and the
    rest paid for it. Learning from its first steps, the first task stops near its
    share."""
    tasks, cfg = _arc1_eval()[:20], _cfg(ttt_steps=64)
    costs = S.true_costs_for(tasks, cfg, ttt_ratio=2.0, infer_share=0.05, jitter=0.0)
    r = S.simulate(tasks, cfg, costs, runs=2, seed=3, prior_factor=1 / 3.4)
    print(r.summary(), "first task:", r.mean_first_steps)
    assert r.overruns == 0 and r.mean_inferred >= 0.95
    rest = (r.mean_steps * r.tasks - r.mean_first_steps) / (r.tasks - 1)
    assert r.mean_first_steps <= TASK_OVERRUN / 3.4 * 64 + 2  # the floor, not the plan
    assert r.mean_first_steps < 1.5 * rest


@cache
def _arc2_eval():
    return tuple(load_tasks("arc2-eval").tasks)


@pytest.mark.parametrize("n_tasks, hours, load_s", [(120, 12.0, 60.0), (30, 5 / 60, 5.0)])
def test_arc2_sizes_every_task_gets_its_adapters_inference(monkeypatch, n_tasks, hours, load_s):
    """Issue 21 #10 at ARC-AGI-2 sizes (prompts 700-9,300 tokens), with a truth the
    planner does not share: inference per answer token grows with the prompt (x2 at 8k
    tokens, more than a small model's KV reads add), and the probe's answers stop at a
    third. Full TTT needs 2x the budget. The second case is the issue's run: 30 tasks in
    5 minutes with the tiny model's loads, where a reserve kept at 1.1x while chunks start
    only when 1.2x fits lost 2 to 8% of the tasks (0.92 to 0.97 over four seeds)."""
    tasks, cfg = _arc2_eval()[:n_tasks], _cfg(budget_hours=hours, ttt_steps=64)
    costs = S.true_costs_for(
        tasks, cfg, ttt_ratio=2.0, infer_share=0.3, context_tokens=8000, probe_share=1 / 3,
        load_seconds=load_s, write_seconds=load_s / 60,
    )  # fmt: skip
    r = S.simulate(tasks, cfg, costs, runs=8, seed=1)
    print(r.summary())
    assert r.overruns == 0 and r.mean_inferred >= 0.98 and r.mean_steps >= 8
    # The test can fail: a reserve at half its price loses the last tasks' inference.
    half = K.inference_reserve
    monkeypatch.setattr(K, "inference_reserve", lambda *a, **k: 0.5 * half(*a, **k))
    assert S.simulate(tasks, cfg, costs, runs=3, seed=0).mean_inferred < 0.95


def test_the_reserve_covers_dfs_after_a_probe_of_short_walks(monkeypatch):
    """The probe's base model walks stop early; priced on them without their length, the
    reserve fell short of the adapters' whole walks (half the tasks lost inference)."""
    tasks, cfg = _arc1_eval()[:120], _cfg(sampling="dfs")
    costs = S.true_costs_for(tasks, cfg, ttt_ratio=2.0, infer_share=0.1, probe_share=1 / 3)
    r = S.simulate(tasks, cfg, costs, runs=2, seed=0)
    assert r.overruns == 0 and r.mean_inferred >= 0.98
    infer = S.FakeShard.infer
    monkeypatch.setattr(S.FakeShard, "infer", lambda self, *a: infer(self, *a) and None)
    blind = S.simulate(tasks, cfg, costs, runs=2, seed=0)  # no length reported
    assert blind.mean_inferred < 0.9


def test_a_hung_chunk_costs_that_chunk_only():
    tasks, cfg = _arc1_eval()[:60], _cfg(budget_hours=4.0)
    costs = S.true_costs_for(tasks, cfg, ttt_ratio=2.0, infer_share=0.1)
    r = S.simulate(tasks, cfg, costs, runs=3, seed=2, hang_once=True)
    print(r.summary())
    assert r.mean_faults == 1
    assert r.overruns == 0
    # Only the hung chunk misses its adapter answers (its probed tasks keep base ones).
    assert 0.75 <= r.mean_inferred < 1.0


def test_simulation_is_fast_and_rejects_no_tasks():
    tasks, cfg = _arc1_eval()[:50], _cfg(budget_hours=2.0)
    costs = S.true_costs_for(tasks, cfg)
    t0 = time.monotonic()
    r = S.simulate(tasks, cfg, costs, runs=20, seed=3)
    assert time.monotonic() - t0 < 30
    assert r.runs == 20 and r.overruns == 0
    with pytest.raises(ValueError, match="tasks"):
        S.simulate([], cfg, costs)


def test_the_pipeline_runs_the_simulated_schedule(tmp_path, monkeypatch):
    """The simulator proves the pipeline only if the pipeline runs the same loop."""
    seen = []

    def fake_run_shard(cfg, ops, guard, cost, events, **kw):
        seen.append((type(ops).__name__, [t.id for t in kw["infer_todo"]]))
        return schedule.ShardReport()

    monkeypatch.setattr(schedule, "run_shard", fake_run_shard)
    cfg = C.from_flat(
        C.RunConfig, {"max_tasks": 2, "backend": "hf", "output": str(tmp_path / "run")}
    )
    pipeline.run(cfg, progress=False)
    assert seen and seen[0][0] == "ShardWork" and len(seen[0][1]) == 2


def test_base_votes_double_the_planned_inference_of_fine_tuned_tasks():
    tasks = list(_arc1_eval()[:10])
    plain = K.inference_workload(tasks, _cfg())
    pooled = K.inference_workload(tasks, _cfg(base_votes=True))
    assert pooled[0] == 2 * plain[0] and pooled[1:] == plain[1:]
    # the probe asks the base model only, and without TTT there is nothing to pool
    assert K.inference_workload(tasks, _cfg(base_votes=True), base=True) == plain
    assert K.inference_workload(tasks, _cfg(base_votes=True, ttt_steps=0)) == plain


def test_base_votes_stay_inside_the_budget():
    tasks = _arc1_eval()[:120]
    cfg = _cfg(base_votes=True)
    costs = S.true_costs_for(tasks, cfg, ttt_ratio=2.0, infer_share=0.2)
    r = S.simulate(tasks, cfg, costs, runs=4, seed=3)
    print(r.summary())
    assert r.overruns == 0 and r.mean_inferred >= 0.98 and r.mean_fraction_used >= 0.90
