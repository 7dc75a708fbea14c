"""4 x NVIDIA L4 on paper: memory, FLOPs and seconds of LoRA TTT and inference for a
registry model, from its config and the L4 datasheet, put into the planner's units
(``simulate.TrueCosts``). ``scripts/bench_kaggle_4xl4.py`` turns it into
benchmarks/kaggle-4xL4.md, which says where every figure comes from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from arc_ttft import config as C
from arc_ttft import costs
from arc_ttft.registry import REGISTRY, Candidate, config_params
from arc_ttft.research import simulate as S
from arc_ttft.tasks import Task

# --- NVIDIA L4 datasheet (the page cites it) -------------------------------------------------
L4_BF16_FLOPS = 121e12  # dense: the sheet's 242 are "with sparsity", "one-half lower without"
L4_BANDWIDTH = 300e9  # bytes/s
L4_MEMORY = 24e9  # bytes
WORKERS = 4  # one per L4
TASK_SET = "arc2-eval"  # 120 tasks: the size of the 2026 hidden test set

# --- Measured in this project (benchmarks/*.md) -----------------------------------------------
# ttt_speed.md, "ours" (Qwen2-0.5B, bf16, LoRA r16 on q/k/v/o, bf16 adapter, vocabulary 114):
# peak 2.94 GiB at 1024 tokens, 4.59 GiB at 2048, so 1.65 MiB a token; per layer and unit of
# (hidden + intermediate) width (24 x (896 + 4864)) that is ACT_BYTES.
ACT_BYTES = (4.59 - 2.94) * 2**30 / 1024 / (24 * (896 + 4864))
# ttt_speed.md: that step took 5.71 s at 1024 tokens (227 answer tokens) on a CPU whose bf16
# matmuls run at ~390 GFLOP/s: matmul_share() is its model FLOP rate over that rate.
CPU_STEP = dict(seconds=5.71, tokens=1024, answer=227, vocab=114, matmul_flops=390e9)
# dfs.md: arc-nano's lockstep DFS on vLLM expanded 524 nodes for 8 walks at L = 16 (4.1
# answers' worth a view; the planner's prior, costs.DFS_PATHS, is 3) ...
DFS_ANSWERS_PER_VIEW = 524 / 8 / 16
# ... at 629 nodes/s with 32 walks on the CPU build: vLLM's cost per walk-node, taken as its
# host-side cost on a GPU too (an upper bound: it includes arc-nano's own forward).
HOST_S_PER_NODE = 1 / 629
DECODE_BATCH = 32  # walks of one lockstep round (dfs.md's 32)

# --- Assumptions (each explained in the page) -------------------------------------------------
# A T4 (70 W) sustains ~24 of its 65 fp16 TFLOPS on a 4096^3 cuBLAS GEMM, power-capped (NVIDIA
# developer forum); the 72 W L4 is taken to reach the same share of its dense peak.
GEMM_SHARE = 24 / 65
STEP_OVERHEAD_S = 0.1  # per TTT step: optimizer, kernel launches, batch building
CUDA_CONTEXT = 1.0e9  # bytes: CUDA context, cuBLAS workspace, allocator slack
LOAD_FIXED_S = 60.0  # per model load (trainer or vLLM engine: CUDA graphs) ...
DISK_RATE = 0.5e9  # ... plus reading the bf16 weights at this many bytes/s
FILL_TARGET = 1024  # a step target high enough that the 12 h, not the target, decides
MAX_ANSWER = 30 * 31 + 1  # a 30 x 30 grid in digit rows, plus the end token


def matmul_share() -> float:
    """The measured CPU step's model FLOPs per second over the CPU's bf16 matmul rate."""
    q = REGISTRY["Qwen2-0.5B"]
    q = dataclasses.replace(q, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    s = CPU_STEP
    flops = step_flops(q, 16, s["tokens"], s["answer"], vocab=s["vocab"])
    return flops / s["seconds"] / s["matmul_flops"]


def mfu() -> float:
    """Model FLOPs utilisation assumed on an L4: the measured step/matmul ratio (CPU) times
    the GEMM share of the datasheet peak a 70 W card sustains."""
    return matmul_share() * GEMM_SHARE


# ------------------------------------------------------------------------------------------
# Model arithmetic, from the registry config (no torch, no download)
# ------------------------------------------------------------------------------------------


def model_dims(cfg: dict) -> dict:
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kinds = cfg.get("layer_types")
    sliding = sum(k == "sliding_attention" for k in kinds) if isinstance(kinds, list) else 0
    return dict(
        h=h,
        i=cfg["intermediate_size"],
        heads=heads,
        layers=cfg["num_hidden_layers"],
        hd=cfg.get("head_dim") or h // heads,
        kv=cfg.get("num_key_value_heads") or heads,
        vocab=cfg["vocab_size"],
        sliding=sliding,
        window=cfg.get("sliding_window") if sliding else None,
    )


def head_params(cfg: dict) -> int:
    return cfg["hidden_size"] * cfg["vocab_size"]


def body_params(cfg: dict) -> int:
    """Every weight but the embedding and the output head: what each token multiplies."""
    untied = 0 if cfg.get("tie_word_embeddings") else head_params(cfg)
    return config_params(cfg) - head_params(cfg) - untied


def _lora_shapes(cand: Candidate) -> list[tuple[int, int]]:
    """(in, out) of every adapted linear layer of one transformer layer."""
    d = model_dims(cand.config)
    h, i, q, k = d["h"], d["i"], d["heads"] * d["hd"], d["kv"] * d["hd"]
    shapes = {"q_proj": (h, q), "k_proj": (h, k), "v_proj": (h, k), "o_proj": (q, h),
              "dense": (q, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
              "fc1": (h, i), "fc2": (i, h)}  # fmt: skip
    return [shapes[t] for t in cand.lora_targets if t in shapes]


def lora_params(cand: Candidate, rank: int) -> int:
    return cand.config["num_hidden_layers"] * sum(rank * (a + b) for a, b in _lora_shapes(cand))


def _pairs(n: float, window: int | None) -> float:
    """(query, key) pairs of causal attention over ``n`` tokens, within ``window``."""
    if window is None or n <= window:
        return n * n / 2
    return n * window - window * window / 2


def attention_pairs(cfg: dict, n: float) -> float:
    """Attended pairs summed over layers (Gemma 3's sliding layers see 512 tokens)."""
    d = model_dims(cfg)
    return (d["layers"] - d["sliding"]) * _pairs(n, None) + d["sliding"] * _pairs(n, d["window"])


def keys_per_token(cfg: dict, ctx: float) -> float:
    """Keys one new token attends to at context ``ctx``, summed over layers."""
    d = model_dims(cfg)
    win = min(ctx, d["window"]) if d["window"] else ctx
    return (d["layers"] - d["sliding"]) * ctx + d["sliding"] * win


def kv_bytes(cfg: dict, n: float) -> float:
    """bf16 K and V of ``n`` tokens over every layer (a sliding layer keeps its window)."""
    d = model_dims(cfg)
    return 2 * d["kv"] * d["hd"] * 2 * keys_per_token(cfg, n)


# ------------------------------------------------------------------------------------------
# Memory (bytes) and time (seconds)
# ------------------------------------------------------------------------------------------


def train_memory(cand: Candidate, cfg: C.RunConfig, n: int, answer: float) -> dict[str, float]:
    """One LoRA step over ``n`` tokens with the run's settings, bf16 base weights."""
    d = model_dims(cand.config)
    layer = ACT_BYTES * (d["h"] + d["i"]) * n  # what one layer keeps for backward
    if cfg.ttt.lora_dtype == "float32":  # peft's upcast: each adapted layer's fp32 input
        layer += 4.0 * sum(a for a, _ in _lora_shapes(cand)) * n
    if cfg.ttt.gradient_checkpointing:  # layer inputs, then one layer recomputed at a time
        act = d["layers"] * 2.0 * d["h"] * n + layer
    else:
        act = d["layers"] * layer
    parts = {
        "weights": 2.0 * config_params(cand.config),
        "lora": 16.0 * lora_params(cand, cfg.ttt.lora_rank),  # fp32 weight, grad, 2 moments
        "activations": act,
        # answer logits: bf16 out, fp32 copy, log-softmax, its gradient
        "logits": answer * d["vocab"] * (2 + 4 + 4 + 4),
        "cuda": CUDA_CONTEXT,
    }
    parts["total"] = sum(parts.values())
    return parts


def infer_memory(cand: Candidate, cfg: C.RunConfig, n: int) -> float:
    """vLLM: weights plus the KV of one test input's views (a view's walks share it)."""
    return 2.0 * config_params(cand.config) + cfg.infer.views * kv_bytes(cand.config, n)


def step_flops(
    cand: Candidate, rank: int, n: float, answer: float, *, vocab=None, checkpointing: bool = False
) -> float:
    """Model FLOPs of one step, as ``ttt_speed.flop_coefficients`` counts them: frozen
    linear layers 4 x params a token (forward, input gradient), LoRA 6 x, the output head
    4 x at answer tokens only, attention 12 x head width an attended pair. Gradient
    checkpointing runs every layer's forward twice: 6 x, 8 x and 16 x."""
    cfg = cand.config
    d = model_dims(cfg)
    frozen, lora, attn = (6.0, 8.0, 16.0) if checkpointing else (4.0, 6.0, 12.0)
    linear = frozen * body_params(cfg) + lora * lora_params(cand, rank)
    head = 4.0 * d["h"] * (vocab or d["vocab"]) * answer
    return linear * n + head + attn * d["heads"] * d["hd"] * attention_pairs(cfg, n)


def step_seconds(cand: Candidate, cfg: C.RunConfig, n: float, answer: float) -> float:
    t = cfg.ttt
    flops = step_flops(cand, t.lora_rank, n, answer, checkpointing=t.gradient_checkpointing)
    return STEP_OVERHEAD_S + flops / (mfu() * L4_BF16_FLOPS)


def prefill_seconds(cfg: dict, n: float, start: float = 0.0) -> float:
    """Tokens ``start``..``start + n`` of a prompt whose start is cached: compute-bound."""
    d = model_dims(cfg)
    pairs = attention_pairs(cfg, start + n) - attention_pairs(cfg, start)
    return (2.0 * body_params(cfg) * n + 4.0 * d["heads"] * d["hd"] * pairs) / (
        mfu() * L4_BF16_FLOPS
    )


def node_seconds(cfg: dict, ctx: float) -> float:
    """One DFS node (a token's forward) of a walk in a round of DECODE_BATCH walks: its
    compute or its share of the weights' read, whichever is longer, plus its own KV read
    and vLLM's host-side cost."""
    d = model_dims(cfg)
    attn = 4.0 * d["heads"] * d["hd"] * keys_per_token(cfg, ctx)
    compute = (2.0 * (body_params(cfg) + head_params(cfg)) + attn) / (mfu() * L4_BF16_FLOPS)
    weights = 2.0 * config_params(cfg) / L4_BANDWIDTH / DECODE_BATCH
    return max(compute, weights) + kv_bytes(cfg, ctx) / L4_BANDWIDTH + HOST_S_PER_NODE


def infer_seconds(cand: Candidate, cfg: C.RunConfig, task: Task, ctx: float) -> float:
    """DFS in every view of every test input, then the candidates re-scored under the
    scoring views; each view's prompt (``ctx`` tokens) is prefilled once."""
    c = cand.config
    answer = costs.answer_tokens(task, cfg)
    nodes = min(DFS_ANSWERS_PER_VIEW * answer, cfg.infer.dfs_max_nodes)
    walk = prefill_seconds(c, ctx) + nodes * node_seconds(c, ctx + answer / 2)
    score = prefill_seconds(c, ctx) + costs.DFS_CANDIDATES * prefill_seconds(c, answer, ctx)
    return len(task.test) * (cfg.infer.views * walk + (cfg.infer.rescore or 0) * score)


# ------------------------------------------------------------------------------------------
# Into the planner's units; the simulation
# ------------------------------------------------------------------------------------------


def true_costs(cand: Candidate, cfg: C.RunConfig, shard: Sequence[Task]) -> S.TrueCosts:
    """``TrueCosts`` for one worker's shard.

    The fake shard charges a step of task t ``step_per_token`` x tokens(t) (the planner's
    token estimate, capped at max_seq_len) and its inference ``gen_per_token`` x
    ``_raw_workload`` (prompts + 0.1 x scores, times answer tokens). Both are set to the
    shard's summed GPU seconds over its summed units, so the shard's totals are exact."""
    tokens = np.array([S._tokens(t, cfg) for t in shard])
    answers = [min(costs.answer_tokens(t, cfg), n / 2) for t, n in zip(shard, tokens)]
    steps = [step_seconds(cand, cfg, n, a) for n, a in zip(tokens, answers)]
    infer = [infer_seconds(cand, cfg, t, n) for t, n in zip(shard, tokens)]
    work = [S._raw_workload([t], cfg) for t in shard]
    return S.TrueCosts(
        step_per_token=float(np.sum(steps) / tokens.sum()),
        gen_per_token=float(np.sum(infer) / np.sum(work)),
        load_seconds=LOAD_FIXED_S + 2.0 * config_params(cand.config) / DISK_RATE,
    )
