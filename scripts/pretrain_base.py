"""Pretrain a small Qwen2 base model from scratch on generated ARC tasks (CPU friendly).

A thin caller of ``arc_ttft.training.finetune``: a fresh Qwen2 (``make_model``: the tiny model's
tokenizer, head_dim 64, MLP 4x hidden, tied embeddings) is fully fine-tuned on
``generated:N`` tasks, so it sees exactly the prompts, views and tokenisation of TTT and
inference. Loss on every output grid after the first (``label_mode=outputs``).
Evaluation is ``arc-ttft run`` (``learning.run_arm``: the pipeline with its views and
vote) on seeded held-out generated tasks.

    python scripts/pretrain_base.py --out runs/arc-nano --minutes 65 --steps 20000
    python scripts/pretrain_base.py --eval-only runs/arc-nano/model --eval-tasks 100

Old flags and what they are now: ``--steps`` is ``--max-steps`` (the cosine schedule
spans it; ``--minutes`` is a wall-clock budget that stops training cleanly, so set
``--steps`` to what fits), ``--warmup`` a fraction of ``--steps``, ``--batch-tokens`` is
read as ``batch_tokens // 256`` sequences per step unless ``--batch-size`` is given,
``--curriculum`` sets the generated grid sides to the range its stages span (tasks of
all those sizes are mixed from the start), ``--ckpt-minutes`` the checkpoint interval
(``--resume`` continues). ``--bf16`` and ``--log-every`` are accepted and ignored
(training runs in fp32 on CPU; every step's loss is in ``OUT/losses.csv``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from arc_ttft import config as C
from arc_ttft import encoding
from arc_ttft.models import TINY_CONFIG, build_config, ensure_tiny_model
from arc_ttft.training.config import FinetuneConfig

# (progress at which the stage starts, min_size, max_size); only the span is used now.
CURRICULA: dict[str, list[tuple[float, int, int]]] = {
    "none": [(0.0, 3, 10)],
    "default": [(0.0, 2, 4), (0.2, 2, 6), (0.45, 2, 8), (0.7, 3, 10)],
    "small": [(0.0, 2, 4), (0.3, 2, 6)],
}
TOKENS_PER_SEQUENCE = 256  # --batch-tokens -> sequences per step


def load_tokenizer(path: str | Path | None = None):
    """The tiny model's tokenizer (digits are single tokens), or the one in ``path``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path or ensure_tiny_model())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def make_model(tok, hidden: int, layers: int, heads: int, seed: int, max_pos: int = 8192):
    """A fresh Qwen2 model: head_dim 64 (vLLM CPU), MLP 4x hidden, tied embeddings."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    if hidden % heads or hidden // heads not in (32, 64, 128):
        raise ValueError(f"--hidden {hidden} / --heads {heads}: head_dim must be 32, 64 or 128")
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    cfg = {
        **TINY_CONFIG,
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": max_pos,
        "rope_theta": 10000.0,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "bos_token_id": eos,
    }
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(cfg), dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
    return model


def size_range(curriculum: str) -> tuple[int, int]:
    """(min_size, max_size) spanned by a curriculum's stages."""
    stages = CURRICULA[curriculum]
    return min(s[1] for s in stages), max(s[2] for s in stages)


def finetune_config(args) -> FinetuneConfig:
    """The FinetuneConfig these flags ask for (a full fine-tune of a fresh model)."""
    lo, hi = size_range(args.curriculum)
    batch = args.batch_size or max(1, args.batch_tokens // TOKENS_PER_SEQUENCE)
    n_tasks = args.n_tasks or min(20_000, math.ceil(args.steps * batch / args.samples_per_task))
    flat = {
        "model": "tiny",  # the tokenizer; the weights are make_model's
        "format": args.format,
        "max_seq_len": args.max_len,
        "data": [f"generated:{n_tasks}"],
        "generated_min_size": lo,
        "generated_max_size": hi,
        "samples_per_task": args.samples_per_task,
        "transforms": args.transforms,
        "label_mode": "outputs",
        "full": True,
        "learning_rate": args.lr,
        "warmup_steps": round(args.warmup * args.steps),
        "weight_decay": 0.1,
        "batch_size": batch,
        "max_steps": args.steps,
        "budget_minutes": args.minutes,
        "checkpoint_minutes": args.ckpt_minutes,
        "resume": args.resume,
        "seed": args.seed,
        "output": args.out,
    }
    return C.validate(C.from_flat(FinetuneConfig, flat))


def train(args, log=print) -> dict:
    """Train from scratch through ``finetune.run``; returns a summary dict."""
    from arc_ttft.training import finetune

    torch.set_num_threads(args.threads)
    cfg = finetune_config(args)
    tok = load_tokenizer()
    model = make_model(tok, args.hidden, args.layers, args.heads, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"params {n_params / 1e6:.2f}M  format {args.format}  data {cfg.data[0]}")
    title = (
        f"arc-nano: a small Qwen2 model pretrained from scratch on generated ARC tasks "
        f"(hidden {args.hidden}, layers {args.layers}, heads {args.heads}, "
        f"{n_params:,} parameters)"
    )
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    result = finetune.run(
        cfg, model=model, tokenizer=tok, command=command, progress=False, card_title=title
    )
    plot_curve(Path(args.out) / "losses.csv", Path(args.out) / "loss.png")
    summary = {
        "steps": result.steps,
        "seconds": result.seconds,
        "final_loss": result.final_loss,
        "stop_reason": result.stop_reason,
        "params": n_params,
        "model": str(result.model_dir),
    }
    log(f"done: {summary}")
    return summary


def plot_curve(csv_path: Path, png: Path) -> None:
    """Loss per step (raw and smoothed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    x = [int(r["step"]) for r in rows]
    y = [float(r["loss"]) for r in rows]
    sm, e = [], y[0]
    for v in y:
        e = 0.97 * e + 0.03 * v
        sm.append(e)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, y, alpha=0.3, lw=0.7, label="loss")
    ax.plot(x, sm, lw=1.5, label="EMA")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("output-token cross-entropy")
    ax.set_title("arc-nano pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def evaluate(args) -> dict:
    """``arc-ttft run`` of the model in ``--eval-only`` on seeded held-out generated tasks
    (``learning.run_arm``), with ``--ttt-steps`` of TTT per task (0 = none)."""
    from arc_ttft.research import learning

    held = learning.HeldOutSet(
        args.eval_tasks, args.eval_seed, args.eval_min_size, args.eval_max_size
    )
    overrides = {"ttt_steps": args.ttt_steps, "learning_rate": args.ttt_lr}
    for item in args.eval_set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--eval-set {item!r}: expected KEY=VALUE, e.g. views=4")
        overrides[key] = value
    work = Path(args.eval_out).parent if args.eval_out else Path(args.eval_only).parent
    result = learning.run_arm(
        "ttt" if args.ttt_steps else "base",
        overrides,
        held,
        work / "eval",
        base={"model": args.eval_only, "format": args.format},
    )
    return {"correct": result.solved, "total": result.total, **asdict(result)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--steps", type=int, default=20000, help="optimizer steps (the schedule's length)"
    )
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget; stops cleanly")
    p.add_argument(
        "--batch-tokens", type=int, default=2048, help="read as //256 sequences per step"
    )
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (overrides)")
    p.add_argument("--max-len", type=int, default=1536, help="skip longer training samples")
    p.add_argument(
        "--n-tasks",
        type=int,
        default=None,
        help="generated tasks (default: enough for --steps, at most 20000)",
    )
    p.add_argument("--samples-per-task", type=int, default=4, help="leave-one-out samples per task")
    p.add_argument("--transforms", default="dihedral", choices=["dihedral", "central", "none"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--warmup", type=float, default=0.03, help="warm-up fraction of --steps")
    p.add_argument("--curriculum", default="default", choices=sorted(CURRICULA))
    p.add_argument("--format", default="shaped", choices=sorted(encoding.FORMATS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/arc-nano")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="ignored")
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--log-every", type=int, default=20, help="ignored (losses.csv has every step)")
    p.add_argument("--eval-only", default=None, help="evaluate this model folder, no training")
    p.add_argument("--eval-tasks", type=int, default=100)
    p.add_argument("--eval-seed", type=int, default=999)
    p.add_argument("--eval-max-size", type=int, default=10)
    p.add_argument("--eval-min-size", type=int, default=3)
    p.add_argument("--ttt-steps", type=int, default=0, help="eval: LoRA TTT steps per task")
    p.add_argument("--ttt-lr", type=float, default=1e-3, help="eval: TTT learning rate")
    p.add_argument("--eval-out", default=None, help="eval: write the result JSON here")
    p.add_argument(
        "--eval-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="eval: any `arc-ttft run` setting, e.g. views=4 (repeatable)",
    )
    return p.parse_args(argv)  # fmt: skip


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.eval_only:
        torch.set_num_threads(args.threads)
        res = evaluate(args)
        print(json.dumps(res))
        if args.eval_out:
            Path(args.eval_out).write_text(json.dumps(res, indent=2))
        return
    train(args, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
