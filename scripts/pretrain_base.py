"""Pretrain a small Qwen2 base model from scratch on generated ARC tasks (CPU friendly).

The model sees exactly the pipeline's prompt layout (``encoding.build_prompt`` with the
tiny tokenizer's chat template) and tokenisation (``encoding.tokenize_prompt``), so TTT
and inference can use it unchanged. Loss is on every output grid after the first one
(the rule is known from then on), which gives 3-4x more signal per token than the
answer alone. Batches hold tasks of similar length, right-padded.

Schedules (learning rate: warm-up + cosine; curriculum: grid sizes) run on progress =
max(step / steps, elapsed / minutes), so a wall-clock cap still ends with a full decay.
A checkpoint (a normal HF folder) is written every ``--ckpt-minutes``.

    python scripts/pretrain_base.py --out runs/arc-nano --minutes 65 --steps 100000
    python scripts/pretrain_base.py --eval-only runs/arc-nano --eval-tasks 100
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shlex
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arc_ttft import encoding, synthetic
from arc_ttft.models import TINY_CONFIG, build_config, ensure_tiny_model

IGNORE = -100

# (progress at which the stage starts, min_size, max_size). Small grids first: the
# model learns the format and cell copying where sequences are short.
CURRICULA: dict[str, list[tuple[float, int, int]]] = {
    "none": [(0.0, 3, 10)],
    "default": [(0.0, 2, 4), (0.2, 2, 6), (0.45, 2, 8), (0.7, 3, 10)],
    "small": [(0.0, 2, 4), (0.3, 2, 6)],
}


@dataclass
class Example:
    ids: list[int]
    labels: list[int]


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
    model.config.use_cache = False  # packing needs it off during training
    return model


def stage_at(curriculum: str, progress: float) -> tuple[int, int]:
    """(min_size, max_size) of the curriculum stage at ``progress`` in [0, 1]."""
    stages = CURRICULA[curriculum]
    current = stages[0]
    for s in stages:
        if progress >= s[0]:
            current = s
    return current[1], current[2]


def encode_task(task: dict, fmt: str, tok, label_outputs: bool = True) -> Example:
    """Prompt (train pairs + test input) and answer tokens, as the pipeline builds them.

    With ``label_outputs`` the demonstration outputs after the first carry loss too.
    """
    examples = [(np.array(p["input"]), np.array(p["output"])) for p in task["train"]]
    test = task["test"][0]
    prompt = encoding.build_prompt(
        examples, np.array(test["input"]), fmt, tok, answer=np.array(test["output"])
    )
    ids, labels = encoding.tokenize_prompt(prompt, tok)
    if label_outputs and len(examples) > 1:
        render = encoding.get_format(fmt).render
        spans, pos = [], 0
        for _, out in examples:
            text = render(out)
            i = prompt.text.find(f"{encoding.OUTPUT_LABEL}{text}\n", pos)
            if i < 0:
                break
            a = i + len(encoding.OUTPUT_LABEL)
            spans.append((a, a + len(text) + 1))  # include the row-ending newline
            pos = a + len(text)
        enc = tok(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        for t, (a, b) in enumerate(offsets):
            if b > a and any(a >= s and b <= e for s, e in spans[1:]):
                labels[t] = ids[t]
    return Example(ids, labels)


def task_stream(seed: int, fmt: str, tok, sizes_fn, families=None, max_len: int = 2048):
    """Endless encoded tasks; ``sizes_fn()`` gives the current (min_size, max_size).

    Each task draws its own max side in [min(4, max_size), max_size], so small grids
    keep appearing after the curriculum grows (no forgetting of the easy cases).
    """
    names = list(families or synthetic.DEFAULT_FAMILIES)
    rng = np.random.default_rng(seed)
    while True:
        lo, hi = sizes_fn()
        hi = int(rng.integers(min(4, hi), hi + 1))
        fam = names[int(rng.integers(len(names)))]
        task = synthetic.make_task(fam, rng, (3, 4), lo, max(hi, lo + 1, 2))
        ex = encode_task(task, fmt, tok)
        if len(ex.ids) <= max_len:
            yield ex


def batch_stream(stream, batch_tokens: int, pool: int = 64):
    """Endless lists of examples of about ``batch_tokens`` padded tokens each.

    Draws ``pool`` examples, sorts them by length and cuts batches of neighbours, so
    right-padding wastes little; batch order is shuffled within the pool.
    """
    rng = random.Random(0)
    while True:
        items = sorted((next(stream) for _ in range(pool)), key=lambda e: len(e.ids))
        batches, cur = [], []
        for e in items:
            if cur and len(e.ids) * (len(cur) + 1) > batch_tokens:
                batches.append(cur)
                cur = []
            cur.append(e)
        if cur:
            batches.append(cur)
        rng.shuffle(batches)
        yield from batches


def make_batch(examples: list[Example]) -> dict[str, torch.Tensor]:
    """One row per sequence, right-padded; padding carries no loss.

    Right padding needs no attention mask: under the causal mask real tokens never see
    the pads after them. (Packing with position restarts was ~2x slower here: the
    block-diagonal mask costs more than the padding it saves.)
    """
    width = max(len(e.ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.ids)
        ids[r, :n] = torch.tensor(e.ids)
        labels[r, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "labels": labels}


def batch_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over labelled tokens."""
    out = model(input_ids=batch["input_ids"], use_cache=False).logits
    logits = out[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    loss = torch.nn.functional.cross_entropy(logits[keep].float(), targets[keep])
    return loss, int(keep.sum())


def lr_at(progress: float, peak: float, warmup: float = 0.03, floor: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine to floor*peak."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.01)
    t = min(1.0, (progress - warmup) / max(1e-9, 1 - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def save_model(model, tok, folder: Path, card: str | None = None) -> None:
    """A normal HF folder (config, safetensors, tokenizer), written via a temp folder."""
    import shutil

    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True)
    model.config.use_cache = False
    tok.save_pretrained(tmp)
    if card:
        (tmp / "README.md").write_text(card)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def train(args, log=print) -> dict:
    """Train from scratch with ``args`` (see ``parse_args``); returns a summary dict."""
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer()
    model = make_model(tok, args.hidden, args.layers, args.heads, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"params {n_params / 1e6:.2f}M  format {args.format}  curriculum {args.curriculum}")
    opt = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, foreach=True
    )
    budget = args.minutes * 60 if args.minutes else None
    t0 = time.monotonic()
    progress = 0.0

    def sizes():
        return stage_at(args.curriculum, progress)

    stream = task_stream(args.seed, args.format, tok, sizes, max_len=args.max_len)
    batches = batch_stream(stream, args.batch_tokens)
    curve = out / "loss.csv"
    with curve.open("w", newline="") as f:
        csv.writer(f).writerow(["step", "seconds", "tokens", "loss", "lr", "min_size", "max_size"])
    tokens = 0
    last_ckpt = t0
    ema = None
    step = 0
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    model.train()
    while step < args.steps:
        elapsed = time.monotonic() - t0
        progress = max(step / args.steps, elapsed / budget if budget else 0.0)
        if progress >= 1.0:
            break
        lr = lr_at(progress, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = make_batch(next(batches))
        with autocast:
            loss, _ = batch_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += int(batch["input_ids"].numel())
        value = loss.item()
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        lo, hi = sizes()
        with curve.open("a", newline="") as f:
            csv.writer(f).writerow(
                [
                    step,
                    round(time.monotonic() - t0, 1),
                    tokens,
                    round(value, 5),
                    f"{lr:.3g}",
                    lo,
                    hi,
                ]
            )
        if step % args.log_every == 0 or step == 1:
            el = time.monotonic() - t0
            log(
                f"step {step} loss {value:.4f} ema {ema:.4f} lr {lr:.2e} sizes {lo}..{hi} "
                f"tok/s {tokens / el:.0f} elapsed {el / 60:.1f}m"
            )
        if time.monotonic() - last_ckpt > args.ckpt_minutes * 60:
            save_model(model, tok, out / "checkpoint", model_card(args, step, ema))
            last_ckpt = time.monotonic()
            log(f"checkpoint at step {step}")
    seconds = time.monotonic() - t0
    save_model(model, tok, out / "model", model_card(args, step, ema))
    plot_curve(curve, out / "loss.png")
    summary = {
        "steps": step,
        "seconds": round(seconds, 1),
        "tokens": tokens,
        "final_loss_ema": ema,
        "params": n_params,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"done: {summary}")
    return summary


def model_card(args, step: int, ema: float | None) -> str:
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    return (
        "# arc-nano: a small Qwen2 model pretrained from scratch on generated ARC tasks\n\n"
        f"Trained by `scripts/pretrain_base.py` ({step} steps, loss EMA {ema:.4f}).\n\n"
        f"Command:\n\n    {cmd}\n\n"
        f"Seed {args.seed}; grid format `{args.format}`; curriculum `{args.curriculum}` "
        f"{CURRICULA[args.curriculum]}; hidden {args.hidden}, layers {args.layers}, heads "
        f"{args.heads}; peak lr {args.lr}; {args.batch_tokens} tokens per step.\n\n"
        "Data: an endless seeded stream of `arc_ttft.synthetic.make_task` tasks (3-4 train "
        f"pairs + 1 test pair) over the families {', '.join(synthetic.DEFAULT_FAMILIES)}; "
        "loss on the test answer and on every demonstration output after the first.\n\n"
        "Prompt layout and tokenizer are the pipeline's (`arc_ttft.encoding.build_prompt`, "
        "the tiny tokenizer with its chat template). Use it with the same `--format`.\n"
    )


def plot_curve(csv_path: Path, png: Path) -> None:
    """Loss per step (raw and smoothed) against wall-clock minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    x = [float(r["seconds"]) / 60 for r in rows]
    y = [float(r["loss"]) for r in rows]
    sm, e = [], y[0]
    for v in y:
        e = 0.97 * e + 0.03 * v
        sm.append(e)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, y, alpha=0.3, lw=0.7, label="loss")
    ax.plot(x, sm, lw=1.5, label="EMA")
    ax.set_yscale("log")
    ax.set_xlabel("minutes")
    ax.set_ylabel("output-token cross-entropy")
    ax.set_title("arc-nano pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# Evaluation: greedy decode of the test output, the pipeline's prompt
# ---------------------------------------------------------------------------------------


def _greedy(model, tok, ids: list[int], max_new: int) -> str:
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    with torch.no_grad():
        gen = model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
            use_cache=True,
        )
    return tok.decode(gen[0, len(ids) :], skip_special_tokens=False)


def evaluate(
    model,
    tok,
    challenges: dict,
    solutions: dict,
    fmt: str,
    max_new: int = 600,
    ttt_steps: int = 0,
    ttt_lr: float = 1e-3,
    ttt_rank: int = 16,
    log=None,
) -> dict:
    """Exact-match accuracy of greedy answers, overall and per family.

    With ``ttt_steps`` > 0, each task first gets a fresh LoRA adapter trained with the
    pipeline's own TTT code (``ttt.train_task``: leave-one-out samples under random
    views, answer-only loss), then is decoded greedily with it.
    """
    from arc_ttft import ttt
    from arc_ttft.config import TTTConfig
    from arc_ttft.tasks import Example as TaskExample
    from arc_ttft.tasks import Task

    cfg = TTTConfig(ttt_steps=ttt_steps, learning_rate=ttt_lr, lora_rank=ttt_rank,
                    lora_alpha=2.0 * ttt_rank, warmup_steps=2)  # fmt: skip
    if ttt_steps > 0:
        model = ttt.prepare_peft_model(model, cfg)
    model.eval()
    per: dict[str, list[int]] = defaultdict(list)
    reasons: Counter = Counter()
    by_task: dict[str, int] = {}
    for k, (tid, task) in enumerate(challenges.items()):
        examples = [(np.array(p["input"]), np.array(p["output"])) for p in task["train"]]
        query = np.array(task["test"][0]["input"])
        if ttt_steps > 0:
            t = Task(tid, [TaskExample(i, o) for i, o in examples], [TaskExample(query)])
            ttt.train_task(model, tok, t, cfg, fmt, None, steps=ttt_steps)
            model.eval()
        prompt = encoding.build_prompt(examples, query, fmt, tok)
        ids, _ = encoding.tokenize_prompt(prompt, tok)
        text = _greedy(model, tok, ids, max_new)
        stats = encoding.ParseStats()
        grid = encoding.parse_answer(text, fmt, stats, end=tok.eos_token)
        reasons.update(stats.reasons)
        want = np.array(solutions[tid][0])
        ok = grid is not None and grid.shape == want.shape and bool((grid == want).all())
        per[synthetic.family_of(tid)].append(int(ok))
        by_task[tid] = int(ok)
        if log and (k + 1) % 10 == 0:
            log(f"eval {k + 1}/{len(challenges)} correct {sum(map(sum, per.values()))}")
    fams = {f: (sum(v), len(v)) for f, v in sorted(per.items())}
    n_ok = sum(a for a, _ in fams.values())
    n = sum(b for _, b in fams.values())
    return {
        "correct": n_ok,
        "total": n,
        "per_family": fams,
        "parse_failures": dict(reasons),
        "tasks": by_task,
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100000, help="max optimizer steps")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap (schedules fit it)")
    p.add_argument("--batch-tokens", type=int, default=2048, help="padded tokens per step")
    p.add_argument("--max-len", type=int, default=1536, help="skip longer training tasks")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--warmup", type=float, default=0.03, help="warm-up fraction of training")
    p.add_argument("--curriculum", default="default", choices=sorted(CURRICULA))
    p.add_argument("--format", default="shaped", choices=sorted(encoding.FORMATS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/arc-nano")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-only", default=None, help="evaluate this model folder, no training")
    p.add_argument("--eval-tasks", type=int, default=100)
    p.add_argument("--eval-seed", type=int, default=999)
    p.add_argument("--eval-max-size", type=int, default=10)
    p.add_argument("--eval-min-size", type=int, default=3)
    p.add_argument("--ttt-steps", type=int, default=0, help="eval: LoRA TTT steps per task")
    p.add_argument("--ttt-lr", type=float, default=1e-3, help="eval: TTT learning rate")
    p.add_argument("--eval-out", default=None, help="eval: write the result JSON here")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.eval_only:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(args.threads)
        tok = load_tokenizer(args.eval_only)
        model = AutoModelForCausalLM.from_pretrained(args.eval_only, dtype=torch.float32)
        ch, sol = synthetic.generate(
            args.eval_tasks,
            seed=args.eval_seed,
            min_size=args.eval_min_size,
            max_size=args.eval_max_size,
        )
        t = time.monotonic()
        res = evaluate(model, tok, ch, sol, args.format, ttt_steps=args.ttt_steps,
                       ttt_lr=args.ttt_lr, log=lambda m: print(m, flush=True))  # fmt: skip
        res["seconds"] = round(time.monotonic() - t, 1)
        res["args"] = vars(args)
        print(json.dumps(res))
        if args.eval_out:
            Path(args.eval_out).write_text(json.dumps(res, indent=2))
        return
    train(args, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
