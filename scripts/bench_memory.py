"""Peak memory of TTT, generation and re-scoring on the Qwen2-0.5B architecture (CPU).

Random weights with the real shape and vocabulary (151,936). Every measurement runs in a
fresh subprocess: after the model is built the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs``), the operation runs once, and the peak (VmHWM) is read back.
``--before-src`` runs the same measurements against another source tree (e.g. a git
worktree of the previous commit) for a before/after table; a "before" re-scoring run
whose estimated peak exceeds ``--max-gib`` is skipped, not run.

    git worktree add --detach /tmp/old befbbbe   # the code before the change, read-only
    .venv/bin/python scripts/bench_memory.py --before-src /tmp/old/src --out table.md

One measurement at a time; about 30 minutes on 2 busy cores, peak 10 GiB (the "before"
re-scoring of 2 items at 2048 tokens). benchmarks/memory.md has the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODEL = "Qwen2-0.5B"
ANSWER = 128  # answer tokens: a grid of about 11 x 11 cells
GiB = 2**30


def _status(field: str) -> int:
    """A /proc/self/status size (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class _Tok:
    """What HFBackend needs of a tokenizer, for random ids no real vocabulary decodes."""

    pad_token_id = eos_token_id = 151643

    def decode(self, ids, skip_special_tokens=False):
        return ""


def measure(kind: str, length: int, items: int, checkpointing: bool) -> dict:
    """Build the model, reset the peak counter, run one ``kind`` operation, return figures."""
    import torch

    from arc_ttft import models, ttt, ttt_samples
    from arc_ttft.config import ModelConfig, TTTConfig
    from arc_ttft.infer.base import Request
    from arc_ttft.infer.hf import HFBackend

    torch.manual_seed(0)
    model = models.build_random_model(ModelConfig(model=MODEL, random_weights=True), torch.float32)
    vocab = model.config.vocab_size
    ids = [torch.randint(0, 151643, (n,)).tolist() for n in (length, ANSWER)]
    if kind == "ttt":
        cfg = TTTConfig(lora_rank=16, warmup_steps=0, gradient_checkpointing=checkpointing)
        model.config.use_cache = False
        model = ttt.prepare_peft_model(model, cfg)
        samples = [ttt_samples.Sample(ids[0] + ids[1], [ttt_samples.IGNORE] * length + ids[1])]
        run = lambda: ttt.train_steps(model, samples, cfg, 1)  # noqa: E731
    else:
        model.eval()
        be = HFBackend(model, _Tok(), batch_size=items)
        if kind == "generate":
            reqs = [Request(ids[0], None, items, 1.0, 16, [])]  # n samples of one prompt
            run = lambda: be.generate(reqs)  # noqa: E731
        else:
            scored = [(ids[0], ids[1], None)] * items
            run = lambda: be.score_many(scored)  # noqa: E731
    gc.collect()
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    t0 = time.monotonic()
    run()
    seconds = time.monotonic() - t0
    peak = _status("VmHWM")
    return {"base": base, "peak": peak, "seconds": round(seconds, 1), "vocab": vocab}


def old_rescore_estimate(length: int, items: int, vocab: int = 151936) -> float:
    """Bytes the previous re-scoring needed beyond the model: fp32 logits of every
    position for the whole batch, about three copies at once (measured: 7.6 GiB over the
    model for 2 items at 2048 + 128 tokens, where one copy is 2.5 GiB)."""
    return 3 * items * (length + ANSWER) * vocab * 4


def run_one(src: str | None, kind: str, length: int, items: int, ckpt: bool) -> dict:
    """``measure`` in a fresh interpreter (``src`` first on the path, if given)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if src:
        env["PYTHONPATH"] = src
    cmd = [sys.executable, __file__, "--one", kind, str(length), str(items)]
    cmd += ["--checkpointing"] if ckpt else []
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        return {"error": (out.stderr or out.stdout)[-400:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gib(x: float) -> str:
    return f"{x / GiB:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=3, metavar=("KIND", "LENGTH", "ITEMS"), help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--before-src", help="source tree to measure as 'before' (its src/ folder)")
    ap.add_argument("--lengths", default="1024,2048", help="prompt tokens, comma separated")
    ap.add_argument("--max-gib", type=float, default=12.0, help="skip a 'before' run above this")
    ap.add_argument(
        "--plan",
        default="ttt:1,generate:4,score:2,score:16",
        help="kind:items, comma separated (generate: n samples; score: items per batch)",
    )
    ap.add_argument("--ttt-checkpointing-from", type=int, default=2048,
                    help="TTT at this length and above runs with gradient checkpointing")  # fmt: skip
    ap.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args(argv)

    if args.one:
        kind, length, items = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(measure(kind, length, items, args.checkpointing)))
        return 0

    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        for spec in args.plan.split(","):
            kind, items = spec.split(":")[0], int(spec.split(":")[1])
            ckpt = kind == "ttt" and length >= args.ttt_checkpointing_from
            res = {}
            for label, src in (("after", None), ("before", args.before_src)):
                if label == "before" and not src:
                    continue
                est = old_rescore_estimate(length, items) + 2.5 * GiB
                if label == "before" and kind == "score" and est > args.max_gib * GiB:
                    res[label] = {"skipped": f"estimated {_gib(est)} GiB > {args.max_gib:g}"}
                else:
                    res[label] = run_one(src, kind, length, items, ckpt)
                print(length, kind, items, label, res[label], flush=True)
            rows.append((length, kind, items, ckpt, res))

    lines = [
        "| prompt tokens | operation | model RSS GiB | before: peak GiB | after: peak GiB "
        "| after: peak - model GiB | after s |",
        "|---|---|---|---|---|---|---|",
    ]
    for length, kind, items, ckpt, res in rows:
        what = {
            "ttt": f"TTT, 1 LoRA step (r16, all linears){', grad. checkpointing' if ckpt else ''}",
            "generate": f"generate 16 tokens x {items} samples",
            "score": f"score_many, {items} items x {ANSWER} answer tokens",
        }[kind]
        a, b = res.get("after", {}), res.get("before", {})
        cell = lambda r: r.get("skipped") or ("error" if "error" in r else _gib(r["peak"]))  # noqa: E731
        lines.append(
            f"| {length} | {what} | {_gib(a['base']) if 'base' in a else '-'} "
            f"| {cell(b) if b else '-'} | {cell(a)} "
            f"| {_gib(a['peak'] - a['base']) if 'base' in a else '-'} | {a.get('seconds', '-')} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
