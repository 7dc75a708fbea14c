"""Model-candidate search and LoRA-rank sweep: the tables and plots researchers compare.

``run_candidates`` answers "which model, at which sequence length, can be fine-tuned on
every test task inside the budget?". For each (model, seq_len) it runs the real TTT step
(``ttt.answer_loss`` + AdamW on a fresh LoRA adapter, via ``ttt.train_steps``) on a
synthetic sequence of exactly ``seq_len`` random token ids whose last ``answer_fraction``
carries the loss (an ARC answer grid is typically 10-30% of a prompt). Token values do not
change the cost, so random ids time the step as well as real prompts do, and any model in
the registry can be timed with ``random_weights`` without downloading anything.

Each configuration runs in a fresh subprocess (``python -m arc_ttft.bench --one JSON``):
peak memory is then that process's own (CUDA max_memory_allocated, or VmHWM on CPU, which
cannot be reset inside a process), and an out-of-memory crash or a hard kill becomes a row
with its reason instead of ending the search.

``run_rank_sweep`` trains one adapter per task and LoRA rank on all train pairs but one,
and reports the mean train loss (last steps) and the validation loss on the held-out pair.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_ttft.config import ConfigError, _f

RESULT_PREFIX = "BENCH_RESULT "
GIB = 1024**3

# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------


def _ints(name: str, values: list[Any]) -> list[int]:
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ConfigError([f"{name}: {values!r} must be comma separated integers ({e})"]) from None
    return out


@dataclass
class CandidatesConfig:
    """`arc-ttft candidates`: time the TTT step of candidate models at several lengths."""

    models: list[str] = _f(
        ["tiny"], "Models to time (registry names, hub ids or folders; comma separated)."
    )
    seq_lens: list[int] = _f([1024, 2048, 4096], "Sequence lengths in tokens (comma separated).")
    steps: int = _f(10, "Timed optimizer steps per configuration (after one untimed warm-up).")
    int4: bool = _f(False, "Load the base models in 4-bit nf4 (QLoRA).")
    random_weights: bool = _f(
        False, "Build each model from its registry config with random weights (no download)."
    )
    dtype: str = _f(
        "auto",
        "Compute dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16, float16.",
        choices=["auto", "float32", "bfloat16", "float16"],
    )
    device: str = _f("auto", "auto (cuda when available), cpu, cuda, cuda:1, ...")
    lora_rank: int = _f(16, "LoRA rank of the timed adapter.")
    answer_fraction: float = _f(
        0.25, "Share of each synthetic sequence that carries loss (the answer at the end)."
    )
    budget_hours: float = _f(12.0, "Time budget the test set must fit in.")
    tasks_count: int = _f(100, "Test tasks in the projection.")
    ttt_steps_per_task: int = _f(32, "TTT steps per task in the projection.")
    inference_hours: float | None = _f(
        None, "Inference time to add to the projection (default: left out, said in the header)."
    )
    max_params_m: float | None = _f(
        None,
        "Skip models above this many million parameters (rows estimated from the largest "
        "measured model instead).",
    )
    find_max_seq_len: bool = _f(
        False, "Also search each model's longest sequence that fits (doubling, then bisection)."
    )
    search_step: int = _f(256, "Bisection resolution of --find-max-seq-len, in tokens.")
    search_minutes: float = _f(20.0, "Time cap of --find-max-seq-len per model.")
    timeout_minutes: float = _f(30.0, "Give up on one configuration after this long.")
    memory_cap_gb: float | None = _f(
        None,
        "CPU only: address space each configuration may add after its imports (simulates a "
        "smaller machine; exceeding it is reported as out of memory).",
    )
    isolate: bool = _f(True, "Run each configuration in a fresh subprocess (exact peak memory).")
    seed: int = _f(0, "Seed for weights, adapter and token ids.")
    output: str = _f("benchmarks", "Folder for the markdown and CSV files.")
    name: str = _f("candidates", "File stem: writes NAME.md and NAME.csv.")

    def __post_init__(self) -> None:
        self.seq_lens = _ints("seq_lens", self.seq_lens)

    def problems(self) -> list[str]:
        out = []
        if not self.models:
            out.append("models: empty; give at least one, e.g. --models tiny")
        if not self.seq_lens or min(self.seq_lens) < 8:
            out.append(f"seq_lens: {self.seq_lens} needs values >= 8")
        if self.steps < 1:
            out.append(f"steps: {self.steps} must be >= 1")
        if not 0 < self.answer_fraction <= 0.9:
            out.append(f"answer_fraction: {self.answer_fraction} must be in (0, 0.9]")
        if self.search_step < 8:
            out.append(f"search_step: {self.search_step} must be >= 8")
        return out


@dataclass
class RankSweepConfig:
    """`arc-ttft lora-rank-sweep`: train and validation loss per LoRA rank."""

    ranks: list[int] = _f([4, 8, 16, 32, 64], "LoRA ranks to compare (comma separated).")
    challenges: str = _f("arc1-eval", "Tasks: challenges JSON, folder or bundled set name.")
    tasks: list[str] = _f([], "Only these task ids (comma separated).")
    max_tasks: int | None = _f(8, "Only the first N tasks with at least 2 train pairs.")
    ttt_steps: int = _f(16, "Optimizer steps per task and rank.")
    model: str = _f("tiny", "Model (registry name, hub id or folder).")
    random_weights: bool = _f(False, "Random weights (timing only; losses then mean little).")
    format: str = _f("digits", "Grid text format.")
    max_seq_len: int | None = _f(None, "Longest sequence (default: the registry's).")
    learning_rate: float = _f(1e-4, "Peak learning rate.")
    alpha_ratio: float = _f(
        2.0, "LoRA alpha = ratio x rank (keeps the update scale comparable across ranks)."
    )
    lora_targets: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that get LoRA adapters.",
    )
    last_k: int = _f(4, "Train loss = mean of the last K steps.")
    device: str = _f("auto", "auto (cuda when available), cpu, cuda, ...")
    seed: int = _f(0, "Seed for views and adapter initialisation.")
    output: str = _f("benchmarks", "Folder for lora-rank-sweep.csv / .png / .md.")

    def __post_init__(self) -> None:
        self.ranks = _ints("ranks", self.ranks)

    def problems(self) -> list[str]:
        out = []
        if not self.ranks or min(self.ranks) < 1:
            out.append(f"ranks: {self.ranks} needs values >= 1")
        if self.ttt_steps < 1:
            out.append(f"ttt_steps: {self.ttt_steps} must be >= 1")
        if self.last_k < 1:
            out.append(f"last_k: {self.last_k} must be >= 1")
        return out


def command_line(cfg: Any, command: str) -> str:
    """The `arc-ttft` command that reproduces ``cfg`` (only the non-default flags)."""
    default = type(cfg)()
    parts = ["arc-ttft", command]
    for f in dataclasses.fields(cfg):
        v, d = getattr(cfg, f.name), getattr(default, f.name)
        if v == d:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else f"{flag} false")
        elif isinstance(v, list):
            parts += [flag, ",".join(map(str, v))]
        else:
            parts += [flag, f"{v:g}" if isinstance(v, float) else str(v)]
    return " ".join(parts)


# ---------------------------------------------------------------------------------------
# One configuration (runs in the child process)
# ---------------------------------------------------------------------------------------


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _proc_status_kib(key: str) -> int | None:
    """A field of /proc/self/status in KiB (VmHWM: peak RSS, VmRSS, VmSize), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_rss_kib() -> int:
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cannot allocate"))


def synthetic_sample(seq_len: int, vocab_size: int, answer_fraction: float, seed: int):
    """A ttt.Sample of exactly ``seq_len`` random token ids; the last share is the answer."""
    import torch

    from arc_ttft import ttt

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (seq_len,), generator=g).tolist()
    n_answer = max(1, int(round(seq_len * answer_fraction)))
    labels = [ttt.IGNORE] * (seq_len - n_answer) + ids[seq_len - n_answer :]
    return ttt.Sample(ids, labels)


def measure_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one model, time ``steps`` real LoRA TTT steps at ``seq_len``; never raises.

    ``spec`` keys: model, seq_len, steps, int4, random_weights, dtype, device, lora_rank,
    answer_fraction, seed. Returns a dict with status (ok | oom | over_context |
    load_failed | error), reason, seconds, sec_per_step, warmup_s, load_s, peak_mem_gib,
    params_m, max_context, dtype, device, loss.
    """
    import torch

    from arc_ttft import models, ttt
    from arc_ttft.config import ModelConfig, TTTConfig

    out: dict[str, Any] = {"status": "error", "reason": ""}
    device = _device(spec.get("device", "auto"))
    on_cuda = device.startswith("cuda")
    out["device"] = device
    rss0 = _proc_status_kib("VmRSS") or 0
    isolated = bool(spec.get("isolated"))
    if on_cuda and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)
    mcfg = ModelConfig(
        model=spec["model"],
        random_weights=bool(spec.get("random_weights")),
        int4=bool(spec.get("int4")),
        dtype=spec.get("dtype", "auto"),
    )
    model = None
    try:
        t0 = time.monotonic()
        try:
            model, _ = models.load_model(mcfg, device=device, for_training=True)
        except Exception as e:  # a missing model or a broken install is a row, not a crash
            kind = "oom" if _is_oom(e) else "load_failed"
            out.update(status=kind, reason=f"load: {type(e).__name__}: {_first_line(e)}")
            return out
        out["load_s"] = round(time.monotonic() - t0, 2)
        conf = model.config
        out["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        out["max_context"] = models.context_length(conf)  # RoPE scaling included
        out["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
        if "4bit" in str(getattr(conf, "quantization_config", "")) or mcfg.int4:
            out["dtype"] = f"nf4/{str(models.resolve_dtype(mcfg.dtype, device)).split('.')[-1]}"
        seq_len = int(spec["seq_len"])
        if out["max_context"] and seq_len > out["max_context"]:
            out.update(
                status="over_context",
                reason=f"seq_len {seq_len} > max context {out['max_context']}",
            )
            return out
        tcfg = TTTConfig(
            lora_rank=int(spec.get("lora_rank", 16)),
            lora_alpha=2.0 * int(spec.get("lora_rank", 16)),
            learning_rate=1e-4,
            warmup_steps=0,
            lr_schedule="constant",
            seed=int(spec.get("seed", 0)),
        )
        model = ttt.prepare_peft_model(model, tcfg)
        sample = synthetic_sample(
            seq_len, int(conf.vocab_size), float(spec.get("answer_fraction", 0.25)), tcfg.seed
        )
        try:
            # The warm-up step pays one-off costs (kernel selection, allocator growth,
            # optimizer state) that a real run pays once per process, not per step.
            _, _, _, warm = ttt.train_steps(model, [sample], tcfg, 1)
            steps = int(spec["steps"])
            losses, _, _, seconds = ttt.train_steps(model, [sample], tcfg, steps)
            if on_cuda:
                torch.cuda.synchronize()
        except Exception as e:
            if _is_oom(e):
                out.update(
                    status="oom", reason=f"out of memory at seq_len {seq_len}: {_first_line(e)}"
                )
            else:
                out.update(status="error", reason=f"{type(e).__name__}: {_first_line(e)}")
            return out
        out.update(
            status="ok",
            warmup_s=round(warm, 3),
            seconds=round(seconds, 3),
            sec_per_step=round(seconds / steps, 4),
            loss=round(losses[-1], 4) if losses else None,
        )
        return out
    finally:
        if on_cuda and torch.cuda.is_available():
            out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 3)
        elif isolated:
            out["peak_mem_gib"] = round(max(0, _peak_rss_kib() - rss0) * 1024 / GIB, 3)
        # In-process on CPU the peak RSS is the whole session's: no honest figure.
        del model


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def _set_memory_cap(gb: float) -> None:
    """Limit the address space to what the process has now plus ``gb`` (Linux, CPU)."""
    import resource

    now = (_proc_status_kib("VmSize") or 0) * 1024
    cap = now + int(gb * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _child_main(spec_json: str) -> int:
    spec = {**json.loads(spec_json), "isolated": True}
    import torch  # noqa: F401  (imports count as the baseline, before the cap)

    from arc_ttft import models, ttt  # noqa: F401

    if spec.get("memory_cap_gb"):
        _set_memory_cap(float(spec["memory_cap_gb"]))
    result = measure_one(spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def run_probe(spec: dict[str, Any], isolate: bool = True, timeout_s: float | None = None) -> dict:
    """Measure one configuration, in a fresh subprocess when ``isolate``; never raises.

    A child that dies (killed by the kernel's OOM killer, a segfault) or runs past
    ``timeout_s`` comes back as a result with status oom / error / timeout and the reason.
    """
    if not isolate:
        return measure_one(spec)
    cmd = [sys.executable, "-m", "arc_ttft.bench", "--one", json.dumps(spec)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {
            "status": "timeout",
            "reason": f"no result after {timeout_s:.0f} s (--timeout-minutes)",
        }
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-3:]
    if proc.returncode in (-9, 137):
        return {"status": "oom", "reason": "process killed (SIGKILL: likely out of memory)"}
    text = " | ".join(tail)[-400:]
    status = "oom" if "memory" in text.lower() else "error"
    return {"status": status, "reason": f"exit {proc.returncode}: {text}"}


# ---------------------------------------------------------------------------------------
# The candidates table
# ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the candidates table (also one CSV row)."""

    model: str
    params_m: float | None
    max_context: int | None
    seq_len: int
    steps: int
    status: str  # ok | estimated | oom | over_context | load_failed | error | timeout | skipped
    reason: str = ""
    dtype: str = ""
    device: str = ""
    seconds: float | None = None
    sec_per_step: float | None = None
    hours_per_1000: float | None = None
    test_set_hours: float | None = None
    fits: bool | None = None
    peak_mem_gib: float | None = None
    warmup_s: float | None = None
    load_s: float | None = None
    loss: float | None = None


@dataclass
class SearchResult:
    """The longest sequence that fits for one model (``--find-max-seq-len``)."""

    model: str
    max_ok: int | None
    first_fail: int | None
    stopped_by: str  # max_context | failure | resolution | time_cap
    fail_reason: str = ""
    probes: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class CandidatesResult:
    rows: list[Row]
    searches: list[SearchResult]
    markdown: str
    paths: dict[str, str]


def _project(row: Row, cfg: CandidatesConfig) -> None:
    """Fill the projection columns from sec_per_step."""
    sps = row.sec_per_step
    if sps is None:
        return
    row.hours_per_1000 = round(1000 * sps / 3600, 3)
    row.test_set_hours = round(cfg.tasks_count * cfg.ttt_steps_per_task * sps / 3600, 3)
    total = row.test_set_hours + (cfg.inference_hours or 0.0)
    row.fits = total <= cfg.budget_hours


def _spec(cfg: CandidatesConfig, model: str, seq_len: int, steps: int) -> dict[str, Any]:
    return {
        "model": model,
        "seq_len": seq_len,
        "steps": steps,
        "int4": cfg.int4,
        "random_weights": cfg.random_weights,
        "dtype": cfg.dtype,
        "device": cfg.device,
        "lora_rank": cfg.lora_rank,
        "answer_fraction": cfg.answer_fraction,
        "seed": cfg.seed,
        "memory_cap_gb": cfg.memory_cap_gb,
    }


def _registry_facts(model: str) -> tuple[float | None, int | None]:
    from arc_ttft import models

    cand = models.find_candidate(model)
    return (cand.params_m, cand.max_context) if cand else (None, None)


def _estimate(row: Row, measured: list[Row]) -> None:
    """Scale the largest measured model's s/step by params (and length) ratio.

    Linear in parameters and length: the MLP and projections dominate at these lengths,
    so this is a lower bound once attention's quadratic part matters.
    """
    ok = [r for r in measured if r.status == "ok" and r.params_m and row.params_m]
    if not ok:
        return
    same = [r for r in ok if r.seq_len == row.seq_len] or ok
    ref = max(same, key=lambda r: (r.params_m, -abs(r.seq_len - row.seq_len)))
    row.sec_per_step = round(
        ref.sec_per_step * (row.params_m / ref.params_m) * (row.seq_len / ref.seq_len), 4
    )
    row.status = "estimated"
    row.reason += (
        f"; s/step estimated from {ref.model} at {ref.seq_len} x params"
        + (" x length" if ref.seq_len != row.seq_len else "")
        + " ratio (lower bound)"
    )


def run_candidates(cfg: CandidatesConfig, *, progress: bool = True) -> CandidatesResult:
    """Time every (model, seq_len) of ``cfg``; write NAME.md + NAME.csv; return the table.

    Configurations that cannot run (over the model's context, out of memory, load failure,
    timeout, above --max-params-m) are rows with their reason, never a crash.
    """
    from arc_ttft.config import validate

    validate(cfg)
    timeout = cfg.timeout_minutes * 60
    rows: list[Row] = []
    skipped: list[Row] = []
    searches: list[SearchResult] = []
    for model in cfg.models:
        params_m, max_ctx = _registry_facts(model)
        for seq_len in cfg.seq_lens:
            row = Row(model, params_m, max_ctx, seq_len, cfg.steps, "ok")
            if max_ctx is not None and seq_len > max_ctx:
                row.status, row.reason = (
                    "over_context",
                    f"seq_len {seq_len} > max context {max_ctx}",
                )
                rows.append(row)
                continue
            if (
                cfg.max_params_m is not None
                and params_m is not None
                and params_m > cfg.max_params_m
            ):
                row.status = "skipped"
                row.reason = f"skipped: {params_m:,.0f}M > --max-params-m {cfg.max_params_m:g}"
                rows.append(row)
                skipped.append(row)
                continue
            if progress:
                print(f"[candidates] {model} seq_len={seq_len} ...", file=sys.stderr, flush=True)
            res = run_probe(_spec(cfg, model, seq_len, cfg.steps), cfg.isolate, timeout)
            _fill(row, res)
            _project(row, cfg)
            rows.append(row)
            if progress:
                print(f"[candidates]   {row.status} {row.sec_per_step} s/step {row.reason}",
                      file=sys.stderr, flush=True)  # fmt: skip
        if cfg.find_max_seq_len and not (
            cfg.max_params_m is not None and params_m is not None and params_m > cfg.max_params_m
        ):
            searches.append(search_max_seq_len(cfg, model, [r for r in rows if r.model == model]))
    for row in skipped:
        _estimate(row, rows)
        _project(row, cfg)
    markdown = format_markdown(rows, searches, cfg)
    paths = write_outputs(rows, searches, markdown, cfg)
    return CandidatesResult(rows, searches, markdown, paths)


def _fill(row: Row, res: dict[str, Any]) -> None:
    for k in ("status", "reason", "dtype", "device", "seconds", "sec_per_step", "peak_mem_gib",
              "warmup_s", "load_s", "loss"):  # fmt: skip
        if res.get(k) is not None:
            setattr(row, k, res[k])
    row.params_m = row.params_m or res.get("params_m")
    row.max_context = row.max_context or res.get("max_context")


def search_max_seq_len(cfg: CandidatesConfig, model: str, known: list[Row]) -> SearchResult:
    """Longest seq_len that trains one step: double from the longest known fit, then bisect.

    Only out-of-memory (and timeouts) count as "does not fit"; the search stops at the
    model's max context, at ``search_step`` resolution or at ``search_minutes``.
    """
    t0 = time.monotonic()
    _, max_ctx = _registry_facts(model)
    fits = [r.seq_len for r in known if r.status == "ok"]
    fails = [r.seq_len for r in known if r.status in ("oom", "timeout")]
    lo = max(fits) if fits else 0
    hi = min([f for f in fails if f > lo], default=None)
    res = SearchResult(model, lo or None, hi, "resolution")
    step = cfg.search_step
    cap_s = cfg.search_minutes * 60

    def probe(n: int) -> bool | None:
        r = run_probe(_spec(cfg, model, n, 1), cfg.isolate, cfg.timeout_minutes * 60)
        res.probes.append((n, r["status"]))
        if r["status"] == "ok":
            return True
        if r["status"] in ("oom", "timeout"):
            res.fail_reason = r.get("reason", "")
            return False
        res.fail_reason = r.get("reason", "")
        return None  # over context, load failure: stop searching

    while hi is None:
        if max_ctx is not None and lo >= max_ctx:
            res.stopped_by = "max_context"
            break
        if time.monotonic() - t0 > cap_s:
            res.stopped_by = "time_cap"
            break
        n = lo * 2 if lo else step
        n = min(n, max_ctx) if max_ctx else n
        ok = probe(n)
        if ok is None:
            res.stopped_by = "failure"
            break
        lo, hi = (n, hi) if ok else (lo, n)
    while hi is not None and hi - lo > step:
        if time.monotonic() - t0 > cap_s:
            res.stopped_by = "time_cap"
            break
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            break
        ok = probe(mid)
        if ok is None:
            res.stopped_by = "failure"
            break
        lo, hi = (mid, hi) if ok else (lo, mid)
    res.max_ok, res.first_fail = (lo or None), hi
    res.seconds = round(time.monotonic() - t0, 1)
    return res


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def _num(v: float | None, digits: int = 2, prefix: str = "") -> str:
    if v is None:
        return "-"
    return f"{prefix}{v:,.{digits}f}"


def _machine() -> str:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        mem = torch.cuda.get_device_properties(0).total_memory / GIB
        return f"{name} ({mem:.0f} GiB), torch {torch.__version__}"
    cores = os.cpu_count()
    mem = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / GIB
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    a = torch.randn(1024, 1024)
    t0 = time.perf_counter()
    for _ in range(8):
        a @ a
    gflops = 8 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9
    # Shared machines: the load average says how much the timings were contended.
    return (
        f"CPU {cpu}, {cores} cores, {mem:.0f} GiB RAM, torch {torch.__version__}, "
        f"load average {load:.1f} and fp32 matmul {gflops:.0f} GFLOP/s when the table was written"
    )


def format_markdown(rows: list[Row], searches: list[SearchResult], cfg: CandidatesConfig) -> str:
    """The candidates table as markdown, with the command and how to read it."""
    infer = (
        f"plus {cfg.inference_hours:g} h inference"
        if cfg.inference_hours
        else "TTT only: inference is left out (add it with --inference-hours)"
    )
    lines = [
        f"# Candidate models: LoRA TTT step cost ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `{command_line(cfg, 'candidates')}`",
        "",
        f"Machine: {_machine()}.",
        "",
        f"Each configuration: {'a fresh subprocess; ' if cfg.isolate else ''}one untimed "
        f"warm-up step, then {cfg.steps} timed steps of the real TTT step (ttt.answer_loss + "
        f"AdamW, LoRA rank {cfg.lora_rank} on all linear projections, batch 1) on a synthetic "
        f"sequence of exactly seq_len random token ids whose last "
        f"{cfg.answer_fraction:.0%} is the answer (the only tokens with loss and logits). "
        f"{'Random weights (same cost as real ones). ' if cfg.random_weights else ''}"
        f"{'Base weights in 4-bit nf4. ' if cfg.int4 else ''}",
        "",
        f"Test set projection: {cfg.tasks_count} tasks x {cfg.ttt_steps_per_task} steps x "
        f"s/step, {infer}; fits = within the {cfg.budget_hours:g} h budget. Peak memory: "
        "torch.cuda.max_memory_allocated on GPU; on CPU the process's peak RSS (VmHWM) above "
        "its imports (weights + activations + optimizer; fp32 on CPU unless --dtype says).",
        "",
        f"| model | params (M) | max ctx (k) | seq_len | dtype | time {cfg.steps} steps (s) "
        f"| s/step | h / 1000 steps | test set (h) | fits {cfg.budget_hours:g} h "
        "| peak mem (GiB) | note |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|:---:|---:|---|",
    ]
    for r in rows:
        est = "~" if r.status == "estimated" else ""
        fits = "-" if r.fits is None else ("yes" if r.fits else "no")
        note = r.reason if r.status != "ok" else ""
        if r.status not in ("ok", "estimated", "skipped"):
            note = f"{r.status}: {r.reason}"
        lines.append(
            "| "
            + " | ".join(
                [
                    r.model,
                    _num(r.params_m, 1),
                    _num(r.max_context / 1024 if r.max_context else None, 0),
                    str(r.seq_len),
                    r.dtype or "-",
                    _num(r.seconds, 2),
                    _num(r.sec_per_step, 3, est),
                    _num(r.hours_per_1000, 2, est),
                    _num(r.test_set_hours, 2, est),
                    fits,
                    _num(r.peak_mem_gib, 2),
                    note.replace("|", "/"),
                ]
            )
            + " |"
        )
    if searches:
        lines += [
            "",
            f"## Longest sequence that fits (one step; doubling, then bisection to {cfg.search_step})",
            "",
            "| model | max seq_len that fits | first that failed | stopped by | probes | seconds | reason |",
            "|---|---:|---:|---|---|---:|---|",
        ]
        for s in searches:
            probes = ", ".join(f"{n}:{st}" for n, st in s.probes) or "-"
            lines.append(
                f"| {s.model} | {s.max_ok or '-'} | {s.first_fail or '-'} | {s.stopped_by} | "
                f"{probes} | {s.seconds:.0f} | {s.fail_reason.replace('|', '/')[:160]} |"
            )
    return "\n".join(lines) + "\n"


def write_outputs(
    rows: list[Row], searches: list[SearchResult], markdown: str, cfg: CandidatesConfig
) -> dict[str, str]:
    """NAME.md and NAME.csv (and NAME-max-seq-len.csv with --find-max-seq-len)."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": str(out / f"{cfg.name}.md"), "csv": str(out / f"{cfg.name}.csv")}
    Path(paths["markdown"]).write_text(markdown)
    _write_csv(paths["csv"], [dataclasses.asdict(r) for r in rows])
    if searches:
        paths["search_csv"] = str(out / f"{cfg.name}-max-seq-len.csv")
        recs = []
        for s in searches:
            d = dataclasses.asdict(s)
            d["probes"] = " ".join(f"{n}:{st}" for n, st in s.probes)
            recs.append(d)
        _write_csv(paths["search_csv"], recs)
    return paths


def _write_csv(path: str, records: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        if not records:
            return
        w = csv.DictWriter(fh, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)


# ---------------------------------------------------------------------------------------
# LoRA rank sweep
# ---------------------------------------------------------------------------------------


@dataclass
class RankSweepResult:
    per_task: list[dict[str, Any]]  # rank, task_id, train_loss, val_loss, base_val_loss, ...
    summary: list[dict[str, Any]]  # rank, n_tasks, train_mean, train_sem, val_mean, val_sem
    table: str
    paths: dict[str, str]


def _mean_sem(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n)


def _sweep_tasks(cfg: RankSweepConfig):
    from arc_ttft import tasks as T

    loaded = T.load_tasks(cfg.challenges, skip_invalid=True).tasks
    chosen = T.select_tasks(loaded, cfg.tasks or None)
    usable = [t for t in chosen if len(t.train) >= 2]  # one pair held out, one trained on
    if cfg.max_tasks is not None:
        usable = usable[: cfg.max_tasks]
    if not usable:
        raise ConfigError(
            [f"challenges: no task in {cfg.challenges!r} has 2+ train pairs (one is held out)"]
        )
    return usable


def run_rank_sweep(cfg: RankSweepConfig, *, progress: bool = True, tasks=None) -> RankSweepResult:
    """Per rank and task: fresh adapter, ``ttt_steps`` steps on all train pairs but the
    last, then the loss on the held-out last pair. Writes lora-rank-sweep.csv (per task),
    lora-rank-sweep-summary.csv, .md and .png to ``cfg.output``.

    ``tasks`` (a list of tasks.Task) replaces loading ``cfg.challenges``.
    """
    import torch

    from arc_ttft import models, ttt
    from arc_ttft.config import ModelConfig, TTTConfig, validate

    validate(cfg)
    task_list = list(tasks) if tasks is not None else _sweep_tasks(cfg)
    task_list = [t for t in task_list if len(t.train) >= 2]
    mcfg = ModelConfig(model=cfg.model, random_weights=cfg.random_weights, format=cfg.format)
    device = _device(cfg.device)
    model, tok = models.load_model(mcfg, device=device, for_training=True)
    max_len = cfg.max_seq_len or models.default_seq_len(cfg.model)

    def val_loss(m, sample) -> float:
        m.eval()
        with torch.no_grad():
            loss, _ = ttt.answer_loss(m, ttt.pack([sample], device))
        return float(loss)

    holdouts = {
        t.id: ttt.holdout_sample(t, len(t.train) - 1, cfg.format, tok, max_len) for t in task_list
    }
    base_val = {t.id: val_loss(model, holdouts[t.id]) for t in task_list}
    per_task: list[dict[str, Any]] = []
    for rank in cfg.ranks:
        tcfg = TTTConfig(
            ttt_steps=cfg.ttt_steps,
            lora_rank=rank,
            lora_alpha=cfg.alpha_ratio * rank,
            lora_targets=list(cfg.lora_targets),
            learning_rate=cfg.learning_rate,
            seed=cfg.seed,
        )
        pm = ttt.prepare_peft_model(model, tcfg)
        for i, task in enumerate(task_list):
            seed = cfg.seed + i
            ttt.reset_adapter(pm, seed)
            samples = ttt.make_samples(
                task, cfg.format, tok, cfg.ttt_steps, seed, max_len, holdout=len(task.train) - 1
            )
            losses, _, _, seconds = ttt.train_steps(pm, samples, tcfg, cfg.ttt_steps)
            tail = losses[-cfg.last_k :]
            rec = {
                "rank": rank,
                "task_id": task.id,
                "train_loss": round(sum(tail) / len(tail), 5),
                "val_loss": round(val_loss(pm, holdouts[task.id]), 5),
                "base_val_loss": round(base_val[task.id], 5),
                "steps": len(losses),
                "seconds": round(seconds, 3),
            }
            per_task.append(rec)
            if progress:
                print(f"[rank-sweep] r={rank} {task.id}: train {rec['train_loss']:.4f} "
                      f"val {rec['val_loss']:.4f}", file=sys.stderr, flush=True)  # fmt: skip
        model = pm.unload()  # the base model back, without this rank's adapter
    summary = _summarise(per_task, cfg.ranks)
    table = format_rank_table(summary, cfg, len(task_list))
    paths = write_rank_outputs(per_task, summary, table, cfg)
    return RankSweepResult(per_task, summary, table, paths)


def _summarise(per_task: list[dict[str, Any]], ranks: list[int]) -> list[dict[str, Any]]:
    out = []
    for rank in ranks:
        recs = [r for r in per_task if r["rank"] == rank]
        tm, ts = _mean_sem([r["train_loss"] for r in recs])
        vm, vs = _mean_sem([r["val_loss"] for r in recs])
        bm, _ = _mean_sem([r["base_val_loss"] for r in recs])
        steps = sum(r["steps"] for r in recs)
        out.append({
            "rank": rank, "n_tasks": len(recs),
            "train_mean": round(tm, 5), "train_sem": round(ts, 5),
            "val_mean": round(vm, 5), "val_sem": round(vs, 5),
            "base_val_mean": round(bm, 5),
            "sec_per_step": round(sum(r["seconds"] for r in recs) / max(1, steps), 4),
        })  # fmt: skip
    return out


def format_rank_table(summary: list[dict[str, Any]], cfg: RankSweepConfig, n_tasks: int) -> str:
    lines = [
        f"# LoRA rank sweep ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `{command_line(cfg, 'lora-rank-sweep')}`",
        "",
        f"{n_tasks} tasks, {cfg.ttt_steps} steps per task and rank, alpha = {cfg.alpha_ratio:g} "
        f"x rank, lr {cfg.learning_rate:g}. Train loss: mean of the last {cfg.last_k} steps. "
        "Validation: the loss on each task's last train pair, held out of training "
        "(other pairs as examples, identity view). Mean +- standard error over tasks.",
        "",
        "| rank | tasks | train loss | val loss | val loss before TTT | s/step |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['rank']} | {s['n_tasks']} | {s['train_mean']:.4f} +- {s['train_sem']:.4f} | "
            f"{s['val_mean']:.4f} +- {s['val_sem']:.4f} | {s['base_val_mean']:.4f} | "
            f"{s['sec_per_step']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_rank_outputs(per_task, summary, table, cfg: RankSweepConfig) -> dict[str, str]:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": str(out / "lora-rank-sweep.csv"),
        "summary_csv": str(out / "lora-rank-sweep-summary.csv"),
        "markdown": str(out / "lora-rank-sweep.md"),
        "png": str(out / "lora-rank-sweep.png"),
    }
    _write_csv(paths["csv"], per_task)
    _write_csv(paths["summary_csv"], summary)
    Path(paths["markdown"]).write_text(table)
    plot_rank_sweep(summary, paths["png"], title=f"LoRA rank sweep: {cfg.model}")
    return paths


def plot_rank_sweep(summary: list[dict[str, Any]], path: str, title: str = "") -> None:
    """Loss vs rank (log2 x axis), train and validation lines with standard-error bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ranks = [s["rank"] for s in summary]
    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=150)
    ax.errorbar(ranks, [s["train_mean"] for s in summary], yerr=[s["train_sem"] for s in summary],
                marker="o", ms=4, capsize=3, lw=1.5, label="train (last steps)")  # fmt: skip
    ax.errorbar(ranks, [s["val_mean"] for s in summary], yerr=[s["val_sem"] for s in summary],
                marker="s", ms=4, capsize=3, lw=1.5, label="validation (held-out pair)")  # fmt: skip
    ax.axhline(summary[0]["base_val_mean"], color="grey", ls=":", lw=1, label="validation, no TTT")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks)
    ax.set_xticklabels([str(r) for r in ranks])
    ax.set_xlabel("LoRA rank")
    ax.set_ylabel("cross-entropy (answer tokens)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# `python -m arc_ttft.bench --one JSON` (the child process)
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--one":
        return _child_main(argv[1])
    print(
        "usage: python -m arc_ttft.bench --one JSON  (use `arc-ttft candidates`)", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
