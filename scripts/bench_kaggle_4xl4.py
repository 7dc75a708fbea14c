"""Regenerate benchmarks/kaggle-4xL4.md: the registry's models on 4 x NVIDIA L4, on paper.

    python scripts/bench_kaggle_4xl4.py [--runs 2] [--out benchmarks/kaggle-4xL4.md]

For each registry model (models of one architecture and sequence length share a row):
memory at its default sequence length (does LoRA TTT fit an L4's 24 GB?), GPU costs from
the L4 datasheet and a stated MFU, put into the planner's units (``simulate.TrueCosts``),
then a simulated 12-hour run per worker (``simulate.simulate``: ``schedule.run_shard`` on a
fake clock) over its shard (``workers.shard_tasks``) of the 120 ARC-AGI-2 evaluation
tasks. A model that does not fit with the defaults gets a second row with the cheapest
of ``FALLBACKS`` that fits. The page says where every figure comes from.

Over 500 lines: the page's text is a template here (about 160 lines), next to the rows and
findings that fill it; the cost model is ``arc_ttft.research.l4_costs``.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arc_ttft import auto, costs
from arc_ttft import config as C
from arc_ttft.registry import REGISTRY, Candidate, config_params
from arc_ttft.research import simulate as S
from arc_ttft.research.l4_costs import (  # the cost model; this script makes the page
    ACT_BYTES,
    CUDA_CONTEXT,
    DECODE_BATCH,
    DFS_ANSWERS_PER_VIEW,
    DISK_RATE,
    FILL_TARGET,
    GEMM_SHARE,
    HOST_S_PER_NODE,
    L4_MEMORY,
    LOAD_FIXED_S,
    MAX_ANSWER,
    STEP_OVERHEAD_S,
    TASK_SET,
    WORKERS,
    body_params,
    infer_memory,
    infer_seconds,
    lora_params,
    matmul_share,
    mfu,
    model_dims,
    step_flops,
    step_seconds,
    train_memory,
    true_costs,
)
from arc_ttft.tasks import Task, load_tasks
from arc_ttft.workers import shard_tasks


def run_config(name: str, **overrides) -> C.RunConfig:
    """The run's defaults for ``name``, resolved as the kaggle-gpu profile does, on WORKERS
    workers, max_seq_len explicit (the planner's token estimate is capped at it)."""
    from arc_ttft.models import resolve_max_seq_len

    flat = {"model": name, "budget_hours": 12, "workers": WORKERS, "profile": "kaggle-gpu"}
    cfg = C.validate(C.from_flat(C.RunConfig, {**flat, **overrides}))
    cfg = auto.resolve(cfg, auto.machine_for("kaggle-gpu"))
    cfg.model.max_seq_len = resolve_max_seq_len(cfg.model)
    return cfg


_SHARDS: dict[tuple, list[list[Task]]] = {}  # splitting counts every task's tokens: once


def _shards(tasks: Sequence[Task], workers: int, fmt: str) -> list[list[Task]]:
    # The split does not depend on the step count (it scales every task's cost alike).
    key = (tuple(t.id for t in tasks), workers, fmt)
    if key not in _SHARDS:
        _SHARDS[key] = [s for s in shard_tasks(list(tasks), workers, fmt, 1) if s]
    return _SHARDS[key]


def simulate_shards(
    cand: Candidate, tasks: Sequence[Task], cfg: C.RunConfig, *, runs: int, seed: int
) -> dict[str, float]:
    """One ``simulate`` per worker's shard, each with the whole budget (the workers run side
    by side); the run ends when its slowest worker does."""
    shards = _shards(tasks, cfg.workers, cfg.model.format)
    steps = inferred = 0.0
    used, overruns = [], 0
    for k, shard in enumerate(shards):
        r = S.simulate(shard, cfg, true_costs(cand, cfg, shard), runs=runs, seed=seed + k)
        steps += r.mean_steps * len(shard)
        inferred += r.mean_inferred * len(shard)
        used.append(r.mean_fraction_used)
        overruns += r.overruns
    n = sum(len(s) for s in shards)
    return {"steps": steps / n, "inferred": inferred / n, "used": max(used), "overruns": overruns}


COLUMNS = [
    "model", "params M", "seq len", "train GB", "vLLM GB", "fits 24 GB",
    "s/step (median task)", "DFS views/test", "inference h/worker", "steps/task", "inferred",
    "budget used",
    f"steps/task at target {FILL_TARGET}", f"budget used at {FILL_TARGET}",
]  # fmt: skip
SIMULATED = [c for c in COLUMNS if c.startswith(("steps/task", "inferred", "budget used"))]


def model_row(
    name: str,
    tasks: Sequence[Task],
    *,
    runs: int = 2,
    seed: int = 0,
    flags: dict | None = None,
    gpu_bytes: float = L4_MEMORY,
    fill_target: int = FILL_TARGET,
    label: str | None = None,
) -> dict:
    """One table row: memory, then (if it fits) the simulated 12 h at the default step
    target and at ``fill_target``. ``flags``: run settings over the defaults (RunConfig
    fields); ``gpu_bytes``: the memory of one GPU."""
    cand = REGISTRY[name]
    flags = flags or {}
    cfg = run_config(name, **flags)
    seq = cfg.model.max_seq_len
    tokens = [S._tokens(t, cfg) for t in tasks]
    med = tasks[int(np.argsort(tokens, kind="stable")[len(tokens) // 2])]
    med_n = S._tokens(med, cfg)
    # The longest step: a full-length sequence whose answer is a 30 x 30 grid.
    mem = train_memory(cand, cfg, seq, min(MAX_ANSWER, seq / 2))
    vllm = infer_memory(cand, cfg, seq)
    fits = mem["total"] <= gpu_bytes and vllm <= cfg.infer.gpu_memory_utilization * gpu_bytes
    shards = _shards(tasks, cfg.workers, cfg.model.format)
    infer_s = [sum(infer_seconds(cand, cfg, t, S._tokens(t, cfg)) for t in s) for s in shards]
    row = {
        "model": label or ", ".join([name, *map(_flag, flags.items())]),
        "params M": config_params(cand.config) / 1e6,
        "seq len": seq,
        "train GB": mem["total"] / 1e9,
        "vLLM GB": vllm / 1e9,
        "fits 24 GB": fits,
        "s/step (median task)": step_seconds(
            cand, cfg, med_n, min(costs.answer_tokens(med, cfg), med_n / 2)
        ),
        "DFS views/test": cfg.infer.views if cfg.infer.sampling == "dfs" else 0,
        "inference h/worker": max(infer_s) / 3600,
        "name": name,
        "flags": flags,
        "target": cfg.ttt.ttt_steps,
        "memory": mem,
        "overruns": None,
        **dict.fromkeys(SIMULATED),
    }
    if not fits:
        return row
    sim = simulate_shards(cand, tasks, cfg, runs=runs, seed=seed)
    fill_cfg = run_config(name, **{**flags, "ttt_steps": fill_target})
    fill = simulate_shards(cand, tasks, fill_cfg, runs=1, seed=seed)
    row.update(
        {
            "steps/task": sim["steps"],
            "inferred": sim["inferred"],
            "budget used": sim["used"],
            COLUMNS[-2]: fill["steps"],
            COLUMNS[-1]: fill["used"],
            "overruns": sim["overruns"] + fill["overruns"],
        }
    )
    return row


def _flag(item: tuple[str, object]) -> str:
    key, value = item
    flag = "--" + key.replace("_", "-")
    return flag if value is True else f"{flag} {value}"


# What a model that does not fit tries next, cheapest first: the bf16 adapter costs nothing
# (ttt_speed.md: a little faster, losses within 0.02 nats); checkpointing a second forward.
FALLBACKS = [{"lora_dtype": "bfloat16"}, {"lora_dtype": "bfloat16", "gradient_checkpointing": True}]


def model_groups() -> list[list[str]]:
    """The registry's hub models (not the bundled test models), those with the same
    architecture and sequence length together: their rows would be identical."""
    keys = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "model_type",
        "tie_word_embeddings",
    )
    groups: dict[tuple, list[str]] = {}
    for name, c in REGISTRY.items():
        if c.hub_id.startswith("arc-ttft/"):
            continue
        key = (*(c.config.get(k) for k in keys), c.default_seq_len, tuple(c.lora_targets))
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def rows_for(group: list[str], tasks: Sequence[Task], **kw) -> list[dict]:
    """The group's row with the defaults; when it does not fit, a second row with the
    first of FALLBACKS that fits (or the last)."""
    label = group[0] + (f" (also {', '.join(group[1:])})" if len(group) > 1 else "")
    rows = [model_row(group[0], tasks, label=label, **kw)]
    if rows[0]["fits 24 GB"]:
        return rows
    for flags in FALLBACKS:
        row = model_row(group[0], tasks, flags=flags, **kw)
        if row["fits 24 GB"]:
            break
    return [*rows, row]


def _fmt(v, col: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if col == "params M":
        return f"{v:,.0f}"
    if col.startswith(("inferred", "budget used", "inference h")):
        return f"{v:.3f}"
    if col.startswith("steps/task") or col.endswith("GB"):
        return f"{v:.1f}"
    if col.startswith("s/step"):
        return f"{v:.2f}"
    return str(v)


def table(rows: Sequence[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c], c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------


def page(rows: Sequence[dict], tasks: Sequence[Task], runs: int, seed: int, took: float) -> str:
    cfg = run_config("Qwen3-4B")
    inf = cfg.infer
    tokens = [S._tokens(t, run_config("Qwen2-0.5B")) for t in tasks]
    answers = [costs.answer_tokens(t, cfg) for t in tasks]
    over = sum(r["overruns"] or 0 for r in rows)
    text = PAGE.format(
        command="python scripts/bench_kaggle_4xl4.py"
        + ("" if (runs, seed) == (2, 0) else f" --runs {runs} --seed {seed}"),
        table=table(rows),
        findings=findings(rows, tasks),
        runs=runs,
        seed=seed,
        took=took,
        over=over,
        n=len(tasks),
        tests=sum(len(t.test) for t in tasks),
        med_tok=np.median(tokens),
        med_ans=np.median(answers),
        views=inf.views,
        rescore=inf.rescore,
        sampling=inf.sampling,
        scorer=inf.scorer,
        backend=inf.backend,
        min_prob=inf.min_prob,
        steps=cfg.ttt.ttt_steps,
        rank=cfg.ttt.lora_rank,
        lora_dtype=cfg.ttt.lora_dtype,
        probe=inf.probe_tasks,
        margin=cfg.budget.margin_seconds() / 60,
        act=ACT_BYTES,
        share=matmul_share(),
        gemm=GEMM_SHARE,
        mfu=mfu(),
        dfs=DFS_ANSWERS_PER_VIEW,
        prior=costs.DFS_PATHS,
        cands=costs.DFS_CANDIDATES,
        host=HOST_S_PER_NODE * 1e3,
        batch=DECODE_BATCH,
        fill=FILL_TARGET,
        overhead=STEP_OVERHEAD_S,
        load=LOAD_FIXED_S,
        disk=DISK_RATE / 1e9,
        cuda=CUDA_CONTEXT / 1e9,
        util=inf.gpu_memory_utilization,
        extra=extra_flops(rows),
        check=memory_check(),
        low=1 - memory_check() / MEMORY_MD_GIB,
        tight=tight_bytes() / 1e9,
    )
    return text


def extra_flops(rows: Sequence[dict]) -> str:
    """How much a step's head and attention add to 4 x params a token, lowest and highest
    over the table's models at their sequence lengths (a median answer of 648 tokens)."""
    shares = []
    for name, seq in {(r["name"], r["seq len"]) for r in rows}:
        cand = REGISTRY[name]
        base = 4.0 * body_params(cand.config) * seq
        shares.append((step_flops(cand, 16, seq, min(648, seq / 2)) / base - 1, name, seq))
    (lo, a, n), (hi, b, m) = min(shares), max(shares)
    return f"{lo:.0%} ({a} at {n}) to {hi:.0%} ({b} at {m}, mostly attention)"


MEMORY_MD_GIB = (5.02 + 5.21) / 2  # memory.md: fp32 step, 1024 tokens, peak above the model


def memory_check() -> float:
    """memory.md's fp32 step (Qwen2-0.5B, LoRA r16 on all seven, 1024 tokens, 128 answer
    tokens, full vocabulary) by this page's rule, GiB above the model: bf16 activations
    doubled (in fp32 the adapter's inputs need no copy), fp32 logits, LoRA state."""
    cand = REGISTRY["Qwen2-0.5B"]
    d = model_dims(cand.config)
    act = 2 * ACT_BYTES * d["layers"] * (d["h"] + d["i"]) * 1024
    return (act + 128 * d["vocab"] * 16 + 16.0 * lora_params(cand, 16)) / 2**30


def tight_bytes() -> float:
    """Estimates above this may not fit: 24 GB over how far the rule fell short of memory.md."""
    return L4_MEMORY * memory_check() / MEMORY_MD_GIB


def host_share(name: str, tasks: Sequence[Task]) -> float:
    """The share of a model's inference estimate that is vLLM's host time per node."""
    cand, cfg = REGISTRY[name], run_config(name)
    total = nodes = 0.0
    for t in tasks:
        ctx, answer = S._tokens(t, cfg), costs.answer_tokens(t, cfg)
        nodes += (
            len(t.test)
            * cfg.infer.views
            * min(DFS_ANSWERS_PER_VIEW * answer, cfg.infer.dfs_max_nodes)
        )
        total += infer_seconds(cand, cfg, t, ctx)
    return nodes * HOST_S_PER_NODE / total


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def findings(rows: Sequence[dict], tasks: Sequence[Task]) -> str:
    """What the table says, written from its rows."""

    def names(rs) -> str:
        return ", ".join(r["name"] for r in rs) or "none"

    first = [r for r in rows if not r["flags"]]
    later = [r for r in rows if r["flags"]]
    fit = [r for r in first if r["fits 24 GB"]]
    bf16, ckpt = ([r for r in later if r["flags"] == f and r["fits 24 GB"]] for f in FALLBACKS)
    never = [r for r in later if not r["fits 24 GB"]]
    tight = [r for r in rows if r["fits 24 GB"] and r["train GB"] > tight_bytes() / 1e9]
    sim = [r for r in rows if r["steps/task"] is not None]
    steps, used = [r["steps/task"] for r in sim], [r["budget used"] for r in sim]
    inferred, inf = [r["inferred"] for r in sim], [r["inference h/worker"] for r in sim]
    filled = [r[COLUMNS[-2]] for r in sim]
    cut = [f"{r['name']} {r[COLUMNS[-2]]:.0f}" for r in sim if r[COLUMNS[-2]] < FILL_TARGET]
    per_worker = len(tasks) / WORKERS
    fit_text = (
        f"- With the run's defaults (fp32 adapter, no gradient checkpointing) {len(fit)} of "
        f"{len(first)} rows fit an L4 at their registry sequence length: {names(fit)}. The "
        "largest avoidable term is peft's fp32 upcast of the adapter (an fp32 copy of each "
        "adapted layer's input): with `--lora-dtype bfloat16` (`ttt_speed.md`: a little "
        f"faster, losses within 0.02 nats) {names(bf16)} fit too; {names(ckpt)} also need "
        "`--gradient-checkpointing` (1.3-1.4x the step time)"
    )
    if never:
        fit_text += (
            f"; {names(never)} fits neither way (its vLLM KV cache of 8 views at the full "
            "length passes 0.85 x 24 GB: a shorter `--max-seq-len` or fewer views)"
        )
    tight_text = ", ".join(f"{r['name']} ({r['train GB']:.1f} GB)" for r in tight) or "none"
    cut_text = f"; the budget binds for {', '.join(cut)} steps a task" if cut else ""
    lines = [
        fit_text + ".",
        f"- Above {tight_bytes() / 1e9:.1f} GB the rule's shortfall against `memory.md` "
        f"could take a step past 24 GB: {tight_text}. Until a GPU measures them, add "
        "`--gradient-checkpointing` there: the 12 h easily pay its 1.3-1.4x step time (below).",
        f"- {len(tasks)} tasks on {WORKERS} workers leave the planner more time than "
        f"{sim[0]['target']} steps a task need: every configuration that fits trains "
        f"{_span(steps, '{:.1f}')} steps a task, answers {_span(inferred, '{:.1%}')} of the "
        f"tasks with their adapter and ends after {_span(used, '{:.0%}')} of the 12 h "
        "(runs past the deadline: "
        f"{sum(r['overruns'] for r in sim)}). At a target of {FILL_TARGET}, "
        f"{sum(f >= FILL_TARGET for f in filled)} of {len(sim)} still train all "
        f"{FILL_TARGET} steps{cut_text}. On 4 x L4 the step target, not the 12 h, binds.",
        f"- Inference: {_span(inf, '{:.1f}')} h for the busiest worker, plus the "
        f"probe's: `--probe-tasks` 16 is per worker, so the base model first answers 16 of "
        f"a worker's ~{per_worker:.0f} tasks. The least certain term dominates it: vLLM's "
        f"host time per DFS node, {host_share('SmolLM-135M-Instruct', tasks):.0%} of "
        f"SmolLM-135M's estimate and {host_share('Qwen3-4B', tasks):.0%} of Qwen3-4B's "
        "(then each node's KV read, its FLOPs or share of the weights' read, prefill and "
        "re-scoring). It was measured on vLLM's CPU build with a 1.1M model, and the 4.1 "
        "answers' worth a view at P = 0.02; the run's P = 0.1 walks fewer nodes.",
    ]
    return "\n".join(textwrap.fill(x, 90, subsequent_indent="  ") for x in lines)


PAGE = """\
# ARC Prize 2026 on 4 x L4, on paper: every registry model through the planner

The seed's table for 2026 (Kaggle's GPU machine: 4 x NVIDIA L4, 24 GB each; a 12-hour
run; a hidden test set of ARC-AGI-2 size). Nothing here ran on a GPU: costs come from the
L4's datasheet, a stated MFU and ratios measured in this project; the run itself is the
project's planner, `schedule.run_shard` (what `pipeline.run` runs), on a fake clock
(`arc_ttft.research.simulate`), once per worker over its shard of the bundled
{n}-task `arc2-eval` set ({tests} test inputs; `workers.shard_tasks` splits them over
4 workers, one per L4, each with the whole 12 h since they run side by side).

{table}

Columns: "train GB" is one LoRA step on a full-length sequence (seq len tokens, a 30 x 30
answer grid); "vLLM GB" the weights plus the KV cache of one test input's {views} views;
"fits" needs train GB <= 24 and vLLM GB <= {util} x 24 (vLLM's `--gpu-memory-utilization`).
"s/step" is one TTT step of the median task. "steps/task" (mean over tasks, target
{steps}), "inferred" (share of tasks answered with their adapter) and "budget used" (the
slowest worker's end over 12 h, mean over runs) come from the simulation; the last two
columns rerun it with a step target of {fill}, to show what the 12 h could buy.
A model that does not fit with the defaults gets a second row with the first of
`--lora-dtype bfloat16`, then that plus `--gradient-checkpointing`, that fits. Models with
the same architecture and sequence length share a row; "inference h/worker" is the
estimate for the busiest worker's shard. Runs that ended after the deadline: {over}.

## The run simulated (the defaults under `--profile kaggle-gpu`)

`auto.resolve(cfg, auto.machine_for("kaggle-gpu"))` with `--workers 4`: backend
{backend}, sampling {sampling} (`--min-prob` {min_prob}), scorer {scorer}, {views}
views a test input walked by DFS, {rescore} scoring views, {steps} TTT steps a task
(LoRA rank {rank} on the registry's targets, every attention and MLP projection; adapter
dtype {lora_dtype}; no gradient checkpointing), probe of {probe} tasks per worker, 12 h budget with a {margin:.0f}-minute
margin. Sequence length: the registry's `default_seq_len` (`arc-ttft models`). Tokens per
task: the planner's own estimate (`shard.estimate_tokens`, Qwen2-style counting, used
for every model), capped at the sequence length: median {med_tok:.0f} (`tokens.md`, real
Qwen2 tokenizer: 2824). Answer tokens (`costs.answer_tokens`, the largest plausible
answer grid): median {med_ans:.0f}.

## Costs, and how they become the planner's units

GPU figures (NVIDIA L4 datasheet): BF16 tensor throughput 242 TFLOPS *with sparsity*,
"one-half lower without", so **121 TFLOPS dense**; memory bandwidth **300 GB/s**; memory
**24 GB**. MFU: **{mfu:.3f}** = {share:.3f} x {gemm:.3f}, where

- {share:.3f} is measured here: the CPU TTT step of `benchmarks/ttt_speed.md` ("ours",
  Qwen2-0.5B, 1024 tokens, 5.71 s) does its model FLOPs (counted as below) at {share:.3f}
  of the rate that CPU's bf16 matmuls reach (~390 GFLOP/s, same page): what is not a
  large matmul (attention kernels, element-wise ops, the optimizer) costs the rest.
  Assumed to cost the same share of an L4 step;
- {gemm:.3f} = 24 / 65: a T4, a 70 W card like the 72 W L4, sustains about 24 of its
  65 fp16 TFLOPS on a large cuBLAS GEMM because of power capping (NVIDIA developer
  forum). Assumed the same share for the L4; not measured on one.

TTT step (`ttt_speed.flop_coefficients`' convention): frozen linear layers 4 x params a
token (forward and input gradient, no weight gradient), LoRA weights 6 x, the output head
4 x hidden x vocabulary at answer tokens only (`ttt_samples.answer_loss`), causal attention
12 x heads x head_dim a query-key pair (Gemma 3's sliding layers: 512 keys). With
gradient checkpointing the forward runs twice: 6 x, 8 x, 16 x. Seconds = FLOPs / (MFU x
121e12) + {overhead} s a step (optimizer, launches; assumed). The issue's "4 x params a
token" is the first term (params without the embedding); at the rows' sequence lengths
the head and attention add
{extra}.

Inference (vLLM, DFS): per test input and view, the prompt's prefill (compute-bound, 2 x
params a token / (MFU x peak)), then the walk: **{dfs:.1f} answers' worth of nodes**, as
arc-nano's lockstep walk measured (`benchmarks/dfs.md`: 524 nodes for 8 walks of 16
tokens; the planner's prior `costs.DFS_PATHS` is {prior}), at most `--dfs-max-nodes`.
A node costs max(compute: 2 x (params + head) a token / (MFU x peak); the weights' bytes
/ 300 GB/s shared by the {batch} walks of a round) + its own KV read (context x KV bytes
a token / 300 GB/s) + {host:.2f} ms of vLLM host
time (`dfs.md`: 629 nodes/s with 32 walks on vLLM's CPU build, arc-nano; an upper
bound, as it includes that model's forward). Then re-scoring: {cands} candidates
(`costs.DFS_CANDIDATES`) under {rescore} views, each a prefill of the view's prompt
and of the candidates' tokens.

The planner's units (`simulate.TrueCosts`, read with `_raw_workload` and
`true_costs_for`): the fake shard charges a TTT step of task t `step_per_token` x
tokens(t), tokens(t) being the planner's estimate capped at max_seq_len, so
`step_per_token` is seconds per training token of one step, not a per-token GPU cost:
the script sets it to the shard's summed step seconds over its summed tokens (a step's
fixed overhead and attention's quadratic part spread over the tokens; the shard's total
is exact, a long task's step a little under, a short one's a little over). Inference of
task t costs `gen_per_token` x `_raw_workload` = (prompts + 0.1 x re-scoring calls) x
answer tokens, with prompts = tests x views x {prior} (the DFS prior) and re-scoring
calls = tests x {rescore} x {cands}: one unit is neither a generated nor a walked token,
so `gen_per_token` = the shard's summed inference seconds (above) over its summed units.
The planner's prior is set to these true costs (`prior_factor` 1), the probe's
base-model walks cost as much as the adapters' (`TrueCosts.probe_share` 1, its default),
costs are jittered +-30% per step and per chunk, and model loads cost {load:.0f} s + the bf16 weights at
{disk:.1f} GB/s (assumed), 2 s per trained task (simulate's default).

Memory: weights 2 bytes a parameter; LoRA 16 bytes a LoRA parameter (fp32 weight,
gradient, two AdamW moments); activations **{act:.1f} bytes a token, layer and unit of
(hidden + intermediate) width**, from `ttt_speed.md`'s bf16 step (peak 2.94 GiB at 1024
tokens, 4.59 GiB at 2048: 1.65 MiB a token over 24 x (896 + 4864)), plus, with the default
fp32 adapter, an fp32 copy of each adapted layer's input (the upcast `ttt_speed.md`
describes); with gradient checkpointing, each layer's bf16 input plus one layer's
activations; logits at the answer positions, 14 bytes a vocabulary entry (bf16 logits,
their fp32 copy, log-softmax, gradient); {cuda:.0f} GB for the CUDA context and
workspaces (assumed). The activation figure is a CPU measurement (SDPA's flash kernel,
eager MLP and RMSNorm): GPU kernels keep about the same tensors. Cross-check:
`benchmarks/memory.md` measured 5.0-5.2 GiB above the model for an fp32 step at 1024
tokens (LoRA on all seven projections, 128 answer tokens, full vocabulary); this rule
gives {check:.1f} GiB for it (bf16 activations doubled, fp32 logits, LoRA state): it may
be {low:.0%} low, so an estimate above {tight:.1f} GB is not a safe fit.

## What it says

{findings}

## Reproduce

```bash
{command}
```

{runs} simulated runs per worker and row ({fill}-step column: 1), seed {seed}; {took:.0f} s
of one CPU core for the page.

## Sources

- NVIDIA L4 Tensor Core GPU datasheet and product page
  (https://www.nvidia.com/en-us/data-center/l4/): "BFLOAT16 Tensor Core 242 teraFLOPS*",
  "* Shown with sparsity. Specifications are one-half lower without sparsity", GPU
  memory 24 GB, bandwidth 300 GB/s, 72 W. Read through quotations of the page in
  public repositories (the page itself was not in the search store); the project's
  `research/ttt_speed.PEAK_TFLOPS` has the same 121 for the L4.
- NVIDIA developer forum, "About GPU peak performance"
  (https://forums.developer.nvidia.com/t/about-gpu-peak-performance/264462): a T4
  measured ~24 TFLOPS fp16 on 4096^3 cuBLAS GEMMs against 65 peak, explained there by
  power capping at ~70 W.
- Qwen3-4B-Thinking-2507 model card (https://huggingface.co/Qwen/Qwen3-4B-Thinking-2507):
  4.0B parameters, 36 layers, 32 query and 8 KV heads, "Context Length: 262,144
  natively": its registry row is Qwen3-4B's architecture with that context. Its
  rope_theta (5e6) is the one the 2507 Qwen3-4B configs carry in public copies; the
  official config.json was not in the search store (a real download brings its own).
- This project: `benchmarks/ttt_speed.md` (step time, matmul rate, peak memory),
  `benchmarks/memory.md` (the fp32 step's memory, the cross-check),
  `benchmarks/dfs.md` (DFS nodes per walk, vLLM lockstep nodes/s),
  `benchmarks/tokens.md` (ARC-AGI-2 evaluation: median 2824 tokens, digits format),
  `research/ttt_speed.flop_coefficients` (the FLOP count).

## Left out

Of the models named for ARC Prize 2025-26 teams, Qwen3-4B-Thinking-2507 got a registry row
(Qwen3-4B's architecture, see Sources; it shares Qwen3-4B's table row). These did not:

- **Qwen3.5 small sizes** (0.8B, 2B, 4B): the installed transformers (5.25.0) has the
  architecture (`models/qwen3_5`, `Qwen3_5TextConfig`), but the published config.json of
  the small sizes was not found (only the 27B's, in third-party code, and test fixtures
  that quote parts of the 0.8B's), and the architecture is a hybrid: three of four layers
  are Gated DeltaNet linear attention (`Qwen3_5GatedDeltaNet`: `linear_num_key_heads`,
  `linear_conv_kernel_dim`, ...), the others softmax attention with a sigmoid output gate. `registry.config_params`, `scaled_down` and the LoRA targets
  know only softmax-attention layers, so a row would need code, not data
  (`tests/test_models.py` checks the arithmetic against the built model).
- **Gemma 4 E2B**: transformers has it (`models/gemma4`), but its config.json was found
  only as a third-party copy of `google/gemma-4-E2B-it`, and the model is multimodal
  (`Gemma4ForConditionalGeneration`, audio and vision towers) with per-layer embeddings
  (`hidden_size_per_layer_input`), KV shared across its last layers and 512-wide
  global heads: again outside what `config_params` counts.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="simulated runs per worker and row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/kaggle-4xL4.md")
    args = ap.parse_args()

    t0 = time.monotonic()
    tasks = load_tasks(TASK_SET).tasks
    rows = []
    for group in model_groups():
        for row in rows_for(group, tasks, runs=args.runs, seed=args.seed):
            print(" | ".join(_fmt(row[c], c) for c in COLUMNS), flush=True)
            rows.append(row)
    Path(args.out).write_text(page(rows, tasks, args.runs, args.seed, time.monotonic() - t0))
    print(f"wrote {args.out} in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
