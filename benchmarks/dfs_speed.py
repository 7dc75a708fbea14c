"""DFS against sampling the same number of tokens, and scoring with a shared prompt.

Every case runs in a fresh process (its own peak memory) on the same prompt:

- ``sample``: ``generate`` of K samples of L tokens (temperature 1, no stop token), K x L
  generated tokens.
- ``dfs``: a depth-first walk per prompt, at most K x L nodes; with the default min_prob
  of 1e-300 every grid token qualifies, so on random weights it expands exactly K x L
  nodes, each one token's forward. ``--walks W`` runs W prompts at once (vLLM advances
  all walks in one engine call per round).
- ``score-alone`` / ``score-shared``: K answers of L tokens scored after the prompt, each
  with its own forward (``share_prefix=False``) or on one shared prompt forward.

Random weights (speed does not depend on the values). The table gives tokens (or nodes,
or scored answers) per second, the ratio to its baseline in the same run, and the peak
RSS above the loaded model. Transformers backend unless ``--backend vllm`` (run that in
the CPU vLLM environment, scripts/setup_vllm_cpu.sh):

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/dfs_speed.py --model tiny
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/dfs_speed.py --model Qwen2-0.5B \\
        --prompt-len 512 --answer-len 16 --k 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CASES = ("sample", "dfs", "score-alone", "score-shared")
BASELINE = {"dfs": "sample", "score-shared": "score-alone"}


def _backend(model: str, backend: str):
    import torch

    from arc_ttft import infer, models
    from arc_ttft.config import ModelConfig, RunConfig, from_flat
    from arc_ttft.infer.hf import HFBackend

    cfg = from_flat(RunConfig, {"model": model, "random_weights": model not in ("tiny", "arc-nano"),
                                "dtype": "float32", "max_seq_len": 4096})  # fmt: skip
    if backend == "vllm":
        return infer.make_backend(cfg, kind="vllm")
    loaded, tok = models.load_model(ModelConfig(**vars(cfg.model)), device=models.default_device())
    loaded.eval()
    torch.manual_seed(0)
    return HFBackend(loaded, tok, batch_size=16)


def run_case(case: str, args: argparse.Namespace) -> dict:
    """One measurement in this process; returns its figures."""
    import torch

    from arc_ttft.infer import Request, stop_ids
    from arc_ttft.infer.dfs import grid_token_ids
    from arc_ttft.research.isolation import peak_memory_bytes, proc_status_kib

    be = _backend(args.model, args.backend)
    tok = be.tokenizer
    grid = grid_token_ids(tok, "0123456789\n")
    g = torch.Generator().manual_seed(1)
    pick = lambda n: [grid[i] for i in torch.randint(len(grid), (n,), generator=g)]  # noqa: E731
    prompts = [pick(args.prompt_len) for _ in range(args.walks)]
    prompt = prompts[0]
    k, n_new = args.k, args.answer_len
    if case == "sample":
        reqs = [Request(p, None, k, 1.0, n_new, []) for p in prompts]
        fn = lambda: be.generate(reqs)  # noqa: E731
        units = k * n_new * len(prompts)
    elif case == "dfs":
        reqs = [
            Request(p, None, 10**6, 0.0, n_new + 1, stop_ids(tok), grid_alphabet="0123456789\n",
                    min_prob=args.min_prob, max_nodes=k * n_new)
            for p in prompts
        ]  # fmt: skip
        fn = lambda: be.generate(reqs)  # noqa: E731
        units = None  # the nodes the walks expanded
    else:
        if args.backend == "hf":
            be.share_prefix = case == "score-shared"
        items = [(prompt, pick(n_new), None) for _ in range(k)]
        fn = lambda: be.score_many(items)  # noqa: E731
        units = k
    be.generate([Request(prompt[:32], None, 1, 0.0, 2, [])])  # warm-up (engine, kernels)
    cuda = torch.cuda.is_available()
    if cuda:  # GPU memory above the loaded model; vLLM preallocates, so its figure is ~0
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        rss = torch.cuda.memory_allocated()
    else:
        rss = (proc_status_kib("VmRSS") or 0) * 1024
        Path("/proc/self/clear_refs").write_text("5")  # peak := now
    t0 = time.monotonic()
    fn()
    if cuda:
        torch.cuda.synchronize()
    secs = time.monotonic() - t0
    peak = peak_memory_bytes("cuda" if cuda else "cpu") - rss
    nodes = getattr(be, "stats", {}).get("dfs_nodes")
    units = units if units is not None else nodes
    be.close()
    return {"case": case, "seconds": round(secs, 3), "units": units, "dfs_nodes": nodes,
            "per_second": round(units / secs, 2), "peak_over_model_mib": round(peak / 2**20, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny, or a registry name (random weights)")
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--answer-len", type=int, default=16)
    ap.add_argument("--k", type=int, default=8, help="samples / answers; DFS nodes = k x L")
    ap.add_argument("--walks", type=int, default=1, help="prompts at once (DFS walks, sampled)")
    ap.add_argument(
        "--min-prob", type=float, default=1e-300,
        help="DFS threshold: tiny forces k x L nodes on random weights (hf only: vLLM's top-k "
        "needs >= 1/63, where a random model has no branch; use a trained model there)",
    )  # fmt: skip
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--case", help=argparse.SUPPRESS)  # child process: one case, JSON out
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return 0
    rows = {}
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--case", case, "--model", args.model, "--backend",
               args.backend, "--prompt-len", str(args.prompt_len), "--answer-len",
               str(args.answer_len), "--k", str(args.k), "--walks", str(args.walks),
               "--min-prob", str(args.min_prob)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        rows[case] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"model {args.model}, backend {args.backend}, prompt {args.prompt_len} tokens, "
          f"L = {args.answer_len}, K = {args.k}, {args.walks} prompt(s), "
          f"DFS min_prob {args.min_prob}\n")  # fmt: skip
    print("| case | work | seconds | per second | vs baseline | peak over model MiB |")
    print("|---|---|---|---|---|---|")
    for case, r in rows.items():
        base = rows.get(BASELINE.get(case, ""))
        ratio = f"{r['per_second'] / base['per_second']:.2f}x" if base else "baseline"
        work = f"{r['units']} {'answers' if case.startswith('score') else 'tokens'}"
        if case == "dfs":
            work = f"{r['dfs_nodes']} nodes"
        print(f"| {case} | {work} | {r['seconds']} | {r['per_second']} | {ratio} "
              f"| {r['peak_over_model_mib']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
