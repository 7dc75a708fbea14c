"""The budget guard: deadline, cost model, step planning, guards, and the fake-clock simulation."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arc_ttft import budget as B
from arc_ttft import config as C
from arc_ttft import costs

# ---------------------------------------------------------------------------------------
# Clock and Budget
# ---------------------------------------------------------------------------------------


def test_budget_deadline_remaining_and_fraction():
    clock = B.FakeClock(100.0)
    b = B.Budget(clock, 1000.0, 50.0)
    assert b.start == 100.0 and b.deadline == 1050.0 and b.margin == 50.0
    assert b.remaining() == 950.0 and not b.expired()
    clock.advance(250)
    assert b.elapsed() == 250 and b.fraction_used() == 0.25 and b.remaining() == 700
    clock.advance(700)
    assert b.expired() and b.remaining() == 0


def test_budget_rejects_bad_arguments_with_fix():
    with pytest.raises(ValueError, match="total_seconds.*budget-hours"):
        B.Budget(B.FakeClock(), 0)
    with pytest.raises(ValueError, match="margin_seconds.*safety-margin"):
        B.Budget(B.FakeClock(), 100, 100)
    with pytest.raises(ValueError):
        B.FakeClock().advance(-1)


def test_the_real_clock_runs_at_wall_speed_and_the_budget_counts_on_it():
    c = B.Clock()
    t0, w0 = c.now(), time.time()
    time.sleep(0.2)
    dt, wall = c.now() - t0, time.time() - w0
    assert 0.19 <= dt <= wall + 0.05  # seconds, not ticks; never ahead of the wall
    # a budget started 100 s ago (the notebook's first cell) has 100 s less left
    b = B.Budget(c, 1000, 10, start=c.now() - 100)
    assert b.elapsed() == pytest.approx(100, abs=0.5)
    assert b.remaining() == pytest.approx(1000 - 10 - 100, abs=0.5)


def test_can_start_respects_reserve_and_safety():
    clock = B.FakeClock()
    b = B.Budget(clock, 100, 10)  # deadline 90
    assert b.can_start(60, reserve_seconds=30)
    assert not b.can_start(61, reserve_seconds=30)
    assert not b.can_start(50, reserve_seconds=30, safety=1.25)
    clock.advance(91)
    assert not b.can_start(0)


def test_step_guard_stops_before_a_step_that_cannot_end_in_time():
    clock = B.FakeClock()
    b = B.Budget(clock, 100, 0)
    guard = b.step_guard(step_seconds=4.0, reserve_seconds=20.0, safety=1.0)  # limit 80
    steps = 0
    while not guard():
        clock.advance(4.0)
        steps += 1
    assert steps == 20 and clock.now() <= 80 and guard.stopped


def test_step_guard_uses_the_measured_step_when_slower_than_predicted():
    clock = B.FakeClock()
    b = B.Budget(clock, 100, 0)
    guard = b.step_guard(step_seconds=1.0, safety=1.0)
    steps = 0
    while not guard():
        clock.advance(9.0)  # really 9 s, predicted 1 s
        steps += 1
    assert clock.now() <= 100
    assert steps == 11  # 99 s: a 12th step would end at 108


def test_with_deadline_returns_raises_and_propagates():
    assert B.with_deadline(lambda: 42, 5) == 42
    with pytest.raises(B.DeadlineExceeded):
        B.with_deadline(lambda: time.sleep(2), 0.05)
    with pytest.raises(KeyError):
        B.with_deadline(lambda: {}["x"], 5)


def test_a_cancelled_call_ends_instead_of_being_abandoned():
    """Issue 21 #7: a call past its deadline kept running (and holding its GPU memory)
    while the backend was rebuilt beside it. With ``cancel`` it is told to stop and ends."""
    import threading

    cancel, release = threading.Event(), threading.Event()
    seen = []

    def cooperative():
        while not cancel.wait(0.01):
            pass
        seen.append(threading.current_thread())
        raise RuntimeError("cancelled")

    n = len(B._ABANDONED)
    with pytest.raises(B.DeadlineExceeded, match="cancelled"):
        B.with_deadline(cooperative, 0.05, cancel, grace=5)
    assert not seen[0].is_alive() and len(B._ABANDONED) == n
    # One that ignores the event is abandoned after the grace, and counted as running.
    with pytest.raises(B.DeadlineExceeded, match="did not finish"):
        B.with_deadline(lambda: release.wait(30), 0.05, threading.Event(), grace=0.05)
    assert len(B._ABANDONED) == n + 1 and B.abandoned_alive()
    release.set()
    B._ABANDONED[-1].join(5)
    assert not B._ABANDONED[-1].is_alive()


# ---------------------------------------------------------------------------------------
# Cost model
# ---------------------------------------------------------------------------------------


def test_cost_model_prior_then_scale_then_fit():
    cost = costs.CostModel(step_a=1.0, step_b=0.01)
    assert cost.ttt_step_seconds(100) == pytest.approx(2.0)
    # One length measured 2x slower than the prior: the prior's shape, scaled.
    cost.observe_ttt(100, 4.0, steps=10)
    assert cost.speed_factor() == pytest.approx(2.0)
    assert cost.ttt_step_seconds(200) == pytest.approx(2 * (1 + 2))
    # Measurements over a range of lengths: the true line (0.5 + 0.003 t) is recovered.
    cost = costs.CostModel(step_a=1.0, step_b=0.01)
    for t in (300, 800, 1500, 3000):
        cost.observe_ttt(t, 0.5 + 0.003 * t, steps=8)
    a, b = cost.ttt_fit()
    assert a == pytest.approx(0.5) and b == pytest.approx(0.003)
    np.testing.assert_allclose(cost.ttt_step_seconds(np.array([1000.0])), [3.5])


def test_cost_model_fit_learns_through_noise_and_never_goes_negative():
    rng = np.random.default_rng(0)
    cost = costs.CostModel(step_a=0.0, step_b=1e-4)
    for t in rng.integers(200, 5000, 200):
        cost.observe_ttt(float(t), 2e-3 * t * rng.uniform(0.7, 1.3), steps=16)
    a, b = cost.ttt_fit()
    assert a >= 0 and b > 0
    assert cost.ttt_step_seconds(2000) == pytest.approx(4.0, rel=0.05)
    cost.observe_ttt(100, 0.0, steps=3)  # nonsense measurements are ignored
    cost.observe_ttt(100, 1.0, steps=0)
    assert cost.n_obs == 200


def test_inference_learns_from_ttt_speed_then_from_measurements():
    cost = costs.CostModel(step_a=0.0, step_b=1e-3, gen_seconds_per_token=1e-3)
    assert cost.inference_seconds(10, 100) == pytest.approx(1.0)
    cost.observe_ttt(1000, 2.0, steps=4)  # device 2x slower than the prior
    assert cost.inference_seconds(10, 100) == pytest.approx(2.0)
    est = cost.inference_seconds(10, 100)
    cost.observe_inference(est, 3 * est)  # measured: 3x the estimate
    assert cost.inference_seconds(10, 100) == pytest.approx(6.0)


def test_answers_that_stopped_early_do_not_make_whole_ones_look_cheap():
    """The probe's base-model answers often stop after a few tokens; adapters then write
    whole grids. Measured at the length written, the cost model prices whole answers as
    they will cost (the under-priced reserve lost 7 of 40 tasks' inference in CI)."""

    def truth(requests: int, tokens: float) -> float:  # 0.04 s a request + 3 ms a token
        return requests * (0.04 + 0.003 * tokens)

    probe = costs.CostModel(gen_seconds_per_token=1e-3)
    est = probe.inference_seconds(8, 100)  # 8 requests, answers of 100 tokens expected
    probe.observe_inference(est, truth(8, 30), answer_share=30 / 100)  # they stopped at 30
    assert probe.inference_seconds(40, 100) == pytest.approx(truth(40, 100), rel=0.2)
    # Counted at the expected length (no share), the same probe under-prices them 2.5x.
    blind = costs.CostModel(gen_seconds_per_token=1e-3)
    blind.observe_inference(est, truth(8, 30))
    assert blind.inference_seconds(40, 100) < 0.45 * truth(40, 100)
    # Answers that stopped at once count as a quarter of their length: priced between
    # what they cost and what whole ones would.
    early = costs.CostModel(gen_seconds_per_token=1e-3)
    early.observe_inference(est, truth(8, 1), answer_share=1 / 100)
    share = costs.PER_PROMPT_SHARE + (1 - costs.PER_PROMPT_SHARE) * costs.MIN_ANSWER_SHARE
    assert early.inference_seconds(40, 100) == pytest.approx(truth(40, 1) / share)
    assert truth(40, 1) < early.inference_seconds(40, 100) < truth(40, 100)
    empty = costs.CostModel(gen_seconds_per_token=1e-3)  # every answer ended at once
    empty.observe_inference(est, truth(8, 1), answer_share=0.0)
    assert empty.inference_seconds(40, 100) == pytest.approx(early.inference_seconds(40, 100))
    # Answers longer than expected lower the rate per token instead of raising it.
    long = costs.CostModel(gen_seconds_per_token=1e-3)
    long.observe_inference(est, truth(8, 200), answer_share=2.0)
    assert long.inference_seconds(40, 100) == pytest.approx(truth(40, 100), rel=0.2)


def test_dfs_is_priced_by_the_nodes_its_walks_took():
    """Under DFS the answer-length correction was off (no answer_tokens): the probe's base
    model walks stop after a few nodes, and its chunks priced the adapters' whole walks
    several times too cheap."""
    from arc_ttft import config as C
    from arc_ttft.tasks import load_tasks

    tasks = load_tasks("arc1-eval").tasks[:4]
    cfg = C.from_flat(C.RunConfig, {"sampling": "dfs", "views": 2, "rescore": 0})
    n_prompts, out_tokens, n_scores = costs.inference_workload(tasks, cfg)
    walk = costs.DFS_PATHS * out_tokens  # the planner's tokens per view
    views = n_prompts // costs.DFS_PATHS

    def truth(nodes_per_view: float) -> float:  # 2 ms a node + 50 ms a view
        return views * (0.05 + 0.002 * nodes_per_view)

    probe = costs.CostModel(gen_seconds_per_token=1e-4)
    est = probe.inference_seconds(n_prompts, out_tokens, n_scores)
    share = costs.answer_share(tasks, cfg, True, walk / 3)  # walks stopped at a third
    assert share == pytest.approx(1 / 3)
    probe.observe_inference(est, truth(walk / 3), answer_share=share)
    full = probe.inference_seconds(n_prompts, out_tokens, n_scores)
    assert full >= 0.8 * truth(walk)  # the adapters' whole walks are about covered
    blind = costs.CostModel(gen_seconds_per_token=1e-4)  # no share, as before
    blind.observe_inference(est, truth(walk / 3))
    assert blind.inference_seconds(n_prompts, out_tokens, n_scores) < 0.4 * truth(walk)
    greedy = C.from_flat(C.RunConfig, {"sampling": "greedy", "views": 2, "rescore": 0})
    assert costs.answer_share(tasks, greedy, True, out_tokens / 2) == pytest.approx(0.5)


def test_inference_reserve_keeps_the_loops_safety_its_overheads_and_a_floor():
    from arc_ttft.tasks import load_tasks

    tasks = load_tasks("arc1-eval").tasks[:3]
    cfg = C.validate(C.from_flat(C.RunConfig, {"budget_hours": 12, "rescore": 0}))
    cost = costs.CostModel(gen_seconds_per_token=3e-2, overheads={"load_infer": 30.0, "write": 2.0})
    work = costs.inference_seconds(tasks, cfg, cost)
    writes = (costs.CHUNKS + 1) * 2.0  # every chunk publishes the submission
    # A chunk starts only when CHUNK_SAFETY x its estimate fits: the reserve holds that much.
    want = costs.CHUNK_SAFETY * work + writes
    assert work > 60 and costs.inference_reserve(tasks, cfg, cost) == pytest.approx(want + 30)
    assert costs.inference_reserve(tasks, cfg, cost, include_load=False) == pytest.approx(want)
    cost.observe_overhead("load_infer", 50.0)
    assert costs.inference_reserve(tasks, cfg, cost) == pytest.approx(want + 50)
    # The floor: a tenth of a short budget, at most 60 s; nothing to infer, nothing kept.
    cheap = costs.CostModel(gen_seconds_per_token=1e-9, overheads={"load_infer": 0.0, "write": 0.0})
    assert costs.inference_reserve(tasks, cfg, cheap) == 60
    short = C.validate(C.from_flat(C.RunConfig, {"budget_minutes": 2, "rescore": 0}))
    assert costs.inference_reserve(tasks, short, cheap) == pytest.approx(12)
    assert costs.inference_reserve([], cfg, cost) == 0


def test_device_priors_scale_with_the_model_and_the_device():
    from arc_ttft.registry import find_candidate

    prior = costs.CostModel.for_device
    small, big = find_candidate("Qwen2.5-0.5B"), find_candidate("Qwen2.5-1.5B")
    ratio = big.params_m / small.params_m
    for dev in ("cpu", "cuda:0"):
        s, b = prior(dev, small.name), prior(dev, big.name)
        # the per-token rates grow with the parameter count, the fixed step cost does not
        assert b.step_b / s.step_b == pytest.approx(ratio, rel=1e-6)
        assert b.gen_seconds_per_token / s.gen_seconds_per_token == pytest.approx(ratio, rel=1e-6)
        assert b.step_a == s.step_a
        # an unknown model is priced as a 0.5B one; the tiny model is far cheaper
        assert prior(dev, "x/y").step_b == pytest.approx(s.step_b * 500 / small.params_m)
        assert prior(dev, "tiny").ttt_step_seconds(2048) < s.ttt_step_seconds(2048) / 10
    for name in (small.name, big.name, "tiny"):
        gpu, cpu = prior("cuda:0", name), prior("cpu", name)
        assert gpu.ttt_step_seconds(2048) < cpu.ttt_step_seconds(2048)
        assert gpu.inference_seconds(8, 300) < cpu.inference_seconds(8, 300)


def test_a_small_models_prior_is_not_charged_a_large_ones_step_overhead():
    """Measured: arc-nano2 trained 0.024 s a step on 3c9b0459 (CPU, idle; ~170 training
    tokens). The prior charged 1.0 s, so the dry run's first plan cut that task to 18 of
    64 steps. The prior stays on the slow side, within 3x."""
    for name in ("arc-nano", "arc-nano2"):
        prior = costs.CostModel.for_device("cpu", name)
        assert 0.024 <= prior.ttt_step_seconds(170) <= 3 * 0.024
    # 0.5B models keep the measured 1 s (CPU) and 0.3 s (GPU) fixed costs
    assert costs.CostModel.for_device("cpu", "Qwen2.5-0.5B").step_a == 1.0
    assert costs.CostModel.for_device("cuda:0", "Qwen2.5-0.5B").step_a == 0.3


def test_a_model_folders_prior_counts_its_own_parameters():
    """`arc-ttft finetune` writes a folder for `arc-ttft run --model FOLDER`. Its prior was
    a 0.5B model's: 4.1 s a step for arc-nano2 deepened to 8 layers (2.2M parameters;
    measured 0.043 s), which cut the first of the 77 evaluation tasks to 43 of 64 steps."""
    from arc_ttft import registry

    folder = str(registry.BUNDLED_MODELS["arc-nano2"])
    by_path, by_name = (costs.CostModel.for_device("cpu", m) for m in (folder, "arc-nano2"))
    assert by_path.ttt_step_seconds(170) == pytest.approx(by_name.ttt_step_seconds(170), rel=0.05)
    assert costs.CostModel.for_device("cpu", "no/such-folder").step_a == 1.0  # unknown: 0.5B


# ---------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------


def _plan(remaining, tokens, target=32, reserve=0.0, min_steps=None):
    clock = B.FakeClock()
    b = B.Budget(clock, remaining, 0.0)
    cost = costs.CostModel(step_a=0.0, step_b=1e-3, task_overhead=1.0)  # 1 s/step at 1000 tokens
    tasks = [(f"t{i}", n) for i, n in enumerate(tokens)]
    return B.plan_steps(tasks, b, cost, target, reserve, min_steps=min_steps)


def test_plan_cuts_then_skips_then_falls_back_as_time_shrinks():
    tokens = [1000] * 10  # full TTT: 10 x (32 x 1 s + 1 s) = 330 s
    full = _plan(330 + 100, tokens, reserve=100)
    assert set(full.decision_list) == {"full"} and full.steps["t0"] == 32
    assert full.estimated_seconds == pytest.approx(330)

    cut = _plan(200 + 100, tokens, reserve=100)  # (200 - 10) // 10 = 19 steps each
    assert set(cut.decision_list) == {"cut"} and set(cut.step_counts) == {19}
    assert cut.even_steps == 19 and cut.estimated_seconds <= 200

    few = _plan(40 + 100, tokens, reserve=100)  # below min_steps=8: 4 tasks x (8 + 1) = 36 s
    assert few.counts() == {"full": 0, "cut": 4, "no-ttt": 6, "fallback": 0}
    assert sorted(set(few.step_counts)) == [0, 8] and few.estimated_seconds <= 40

    none = _plan(105, tokens, reserve=100)
    assert set(none.decision_list) == {"no-ttt"} and sum(none.step_counts) == 0

    fb = _plan(60, tokens, reserve=100)  # reserve does not fit: 60% of inference fits
    assert fb.decision_list == ["no-ttt"] * 6 + ["fallback"] * 4
    assert sum(fb.step_counts) == 0


def test_plan_gives_min_steps_to_the_cheapest_tasks_first():
    plan = _plan(30, [5000, 500, 800, 4000], target=32, min_steps=8)
    # per task at 8 steps: 41, 5, 7.4, 33 s -> the two cheap ones fit in 30 s
    assert plan.steps == {"t0": 0, "t1": 8, "t2": 8, "t3": 0}


def test_plan_edge_cases():
    assert _plan(100, [], target=32).steps == {}
    zero = _plan(100, [1000], target=0)
    assert zero.steps == {"t0": 0} and zero.decision("t0") == "no-ttt"
    assert zero.decision("unknown") == "no-ttt"


@settings(max_examples=200, deadline=None)
@given(
    remaining=st.floats(1, 1e5),
    reserve=st.floats(0, 1e5),
    tokens=st.lists(st.integers(10, 20000), min_size=1, max_size=60),
    target=st.integers(0, 128),
    a=st.floats(0, 5),
    b=st.floats(1e-6, 1e-2),
    over=st.floats(0, 30),
)
def test_plan_never_exceeds_the_deadline(remaining, reserve, tokens, target, a, b, over):
    clock = B.FakeClock()
    bud = B.Budget(clock, remaining, 0.0)
    cost = costs.CostModel(step_a=a, step_b=b, task_overhead=over)
    plan = B.plan_steps([(f"t{i}", n) for i, n in enumerate(tokens)], bud, cost, target, reserve)
    steps = np.array(plan.step_counts)
    assert steps.min() >= 0 and steps.max() <= target
    ttt = sum(s * cost.ttt_step_seconds(n) + (over if s else 0) for s, n in zip(steps, tokens))
    assert ttt == pytest.approx(plan.estimated_seconds)
    if reserve <= remaining:
        assert ttt + reserve <= remaining * (1 + 1e-9)
    else:
        assert steps.sum() == 0
    # A task either gets nothing or at least the useful minimum.
    assert all(s == 0 or s >= plan.min_steps for s in steps)
    assert set(plan.decision_list) <= set(B.DECISIONS)


def test_plan_figures_are_json_ready_for_the_event_log():
    plan = _plan(200 + 100, [1000] * 10, reserve=100)
    fig = plan.figures("t3")
    assert "task" not in fig and "stage" not in fig
    assert fig["decision"] == "cut" and fig["steps"] == 19 and fig["reserve"] == 100
    assert fig["counts"]["cut"] == 10
    json.dumps(fig)
    json.dumps(plan.to_dict())
    assert plan.figures("missing")["steps"] == 0


def test_replanning_after_each_task_fits_the_deadline_with_a_wrong_prior():
    """The pipeline's loop: plan, train (2x slower than the prior says), measure, re-plan."""
    clock = B.FakeClock()
    bud = B.Budget(clock, 3600, 0)
    cost = costs.CostModel(step_a=0.0, step_b=1e-3, task_overhead=0.0)  # truth: 2e-3
    tokens = [500 + 100 * i for i in range(30)]
    reserve = 600.0
    for i, n in enumerate(tokens):
        plan = B.plan_steps([(str(j), t) for j, t in enumerate(tokens)][i:], bud, cost, 64, reserve)
        steps = plan.step_counts[0]
        guard = bud.step_guard(cost.ttt_step_seconds(n), reserve_seconds=reserve)
        done = 0
        for _ in range(steps):
            if guard():
                break
            clock.advance(2e-3 * n)
            done += 1
        if done:
            cost.observe_ttt(n, 2e-3 * n, done)
    assert clock.now() <= bud.deadline - reserve
    assert clock.now() >= 0.95 * (bud.deadline - reserve)  # and the time was used
    assert cost.speed_factor() == pytest.approx(2.0)
