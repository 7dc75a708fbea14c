"""scripts/bench_kaggle_4xl4.py: the 4 x L4 table's logic, on one small model and a few
ARC-AGI-2 tasks (the page itself: `python scripts/bench_kaggle_4xl4.py`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from arc_ttft import costs
from arc_ttft.registry import REGISTRY, config_params
from arc_ttft.research import l4_costs as L4
from arc_ttft.research import simulate as S
from arc_ttft.tasks import load_tasks

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_kaggle_4xl4.py"
SMALL = "SmolLM-135M-Instruct"


@pytest.fixture(scope="module")
def bk():
    spec = importlib.util.spec_from_file_location("bench_kaggle_4xl4", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tasks(bk):
    return load_tasks(L4.TASK_SET).tasks[:8]


@pytest.fixture(scope="module")
def row(bk, tasks):
    return bk.model_row(SMALL, tasks, runs=1, fill_target=64)


def test_a_small_model_fits_and_its_numbers_are_consistent(bk, row):
    assert set(bk.COLUMNS) <= set(row)
    assert row["fits 24 GB"] is True and 0 < row["train GB"] < 24 and row["vLLM GB"] < 24
    assert row["params M"] == pytest.approx(config_params(REGISTRY[SMALL].config) / 1e6)
    assert row["seq len"] == REGISTRY[SMALL].default_seq_len
    assert row["DFS views/test"] == 8  # the kaggle-gpu profile walks 8 views with DFS
    assert row["s/step (median task)"] > L4.STEP_OVERHEAD_S
    assert 0 < row["steps/task"] <= row["target"] == 32
    assert 0 < row[bk.COLUMNS[-2]] <= 64
    for col in ("inferred", "budget used", bk.COLUMNS[-1]):
        assert 0 <= row[col] <= 1, col
    assert row["overruns"] == 0
    mem = row["memory"]
    assert mem["total"] == pytest.approx(sum(v for k, v in mem.items() if k != "total"))


def test_a_model_that_cannot_fit_is_marked_and_not_simulated(bk, tasks):
    row = bk.model_row(SMALL, tasks, runs=1, gpu_bytes=1e9)
    assert row["fits 24 GB"] is False
    assert all(row[c] is None for c in bk.SIMULATED)
    line = bk.table([row]).splitlines()[-1]
    assert "**no**" in line and line.count("| - |") >= 1


def test_the_table_has_the_columns_and_a_line_per_row(bk, row):
    lines = bk.table([row, row]).splitlines()
    assert lines[0] == "| " + " | ".join(bk.COLUMNS) + " |"
    assert len(lines) == 4 and all(x.count("|") == len(bk.COLUMNS) + 1 for x in lines)
    assert lines[2].startswith(f"| {SMALL} | 135 |")


def test_the_planners_units_keep_the_shards_totals(bk, tasks):
    """step_per_token x tokens summed over the shard = the summed GPU step times; the
    same for gen_per_token x _raw_workload and the inference estimate."""
    cand, cfg = REGISTRY[SMALL], bk.run_config(SMALL)
    true = L4.true_costs(cand, cfg, tasks)
    tokens = np.array([S._tokens(t, cfg) for t in tasks])
    answers = [min(costs.answer_tokens(t, cfg), n / 2) for t, n in zip(tasks, tokens)]
    steps = sum(L4.step_seconds(cand, cfg, n, a) for n, a in zip(tokens, answers))
    assert true.step_per_token * tokens.sum() == pytest.approx(steps)
    infer = sum(L4.infer_seconds(cand, cfg, t, n) for t, n in zip(tasks, tokens))
    work = sum(S._raw_workload([t], cfg) for t in tasks)
    assert true.gen_per_token * work == pytest.approx(infer)


def test_flops_and_memory_follow_the_stated_rules(bk):
    cand = REGISTRY[SMALL]
    cfg = cand.config
    # 4 x params a token is the first term; the head and attention only add to it.
    base = 4.0 * L4.body_params(cfg) * 1024
    assert base < L4.step_flops(cand, 16, 1024, 100) < 2 * base
    ck = L4.step_flops(cand, 16, 1024, 100, checkpointing=True)
    assert 1.3 < ck / L4.step_flops(cand, 16, 1024, 100) < 1.5
    assert L4.body_params(cfg) + L4.head_params(cfg) == config_params(cfg)  # tied: once
    phi3 = REGISTRY["Phi-3-mini-4k-instruct"].config  # untied, no biases
    assert L4.body_params(phi3) + 2 * L4.head_params(phi3) == config_params(phi3)
    assert 0.2 < L4.mfu() < 0.4
    small = bk.run_config(SMALL)
    fp32 = L4.train_memory(cand, small, 2048, 500)
    bf16 = L4.train_memory(cand, bk.run_config(SMALL, lora_dtype="bfloat16"), 2048, 500)
    ckpt = bk.run_config(SMALL, lora_dtype="bfloat16", gradient_checkpointing=True)
    assert fp32["total"] > bf16["total"] > L4.train_memory(cand, ckpt, 2048, 500)["total"]
