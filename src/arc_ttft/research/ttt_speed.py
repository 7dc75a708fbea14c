"""`arc-ttft bench ttt`: this project's TTT step against the 2024 reference recipe.

Two configurations train a fresh LoRA adapter on the same sequences, in the same order,
for the same steps, on the same architecture with random weights (registry config: no
download), each in a fresh subprocess (``isolation.run_isolated``) so its peak memory is its
own:

- ``baseline``, the way the 2024 reference solution fine-tuned: the full vocabulary,
  batch 1, ``transformers.Trainer`` with its defaults (fp32 on CPU, fused AdamW, linear
  schedule, gradient clipping at 1.0) on a labels-masked dataset, so the model computes
  logits at every position over the whole vocabulary and HF's own loss;
- ``ours``, this project's fastest configuration: the vocabulary shrunk to the prompt
  tokens (``vocab.shrink``), answer-only logits (``ttt_samples.answer_loss``), padding-free packed
  batches built once before the first step, foreach AdamW, bf16 weights and a bf16
  adapter with fp32 master weights (``lora_dtype=bfloat16``); ``ours-fp32`` keeps
  everything fp32 to separate the effects.

The data: real leave-one-out prompts of ARC tasks (the last train pair asked with the
others as examples, identity view), each cut to exactly ``seq_len`` tokens by keeping its
last ``seq_len`` tokens, so the answer (the loss) is at the end as in training. Both
configurations see the same token sequence (``ours`` through the old -> new id map).

Reported per configuration: answer tokens per second and seconds per step over the timed
steps (after ``warmup`` untimed ones), peak memory (VmHWM of the process on CPU,
``max_memory_allocated`` on CUDA) and the loss of every step. The baseline also reports
its loss restricted to the kept tokens (the same logits, softmax over the kept ids only),
which is what ``ours`` computes: with a shrunk vocabulary the softmax normaliser sums over
K tokens instead of 151,936, so the raw losses differ by construction (about ln(151936/K)
nats for a random model) while the restricted ones are comparable.

Over 500 lines: two training recipes (ours and the 2024 reference) measured the same way,
with their FLOP and peak-throughput figures and the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_ttft.config import ConfigError, at_least, option
from arc_ttft.research import isolation
from arc_ttft.research.isolation import GIB

CONFIGS = ("baseline", "ours", "ours-fp32")


@dataclass
class TTTSpeedConfig:
    """`arc-ttft bench ttt`: tokens/s, seconds/step and peak memory, ours vs the reference."""

    model: str = option("Qwen2-0.5B", "Architecture (registry name), built with random weights.")
    seq_len: list[int] = option([1024, 2048], "Tokens per step (comma separated lengths).")
    steps: int = option(3, "Timed optimizer steps per configuration.")
    warmup: int = option(1, "Untimed steps before them.")
    configs: list[str] = option(
        ["baseline", "ours"],
        "Configurations, run alternating per length: baseline, ours, ours-fp32.",
    )
    tokenizer: str = option(
        "auto",
        "auto (the model's own if on disk, else the Qwen2 tokenizer built offline from "
        "dashscope for Qwen2 models, else the tiny one), tiny, or a tokenizer folder.",
    )
    format: str = option("digits", "Grid text format of the prompts.")
    challenges: str = option("arc1-eval", "Tasks the prompts come from.")
    bench_lora_rank: int = option(16, "LoRA rank (both configurations).")
    bench_lora_targets: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "o_proj"], "LoRA target modules (both configurations)."
    )
    bench_learning_rate: float = option(
        1e-4, "Peak learning rate, linear decay, no warm-up (both)."
    )
    bench_batch_size: list[int] = option(
        [1],
        "Sequences per step for ours, comma separated: one ours row each (equal lengths go "
        "as rows, so SDPA keeps its flash kernel). The baseline stays at batch 1 like the "
        "reference; the ratios use the first.",
    )
    peak_tflops: float = option(
        0.0,
        "The device's dense bf16 peak in TFLOP/s for MFU; 0 = from the GPU's name "
        "(H100/H200 989, A100 312, L4 121, T4 65 fp16). No MFU on CPU.",
    )
    device: str = option("auto", "auto (cuda when available), cpu, cuda.")
    isolate: bool = option(True, "A fresh subprocess per configuration (exact peak memory).")
    timeout_minutes: float = option(20.0, "Give up on one configuration after this long.")
    output: str | None = option(None, "Also write the results (loss curves included) to this JSON.")

    def problems(self) -> list[str]:
        out = at_least(self, 1, "steps") + at_least(self, 0, "warmup")
        if not self.bench_batch_size or any(int(b) < 1 for b in self.bench_batch_size):
            out.append(f"bench_batch_size: {self.bench_batch_size} must be sizes >= 1")
        if self.peak_tflops < 0:
            out.append(f"peak_tflops: {self.peak_tflops} must be >= 0 (0 = from the GPU name)")
        try:
            short = not self.seq_len or any(int(n) < 64 for n in self.seq_len)
        except (TypeError, ValueError):
            short = True
        if short:
            out.append(f"seq_len: {self.seq_len} must be comma separated lengths >= 64")
        bad = [c for c in self.configs if c not in CONFIGS]
        if bad or not self.configs:
            out.append(f"configs: {bad or 'none'} unknown; choose from {', '.join(CONFIGS)}")
        if "baseline" not in self.configs or not any(c.startswith("ours") for c in self.configs):
            out.append("configs: the ratios need baseline and one of ours, ours-fp32")
        return out


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def bench_samples(
    tokenizer, seq_len: int, n: int, fmt: str = "digits", challenges: str = "arc1-eval"
):
    """``n`` sequences of exactly ``seq_len`` tokens from real tasks, answer at the end.

    Tasks in file order; for each, the last train pair asked with the others as examples.
    Prompts shorter than ``seq_len`` are skipped, longer ones keep their last ``seq_len``
    tokens. Cycles when fewer tasks are long enough.
    """
    from arc_ttft import tasks, ttt_samples

    out = []
    for task in tasks.load_tasks(challenges).tasks:
        if len(task.train) < 2:
            continue
        s = ttt_samples.holdout_sample(task, len(task.train) - 1, fmt, tokenizer)
        if len(s.input_ids) < seq_len or 2 * s.n_answer > seq_len:
            continue
        out.append(ttt_samples.Sample(s.input_ids[-seq_len:], s.labels[-seq_len:]))
        if len(out) == n:
            return out
    if not out:
        raise ValueError(
            f"seq_len: no prompt of {challenges} reaches {seq_len} tokens; use a shorter length"
        )
    return [out[i % len(out)] for i in range(n)]


def resolve_tokenizer(name: str, model: str) -> str:
    """``auto`` / ``tiny`` / a folder -> what the children load (a folder or 'tiny')."""
    from arc_ttft import models

    if name not in ("auto", "tiny"):
        if not (Path(name) / "tokenizer_config.json").is_file():
            raise ConfigError([f"tokenizer: {name!r} is not a saved tokenizer folder"])
        return name
    if name == "auto":
        try:
            return str(models.resolve_model_path(model, download=False))
        except models.ModelNotFoundError:
            pass
        cand = models.find_candidate(model)
        if cand is not None and cand.config.get("model_type") == "qwen2" and cand.name != "tiny":
            from arc_ttft.qwen2_tokenizer import qwen2_tokenizer_folder

            folder = qwen2_tokenizer_folder()  # base models end with <|endoftext|>
            if folder is not None:
                return str(folder)
    return "tiny"


def _load_tokenizer(where: str):
    from transformers import AutoTokenizer

    from arc_ttft import models

    if where == "tiny":
        return AutoTokenizer.from_pretrained(models.ensure_tiny_model())
    return AutoTokenizer.from_pretrained(where)


# ---------------------------------------------------------------------------------------
# One configuration (runs in the child: isolation.run_isolated)
# ---------------------------------------------------------------------------------------


# Dense bf16 peaks (fp16 for the T4, which has no bf16), TFLOP/s, from the vendors' sheets.
# The PCIe H100 is slower than the SXM one: match it first.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0),
               ("L40S", 362.0), ("L4", 121.0), ("A10G", 125.0), ("T4", 65.0))  # fmt: skip


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name, None when unknown."""
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def flop_coefficients(model) -> dict[str, float]:
    """What one training step costs in FLOPs, per unit, read off the (peft) model.

    - ``per_token``: every linear layer but the output head, at every position: frozen
      ones 4 x in x out (forward, and the input gradient backward; no weight gradient),
      trained ones (LoRA A and B) 6 x in x out.
    - ``per_answer``: the output head, only at the answer positions (what ours computes;
      the baseline's logits elsewhere are waste, not model FLOPs).
    - ``per_square``: causal attention, per layer 2 x L^2 x heads x head_dim forward (QK and
      AV, half of the square skipped) and twice that backward, times the layers; multiply
      by the sum of L^2 over the sequences of the step.
    """
    import torch

    per_token = per_answer = 0.0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            f = (6 if mod.weight.requires_grad else 4) * mod.in_features * mod.out_features
            if "lm_head" in name:
                per_answer += f
            else:
                per_token += f
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_square = 6.0 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim
    return {"per_token": per_token, "per_answer": per_answer, "per_square": per_square}


def step_flops(coef: dict[str, float], seq_lens: list[int], answer_tokens: int) -> float:
    """Model FLOPs of one step over sequences of ``seq_lens`` (see flop_coefficients)."""
    return (
        coef["per_token"] * sum(seq_lens)
        + coef["per_answer"] * answer_tokens
        + coef["per_square"] * sum(n * n for n in seq_lens)
    )


def _now() -> tuple[float, float]:
    """(wall clock, CPU time of this process), both in seconds."""
    return time.perf_counter(), time.process_time()


def _lora(spec: dict[str, Any], batch_size: int = 1, lora_dtype: str = "float32"):
    from arc_ttft.config import TTTConfig

    return TTTConfig(
        lora_rank=spec["lora_rank"],
        lora_alpha=2.0 * spec["lora_rank"],
        lora_targets=list(spec["lora_targets"]),
        learning_rate=spec["learning_rate"],
        lr_schedule="linear",
        warmup_steps=0,
        batch_size=batch_size,
        lora_dtype=lora_dtype,
    )


def _restricted_ce(logits, labels, kept_idx, new_of_old) -> float:
    """Cross-entropy of HF-style (unshifted) labels with the softmax over kept ids only."""
    import torch

    tg = labels[0, 1:]
    pos = (tg != -100).nonzero().squeeze(-1)
    # Columns first: a (tokens x K) copy, never another (tokens x vocab) one.
    sub = logits[0, :-1].detach().index_select(1, kept_idx)[pos].float()
    return float(torch.nn.functional.cross_entropy(sub, new_of_old[tg[pos]]))


def _run_baseline(spec, model_cfg, tokenizer, samples, vmap, device) -> dict[str, Any]:
    """transformers.Trainer with its defaults, batch 1, full vocabulary, HF's loss."""
    import torch
    from peft import get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from arc_ttft import models, ttt

    model = models.build_random_model(model_cfg, torch.float32).to(device)
    model.config.use_cache = False
    model = get_peft_model(model, ttt.lora_config(_lora(spec)))
    coef = flop_coefficients(model)
    kept_idx = torch.tensor(vmap.kept, device=device)
    new_of_old = torch.full((max(vmap.kept) + 1,), -1, dtype=torch.long, device=device)
    new_of_old[kept_idx] = torch.arange(vmap.size, device=device)

    class Ordered(torch.utils.data.IterableDataset):
        # Iterable: the Trainer then keeps this order (both configurations see the same).
        def __iter__(self):
            for s in samples:
                yield {
                    "input_ids": torch.tensor(s.input_ids),
                    "attention_mask": torch.ones(len(s.input_ids), dtype=torch.long),
                    "labels": torch.tensor(s.labels),
                }

    ends: list[tuple[float, float]] = []
    losses: list[float] = []
    restricted: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(_now())

    class LoggingTrainer(Trainer):
        # Trainer's own loss; the restricted loss is read off the same logits, no grad.
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, out = super().compute_loss(model, inputs, True, num_items_in_batch)
            losses.append(float(loss.detach()))
            restricted.append(_restricted_ce(out.logits, inputs["labels"], kept_idx, new_of_old))
            return (loss, out) if return_outputs else loss

    with tempfile.TemporaryDirectory(prefix="arc-ttft-trainer-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=1,
            max_steps=len(samples),
            learning_rate=spec["learning_rate"],
            lr_scheduler_type="linear",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not device.startswith("cuda"),
            seed=0,
        )
        trainer = LoggingTrainer(
            model=model, args=args, train_dataset=Ordered(), callbacks=[Clock()]
        )
        start = _now()
        trainer.train()
    return {"ends": ends, "start": start, "losses": losses, "restricted_losses": restricted,
            "flops": coef}  # fmt: skip


def _run_ours(spec, model_cfg, tokenizer, samples, vmap, device, dtype_name) -> dict[str, Any]:
    """Shrunk vocabulary, answer-only logits, packed pre-built batches, foreach AdamW."""
    import torch

    from arc_ttft import models, ttt, ttt_samples
    from arc_ttft import shrunk_vocab as vocab

    dtype = getattr(torch, dtype_name)
    # Built directly in the target dtype: a full fp32 copy first would set the peak.
    model = models.build_random_model(model_cfg, dtype)
    model, _, own = vocab.shrink(model, tokenizer, spec["formats"])
    if own.kept != vmap.kept:
        raise RuntimeError("ours: the shrunk vocabulary differs from the baseline's kept ids")
    model = model.to(device)
    model.config.use_cache = False
    mapped = [ttt_samples.Sample(vmap.to_new(s.input_ids), [x if x < 0 else vmap.to_new([x])[0] for x in s.labels]) for s in samples]  # fmt: skip
    # bf16 runs the adapter in bf16 too (fp32 master weights in the optimizer).
    lora = _lora(spec, spec["batch_size"], dtype_name if dtype_name == "bfloat16" else "float32")
    model = ttt.prepare_peft_model(model, lora)
    ends: list[tuple[float, float]] = []
    start = _now()
    losses, _, _, _ = ttt.train_steps(
        model,
        mapped,
        lora,
        len(mapped) // lora.batch_size,
        on_step=lambda i, loss: ends.append(_now()),
    )
    return {"ends": ends, "start": start, "losses": losses, "restricted_losses": losses,
            "flops": flop_coefficients(model)}  # fmt: skip


def measure_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process and return its figures (see module doc)."""
    import torch

    from arc_ttft import shrunk_vocab as vocab
    from arc_ttft.config import ModelConfig

    device = spec["device"]
    cfg = spec["config"]
    t0 = time.perf_counter()
    tokenizer = _load_tokenizer(spec["tokenizer"])
    n = spec["warmup"] + spec["steps"]
    # The baseline is batch 1 like the reference; ours takes batch_size sequences a step.
    bs = 1 if cfg == "baseline" else spec.get("batch_size", 1)
    spec = {**spec, "batch_size": bs}
    samples = bench_samples(tokenizer, spec["seq_len"], n * bs, spec["format"], spec["challenges"])
    vmap = vocab.VocabMap(vocab.kept_token_ids(tokenizer, spec["formats"]), 0)
    model_cfg = ModelConfig(model=spec["model"], random_weights=True)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if cfg == "baseline":
        r = _run_baseline(spec, model_cfg, tokenizer, samples, vmap, device)
    else:
        dtype = "float32" if cfg == "ours-fp32" else spec["ours_dtype"]
        r = _run_ours(spec, model_cfg, tokenizer, samples, vmap, device, dtype)
    if len(r["ends"]) != n:
        raise RuntimeError(f"{cfg}: {len(r['ends'])} steps ran, expected {n}")
    w = spec["warmup"]
    # A step's time is the interval between consecutive step ends (all loop overhead in).
    marks = [r["start"], *r["ends"]]
    times = [b[0] - a[0] for a, b in zip(marks[w:], marks[w + 1 :])]
    cpu = [b[1] - a[1] for a, b in zip(marks[w:], marks[w + 1 :])]
    answer = [
        sum(sum(1 for x in s.labels[1:] if x != -100) for s in samples[i * bs : (i + 1) * bs])
        for i in range(w, n)
    ]
    seconds = sum(times)
    flops = sum(step_flops(r["flops"], [spec["seq_len"]] * bs, a) for a in answer)
    device_name, peak = "cpu", None
    if device.startswith("cuda"):
        device_name = torch.cuda.get_device_name(device)
        peak = spec.get("peak_tflops") or peak_tflops(device_name)
    return {
        "config": cfg,
        "seq_len": spec["seq_len"],
        "batch_size": bs,
        "status": "ok",
        "device": device,
        "device_name": device_name,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / (peak * 1e12) if peak else None,
        "vocab": vmap.size if cfg != "baseline" else None,
        "sec_per_step": seconds / len(times),
        "step_seconds": times,
        # CPU seconds of this process per step: less sensitive to other processes
        # competing for the cores than wall-clock time.
        "cpu_sec_per_step": sum(cpu) / len(cpu),
        "answer_tok_per_cpu_s": sum(answer) / max(sum(cpu), 1e-9),
        "answer_tokens": sum(answer),
        "answer_tok_per_s": sum(answer) / seconds,
        "peak_bytes": isolation.peak_memory_bytes(device),
        "losses": r["losses"],
        "restricted_losses": r["restricted_losses"],
        "total_s": time.perf_counter() - t0,
        # Other processes on the machine slow both configurations; say how busy it was.
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def run_one(spec: dict[str, Any], isolate: bool, timeout_s: float | None) -> dict[str, Any]:
    """One configuration, in a fresh subprocess when ``isolate``; failures become a
    result with status error/timeout and the reason."""
    if not isolate:
        return measure_one(spec)
    r = isolation.run_isolated("arc_ttft.research.ttt_speed:measure_one", spec, timeout_s)
    return r if "config" in r else {"config": spec["config"], "seq_len": spec["seq_len"], **r}


# ---------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------


@dataclass
class SpeedResult:
    rows: list[dict[str, Any]]
    ratios: dict[int, tuple[float, float]] = field(default_factory=dict)  # len -> (speed, mem)
    cpu_ratios: dict[int, float] = field(default_factory=dict)  # len -> speed-up in CPU time
    tokenizer: str = ""
    device: str = ""

    def last_line(self) -> str:
        """``speedup: X.XXx tokens/s, memory: Y.YYx peak`` at the longest length."""
        speed, mem = self.ratios[max(self.ratios)]
        return f"speedup: {speed:.2f}x tokens/s, memory: {mem:.2f}x peak"

    def table(self) -> str:
        head = (
            "| seq len | config | batch | vocab | s/step | CPU s/step | answer tok/s | peak GiB "
            "| model TFLOP/s | MFU | losses (restricted to kept ids) |"
        )
        lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            if r["status"] != "ok":
                lines.append(
                    f"| {r['seq_len']} | {r['config']} | {r.get('batch_size', '')} | | "
                    f"{r['status']}: {r.get('reason', '')} | | | | | | |"
                )
                continue
            raw = " ".join(f"{x:.3f}" for x in r["losses"])
            res = " ".join(f"{x:.3f}" for x in r["restricted_losses"])
            loss = raw if r["config"] != "baseline" else f"{raw} ({res})"
            vocab = "full" if r["vocab"] is None else str(r["vocab"])
            mfu = "" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
            lines.append(
                f"| {r['seq_len']} | {r['config']} | {r.get('batch_size', 1)} | {vocab} | "
                f"{r['sec_per_step']:.3f} | {r['cpu_sec_per_step']:.2f} | "
                f"{r['answer_tok_per_s']:.2f} | {r['peak_bytes'] / GIB:.2f} | "
                f"{r.get('model_tflops_per_s', 0):.3g} | {mfu} | {loss} |"
            )
        return "\n".join(lines)


def _ours_row(rows: list[dict[str, Any]], seq_len: int) -> dict[str, Any] | None:
    """The first ours row of this length that ran (the first batch size)."""
    for name in ("ours", "ours-fp32"):
        for r in rows:
            if r["config"] == name and r["seq_len"] == seq_len and r["status"] == "ok":
                return r
    return None


def run_bench(cfg: TTTSpeedConfig, log=print) -> SpeedResult:
    """Every length, every configuration (alternating), then the ratios ours / baseline."""
    from arc_ttft.config import validate

    validate(cfg)
    from arc_ttft import models

    device = models.default_device() if cfg.device == "auto" else cfg.device
    tok = resolve_tokenizer(cfg.tokenizer, cfg.model)
    base = {
        "model": cfg.model, "tokenizer": tok, "steps": cfg.steps, "warmup": cfg.warmup,
        "format": cfg.format, "formats": [cfg.format], "challenges": cfg.challenges,
        "lora_rank": cfg.bench_lora_rank, "lora_targets": list(cfg.bench_lora_targets),
        "learning_rate": cfg.bench_learning_rate, "device": device, "ours_dtype": "bfloat16",
        "peak_tflops": cfg.peak_tflops,
    }  # fmt: skip
    log(f"model {cfg.model} (random weights), tokenizer {tok}, device {device}, "
        f"{cfg.warmup} warm-up + {cfg.steps} timed steps")  # fmt: skip
    rows = []
    for n in [int(x) for x in cfg.seq_len]:
        for name in cfg.configs:
            for bs in [1] if name == "baseline" else [int(b) for b in cfg.bench_batch_size]:
                spec = {**base, "seq_len": n, "config": name, "batch_size": bs}
                r = run_one(spec, cfg.isolate, cfg.timeout_minutes * 60)
                r.setdefault("batch_size", bs)
                rows.append(r)
                if r["status"] != "ok":
                    log(f"{n:>6} {name:<10} x{bs:<3} {r['status']}: {r.get('reason', '')}")
                    continue
                mfu = f"  MFU {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
                log(f"{n:>6} {name:<10} x{bs:<3} {r['sec_per_step']:7.3f} s/step "
                    f"{r['answer_tok_per_s']:9.2f} answer tok/s  peak {r['peak_bytes'] / GIB:6.2f} GiB"
                    f"{mfu}  losses {' '.join(f'{x:.3f}' for x in r['losses'])}")  # fmt: skip
    result = SpeedResult(rows, tokenizer=tok, device=device)
    for n in [int(x) for x in cfg.seq_len]:
        b = next((r for r in rows if r["config"] == "baseline" and r["seq_len"] == n and r["status"] == "ok"), None)  # fmt: skip
        o = _ours_row(rows, n)
        if b and o:
            result.ratios[n] = (
                o["answer_tok_per_s"] / b["answer_tok_per_s"],
                o["peak_bytes"] / b["peak_bytes"],
            )
            result.cpu_ratios[n] = o["answer_tok_per_cpu_s"] / b["answer_tok_per_cpu_s"]
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(
            json.dumps(
                {
                    "config": dataclasses.asdict(cfg),
                    "tokenizer": tok,
                    "device": device,
                    "rows": rows,
                    "ratios": result.ratios,
                    "cpu_ratios": result.cpu_ratios,
                },
                indent=1,
            )
            + "\n"  # fmt: skip
        )
    return result


def main_bench(cfg: TTTSpeedConfig) -> int:
    """Print progress, the table and per-length ratios; the last line is the ratio line."""
    result = run_bench(cfg)
    print(result.table())
    for n, (s, m) in sorted(result.ratios.items()):
        print(
            f"at {n}: ours/baseline answer tokens/s {s:.2f}x (per CPU second "
            f"{result.cpu_ratios[n]:.2f}x), peak memory {m:.2f}x"
        )
    if not result.ratios:
        print(
            "ttt bench: no length with both configurations ok; see the rows above", file=sys.stderr
        )
        return 1
    print(result.last_line())
    return 0
