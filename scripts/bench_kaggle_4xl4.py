"""Regenerate benchmarks/kaggle-4xL4.md: every registry model on 4 x NVIDIA L4, on paper.

    python scripts/bench_kaggle_4xl4.py [--runs 3] [--out benchmarks/kaggle-4xL4.md]

For each registry model: its memory at its default sequence length (does LoRA TTT fit in
an L4's 24 GB?), GPU costs from the L4 datasheet and a stated MFU, converted into the
planner's units (``simulate.TrueCosts``), then one simulated 12-hour run per worker
(``simulate.simulate``: ``schedule.run_shard`` on a fake clock) over its shard of the
120 ARC-AGI-2 evaluation tasks (``pipeline.shard_tasks``). The sources of every figure
are in the page this writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arc_ttft import auto, encoding, pipeline, schedule
from arc_ttft import config as C
from arc_ttft.registry import REGISTRY, Candidate, config_params
from arc_ttft.research import simulate as S
from arc_ttft.tasks import Task, load_tasks

# --- NVIDIA L4 (datasheet; benchmarks/kaggle-4xL4.md cites it) -----------------------------
L4_BF16_FLOPS = 121e12  # dense: the sheet's 242 TFLOPS are with 2:4 sparsity, "one-half lower without"
L4_BANDWIDTH = 300e9  # bytes/s, GDDR6
L4_MEMORY = 24e9  # bytes
WORKERS = 4  # one per L4
TASK_SET = "arc2-eval"  # 120 tasks, the size of the 2026 hidden test set

# --- Assumptions (each explained in the page) ------------------------------------------------
# MFU: this project's CPU step ran at ~0.72 of the CPU's own bf16 matmul rate (MATMUL_SHARE,
# from ttt_speed.md); times an assumed 0.42 of the datasheet peak for an L4's bf16 GEMMs.
L4_GEMM_SHARE = 0.42
MFU = 0.30
STEP_OVERHEAD_S = 0.1  # per TTT step: optimizer, launches, data (not FLOPs)
CUDA_CONTEXT = 1.0e9  # bytes: CUDA context, cuBLAS workspace, allocator slack
LOAD_FIXED_S = 60.0  # per model load (trainer or vLLM engine), plus the weights' read
DISK_RATE = 0.5e9  # bytes/s, reading the weights
DECODE_BATCH = 32  # DFS walks advancing together in one vLLM round (dfs.md measured 32)

# --- Measured in this project (benchmarks/*.md) ----------------------------------------------
# ttt_speed.md, "ours", Qwen2-0.5B, bf16, LoRA q/k/v/o: peak 2.94 GiB at 1024 tokens, 4.59 at
# 2048: 1.65 MiB per token; over 24 layers x (hidden 896 + intermediate 4864) that is
# ACT_BYTES bytes per token, layer and unit of width.
ACT_BYTES = (4.59 - 2.94) * 2**30 / 1024 / (24 * (896 + 4864))
# ttt_speed.md: the same step, 5.71 s at 1024 tokens on a CPU whose bf16 matmuls run at ~390
# GFLOP/s; its model FLOPs (flop_coefficients' convention) over that time, see matmul_share().
CPU_STEP_S, CPU_MATMUL_FLOPS = 5.71, 390e9
# dfs.md: arc-nano's vLLM lockstep DFS walked 524 nodes for 8 prompts at L = 16: 4.1 answers'
# worth per view (the planner's prior, schedule.DFS_PATHS, is 3).
DFS_ANSWERS_PER_VIEW = 524 / 8 / 16
# dfs.md: 629 nodes/s with 32 walks on the vLLM CPU build (arc-nano): engine time per walk-node,
# taken as vLLM's host-side cost per walk-node (an upper bound: it includes arc-nano's forward).
HOST_S_PER_NODE = 1 / 629

PLANNER_GAP = 0.1  # _raw_workload counts a re-scoring call at 0.1 of a prompt's rate


# ------------------------------------------------------------------------------------------
# Model arithmetic (from the registry config: no torch, no download)
# ------------------------------------------------------------------------------------------


def _dims(cfg: dict) -> dict:
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or h // heads
    kv = cfg.get("num_key_value_heads") or heads
    layers = cfg["num_hidden_layers"]
    window = cfg.get("sliding_window")
    kinds = cfg.get("layer_types")
    sliding = sum(k == "sliding_attention" for k in kinds) if isinstance(kinds, list) else 0
    return dict(h=h, i=cfg["intermediate_size"], heads=heads, hd=hd, kv=kv, layers=layers,
                vocab=cfg["vocab_size"], window=window if sliding else None, sliding=sliding)  # fmt: skip


def lm_head_params(cfg: dict) -> int:
    return cfg["hidden_size"] * cfg["vocab_size"]


def body_params(cfg: dict) -> int:
    """Every weight but the embedding and the output head: what a token's matmuls touch."""
    untied = 0 if cfg.get("tie_word_embeddings") else lm_head_params(cfg)
    return config_params(cfg) - cfg["vocab_size"] * cfg["hidden_size"] - untied


def _lora_shapes(cand: Candidate) -> list[tuple[int, int]]:
    """(in, out) of every adapted linear layer of one transformer layer."""
    d = _dims(cand.config)
    h, i, q, k = d["h"], d["i"], d["heads"] * d["hd"], d["kv"] * d["hd"]
    shapes = {"q_proj": (h, q), "k_proj": (h, k), "v_proj": (h, k), "o_proj": (q, h),
              "dense": (q, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
              "fc1": (h, i), "fc2": (i, h)}  # fmt: skip
    return [shapes[t] for t in cand.lora_targets if t in shapes]


def lora_params(cand: Candidate, rank: int) -> int:
    return cand.config["num_hidden_layers"] * sum(rank * (a + b) for a, b in _lora_shapes(cand))


def _pairs(n: float, window: int | None) -> float:
    """(query, key) pairs causal attention scores over ``n`` tokens, within ``window``."""
    if window is None or n <= window:
        return n * n / 2
    return n * window - window * window / 2


def attention_pairs(cfg: dict, n: float) -> float:
    """Sum over layers of the attended pairs (Gemma's sliding layers see 512 tokens)."""
    d = _dims(cfg)
    full = d["layers"] - d["sliding"]
    return full * _pairs(n, None) + d["sliding"] * _pairs(n, d["window"])


def kv_bytes(cfg: dict, n: float) -> float:
    """bf16 K and V of ``n`` tokens over every layer (sliding layers keep their window)."""
    d = _dims(cfg)
    per_layer = 2 * d["kv"] * d["hd"] * 2
    full = d["layers"] - d["sliding"]
    win = min(n, d["window"]) if d["window"] else n
    return per_layer * (full * n + d["sliding"] * win)


# ------------------------------------------------------------------------------------------
# Memory (bytes)
# ------------------------------------------------------------------------------------------


def train_memory(cand: Candidate, cfg: C.RunConfig, seq_len: int, answer: float) -> dict:
    """One LoRA step at ``seq_len`` tokens, bf16 base, the run's LoRA settings."""
    d = _dims(cand.config)
    lora = lora_params(cand, cfg.ttt.lora_rank)
    act = ACT_BYTES * d["layers"] * (d["h"] + d["i"]) * seq_len
    extra = 0.0
    if cfg.ttt.lora_dtype == "float32":  # peft upcasts: every adapted layer keeps an fp32 input
        extra = 4.0 * d["layers"] * sum(a for a, _ in _lora_shapes(cand)) * seq_len
    # Logits at the answer positions: bf16 out, fp32 copy, log-softmax, its gradient.
    logits = answer * d["vocab"] * (2 + 4 + 4 + 4)
    parts = {
        "weights": 2.0 * config_params(cand.config),
        "lora": 16.0 * lora,  # fp32 weight, gradient, two AdamW moments
        "activations": act + extra,
        "logits": logits,
        "cuda": CUDA_CONTEXT,
    }
    parts["total"] = sum(parts.values())
    return parts


def infer_memory(cand: Candidate, cfg: C.RunConfig, seq_len: int) -> float:
    """vLLM: weights, the KV of one test input's views (walks share a view's prompt)."""
    return 2.0 * config_params(cand.config) + cfg.infer.views * kv_bytes(cand.config, seq_len)


# ------------------------------------------------------------------------------------------
# Time (seconds)
# ------------------------------------------------------------------------------------------


def matmul_share() -> float:
    """The CPU step's model FLOP rate over the CPU's own bf16 matmul rate (ttt_speed.md)."""
    q2 = REGISTRY["Qwen2-0.5B"].config
    q_lora = dataclasses.replace(REGISTRY["Qwen2-0.5B"], lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    flops = step_flops(q2, q_lora, 16, 1024, 227, lm_vocab=114)
    return flops / CPU_STEP_S / CPU_MATMUL_FLOPS


def step_flops(cfg: dict, cand: Candidate, rank: int, n: float, answer: float, lm_vocab=None) -> float:
    """One step's model FLOPs, ``ttt_speed.flop_coefficients``' convention: frozen linear
    layers 4 x params per token, LoRA 6 x, the output head 4 x at answer tokens only,
    causal attention 12 x head width per attended pair (forward and backward)."""
    d = _dims(cfg)
    head = d["h"] * (lm_vocab or d["vocab"])
    linear = 4.0 * body_params(cfg) + 6.0 * lora_params(cand, rank)
    return linear * n + 4.0 * head * answer + 12.0 * d["heads"] * d["hd"] * attention_pairs(cfg, n)


def step_seconds(cand: Candidate, cfg: C.RunConfig, n: float, answer: float) -> float:
    flops = step_flops(cand.config, cand, cfg.ttt.lora_rank, n, answer)
    return STEP_OVERHEAD_S + flops / (MFU * L4_BF16_FLOPS)


def prefill_seconds(cfg: dict, n: float, start: float = 0.0) -> float:
    """Tokens ``start``..``start + n`` of a prompt (earlier ones cached): compute-bound."""
    d = _dims(cfg)
    attn = 4.0 * d["heads"] * d["hd"] * (attention_pairs(cfg, start + n) - attention_pairs(cfg, start))
    return (2.0 * body_params(cfg) * n + attn) / (MFU * L4_BF16_FLOPS)


def node_seconds(cfg: dict, ctx: float) -> float:
    """One DFS node (one token's forward) of a walk in a lockstep round of DECODE_BATCH walks:
    compute or the weights' read shared by the batch, whichever is longer, plus the walk's
    own KV read and vLLM's host-side cost."""
    d = _dims(cfg)
    compute = (2.0 * (body_params(cfg) + lm_head_params(cfg)) + 4.0 * d["heads"] * d["hd"]
               * attention_pairs(cfg, ctx) / max(ctx, 1.0)) / (MFU * L4_BF16_FLOPS)  # fmt: skip
    weights = 2.0 * config_params(cfg) / L4_BANDWIDTH / DECODE_BATCH
    return max(compute, weights) + kv_bytes(cfg, ctx) / L4_BANDWIDTH + HOST_S_PER_NODE


def infer_seconds(cand: Candidate, cfg: C.RunConfig, task: Task, ctx: float) -> float:
    """DFS over every view of every test input, then re-scoring the candidates under the
    scoring views, with the prompt (``ctx`` tokens) prefilled once per view."""
    c = cand.config
    answer = schedule.answer_tokens(task, cfg)
    nodes = min(DFS_ANSWERS_PER_VIEW * answer, cfg.infer.dfs_max_nodes)
    walk = prefill_seconds(c, ctx) + nodes * node_seconds(c, ctx + answer / 2)
    score = prefill_seconds(c, ctx) + schedule.DFS_CANDIDATES * prefill_seconds(c, answer, ctx)
    per_test = cfg.infer.views * walk + (cfg.infer.rescore or 0) * score
    return len(task.test) * per_test


# ------------------------------------------------------------------------------------------
# Into the planner's units, and the simulation
# ------------------------------------------------------------------------------------------


def true_costs(cand: Candidate, cfg: C.RunConfig, shard: Sequence[Task]) -> S.TrueCosts:
    """``TrueCosts`` for one worker's shard (see the page for the units).

    ``step_per_token`` x tokens is one step of a task (tokens: the planner's own estimate,
    capped at max_seq_len), so the shard's summed step time is kept: sum of the GPU step
    times over the sum of tokens. ``gen_per_token`` x ``_raw_workload`` is a task's
    inference, the same way: summed GPU seconds over summed workload units."""
    tokens = np.array([S._tokens(t, cfg) for t in shard])
    answers = [min(schedule.answer_tokens(t, cfg), n / 2) for t, n in zip(shard, tokens)]
    steps = [step_seconds(cand, cfg, n, a) for n, a in zip(tokens, answers)]
    infer = [infer_seconds(cand, cfg, t, n) for t, n in zip(shard, tokens)]
    work = [S._raw_workload([t], cfg) for t in shard]
    weights = 2.0 * config_params(cand.config)
    return S.TrueCosts(
        step_per_token=float(np.sum(steps) / tokens.sum()),
        gen_per_token=float(np.sum(infer) / np.sum(work)),
        load_seconds=LOAD_FIXED_S + weights / DISK_RATE,
    )


def run_config(name: str, **overrides) -> C.RunConfig:
    """The run's defaults for ``name`` as the kaggle-gpu profile resolves them, 4 workers,
    max_seq_len made explicit (the planner's token estimate caps at it)."""
    from arc_ttft.models import resolve_max_seq_len

    flat = {"model": name, "budget_hours": 12, "workers": WORKERS, "profile": "kaggle-gpu"}
    cfg = C.validate(C.from_flat(C.RunConfig, {**flat, **overrides}))
    cfg = auto.resolve(cfg, auto.machine_for("kaggle-gpu"))
    cfg.model.max_seq_len = resolve_max_seq_len(cfg.model)
    return cfg


COLUMNS = [
    "model", "params M", "seq len", "train GB", "vLLM GB", "fits 24 GB", "s/step (median task)",
    "steps/task", "steps/task, 12 h filled", "DFS views/test", "inferred", "budget used",
]  # fmt: skip


def model_row(name: str, tasks: Sequence[Task], *, runs: int = 3, seed: int = 0,
              gpu_bytes: float = L4_MEMORY, fill_target: int = 4096) -> dict:  # fmt: skip
    """One table row: memory, then (if it fits) the simulated 12 h on WORKERS workers, at
    the default step target and at ``fill_target`` (what the budget could buy)."""
    cand = REGISTRY[name]
    cfg = run_config(name)
    seq = cfg.model.max_seq_len
    tokens = [S._tokens(t, cfg) for t in tasks]
    med = tasks[int(np.argsort(tokens)[len(tokens) // 2])]
    med_n = S._tokens(med, cfg)
    med_answer = min(schedule.answer_tokens(med, cfg), med_n / 2)
    worst_answer = min(max(schedule.answer_tokens(t, cfg) for t in tasks), seq / 2)
    mem = train_memory(cand, cfg, seq, worst_answer)
    vllm = infer_memory(cand, cfg, seq)
    fits = mem["total"] <= gpu_bytes and vllm <= cfg.infer.gpu_memory_utilization * gpu_bytes
    row = {
        "model": name,
        "params M": config_params(cand.config) / 1e6,
        "seq len": seq,
        "train GB": mem["total"] / 1e9,
        "vLLM GB": vllm / 1e9,
        "fits 24 GB": fits,
        "s/step (median task)": step_seconds(cand, cfg, med_n, med_answer),
        "DFS views/test": cfg.infer.views if cfg.infer.sampling == "dfs" else 0,
        "memory": mem,
        "target": cfg.ttt.ttt_steps,
    }
    if not fits:
        return {**row, "steps/task": None, "steps/task, 12 h filled": None,
                "inferred": None, "budget used": None, "overruns": None}  # fmt: skip
    sim = simulate_shards(name, tasks, cfg, runs=runs, seed=seed)
    fill = simulate_shards(name, tasks, run_config(name, ttt_steps=fill_target), runs=1, seed=seed)
    return {**row, "steps/task": sim["steps"], "steps/task, 12 h filled": fill["steps"],
            "inferred": sim["inferred"], "budget used": sim["used"], "overruns": sim["overruns"],
            "fill used": fill["used"], "infer share": sim["infer share"]}  # fmt: skip


def simulate_shards(name: str, tasks: Sequence[Task], cfg: C.RunConfig, *, runs: int, seed: int):
    """One ``simulate`` per worker's shard, each with the whole budget (workers run side by
    side); the run ends when its slowest worker does."""
    cand = REGISTRY[name]
    shards = [s for s in pipeline.shard_tasks(list(tasks), cfg.workers, cfg.model.format,
                                             cfg.ttt.ttt_steps) if s]  # fmt: skip
    steps = inferred = infer_s = 0.0
    used, overruns = [], 0
    for k, shard in enumerate(shards):
        costs = true_costs(cand, cfg, shard)
        r = S.simulate(shard, cfg, costs, runs=runs, seed=seed + k)
        steps += r.mean_steps * len(shard)
        inferred += r.mean_inferred * len(shard)
        infer_s += costs.gen_per_token * sum(S._raw_workload([t], cfg) for t in shard)
        used.append(r.mean_fraction_used)
        overruns += r.overruns
    n = len(tasks)
    return {"steps": steps / n, "inferred": inferred / n, "used": max(used),
            "overruns": overruns, "infer share": infer_s / len(shards) / cfg.budget.budget_seconds()}  # fmt: skip


def _fmt(v, col: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if col in ("inferred", "budget used"):
        return f"{v:.3f}"
    if col in ("train GB", "vLLM GB"):
        return f"{v:.1f}"
    if col == "s/step (median task)":
        return f"{v:.2f}"
    if col.startswith("steps/task") or col == "params M":
        return f"{v:.1f}" if col != "params M" else f"{v:,.0f}"
    return str(v)


def table(rows: Sequence[dict]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(r[c], c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def registry_models() -> list[str]:
    """The hub models of the registry (not the bundled test models)."""
    return [n for n, c in REGISTRY.items() if not c.hub_id.startswith("arc-ttft/")]
