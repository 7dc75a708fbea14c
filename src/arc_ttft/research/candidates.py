"""`arc-ttft candidates`: which model, at which sequence length, fits the TTT budget.

``run_candidates`` answers "which model, at which sequence length, can be fine-tuned on
every test task inside the budget?". For each (model, seq_len) it runs the real TTT step
(``ttt_samples.answer_loss`` + AdamW on a fresh LoRA adapter, via ``ttt.train_steps``) on a
synthetic sequence of exactly ``seq_len`` random token ids whose last ``answer_fraction``
carries the loss (an ARC answer grid is typically 10-30% of a prompt). Token values do not
change the cost, so random ids time the step as well as real prompts do, and any model in
the registry can be timed with ``random_weights`` without downloading anything.

Each configuration runs in a fresh subprocess (``isolation.run_isolated``): peak memory is
then that process's own, and an out-of-memory crash or a hard kill becomes a row with its
reason instead of ending the search. Writes NAME.md (``format_markdown``) and NAME.csv.
``int_list`` and ``write_csv`` are shared with ``rank_sweep``.

Over 500 lines: the measurement, the longest-length search, the projection and the
Markdown/CSV writers of one command.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_ttft.config import ConfigError, at_least, command_line, option
from arc_ttft.research import isolation
from arc_ttft.research.isolation import GIB

# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


def int_list(name: str, values: list[Any]) -> list[int]:
    """A config's comma separated list as ints; ConfigError naming the field otherwise."""
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ConfigError([f"{name}: {values!r} must be comma separated integers ({e})"]) from None
    return out


@dataclass
class CandidatesConfig:
    """`arc-ttft candidates`: time the TTT step of candidate models at several lengths."""

    models: list[str] = option(
        ["tiny"], "Models to time (registry names, hub ids or folders; comma separated)."
    )
    seq_lens: list[int] = option(
        [1024, 2048, 4096], "Sequence lengths in tokens (comma separated)."
    )
    steps: int = option(10, "Timed optimizer steps per configuration (after one untimed warm-up).")
    int4: bool = option(False, "Load the base models in 4-bit nf4 (QLoRA).")
    random_weights: bool = option(
        False, "Build each model from its registry config with random weights (no download)."
    )
    dtype: str = option(
        "auto",
        "Compute dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16, float16.",
        choices=["auto", "float32", "bfloat16", "float16"],
    )
    device: str = option("auto", "auto (cuda when available), cpu, cuda, cuda:1, ...")
    lora_rank: int = option(16, "LoRA rank of the timed adapter.")
    answer_fraction: float = option(
        0.25, "Share of each synthetic sequence that carries loss (the answer at the end)."
    )
    budget_hours: float = option(12.0, "Time budget the test set must fit in.")
    tasks_count: int = option(100, "Test tasks in the projection.")
    ttt_steps_per_task: int = option(32, "TTT steps per task in the projection.")
    inference_hours: float | None = option(
        None, "Inference time to add to the projection (default: left out, said in the header)."
    )
    max_params_m: float | None = option(
        None, "Skip models above this many million parameters (their rows estimated instead)."
    )
    find_max_seq_len: bool = option(
        False, "Also search each model's longest sequence that fits (doubling, then bisection)."
    )
    search_step: int = option(256, "Bisection resolution of --find-max-seq-len, in tokens.")
    search_minutes: float = option(20.0, "Time cap of --find-max-seq-len per model.")
    timeout_minutes: float = option(30.0, "Give up on one configuration after this long.")
    memory_cap_gb: float | None = option(
        None, "CPU only: memory a configuration may add after its imports (over it: OOM row)."
    )
    isolate: bool = option(
        True, "Run each configuration in a fresh subprocess (exact peak memory)."
    )
    seed: int = option(0, "Seed for weights, adapter and token ids.")
    output: str = option("benchmarks", "Folder for the markdown and CSV files.")
    name: str = option("candidates", "File stem: writes NAME.md and NAME.csv.")

    def __post_init__(self) -> None:
        self.seq_lens = int_list("seq_lens", self.seq_lens)

    def problems(self) -> list[str]:
        out = []
        if not self.models:
            out.append("models: empty; give at least one, e.g. --models tiny")
        if not self.seq_lens or min(self.seq_lens) < 8:
            out.append(f"seq_lens: {self.seq_lens} needs values >= 8")
        if not 0 < self.answer_fraction <= 0.9:
            out.append(f"answer_fraction: {self.answer_fraction} must be in (0, 0.9]")
        return out + at_least(self, 1, "steps") + at_least(self, 8, "search_step")


# ---------------------------------------------------------------------------------------
# One configuration (runs in the child process: isolation.run_isolated)
# ---------------------------------------------------------------------------------------


def synthetic_sample(seq_len: int, vocab_size: int, answer_fraction: float, seed: int):
    """A ttt_samples.Sample of exactly ``seq_len`` random token ids; the last share is the answer."""
    import torch

    from arc_ttft import ttt_samples

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (seq_len,), generator=g).tolist()
    n_answer = max(1, int(round(seq_len * answer_fraction)))
    labels = [ttt_samples.IGNORE] * (seq_len - n_answer) + ids[seq_len - n_answer :]
    return ttt_samples.Sample(ids, labels)


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
    device = spec.get("device", "auto")
    device = models.default_device() if device == "auto" else device
    on_cuda = device.startswith("cuda")
    out["device"] = device
    rss0 = isolation.proc_status_kib("VmRSS") or 0
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
            kind = "oom" if models.is_oom(e) else "load_failed"
            out.update(status=kind, reason=f"load: {type(e).__name__}: {isolation.first_line(e)}")
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
            if models.is_oom(e):
                out.update(
                    status="oom",
                    reason=f"out of memory at seq_len {seq_len}: {isolation.first_line(e)}",
                )
            else:
                out.update(status="error", reason=f"{type(e).__name__}: {isolation.first_line(e)}")
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
            out["peak_mem_gib"] = round(isolation.peak_memory_bytes(device) / GIB, 3)
        elif isolated:
            out["peak_mem_gib"] = round(max(0, isolation.peak_rss_kib() - rss0) * 1024 / GIB, 3)
        # In-process on CPU the peak RSS is the whole session's: no honest figure.
        del model


def run_probe(spec: dict[str, Any], isolate: bool = True, timeout_s: float | None = None) -> dict:
    """Measure one configuration, in a fresh subprocess when ``isolate``; never raises.

    A child that dies (killed by the kernel's OOM killer, a segfault) or runs past
    ``timeout_s`` comes back as a result with status oom / error / timeout and the reason.
    """
    if not isolate:
        return measure_one(spec)
    return isolation.run_isolated(
        "arc_ttft.research.candidates:measure_one", {**spec, "isolated": True}, timeout_s
    )


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
        f"warm-up step, then {cfg.steps} timed steps of the real TTT step (ttt_samples.answer_loss + "
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
    write_csv(paths["csv"], [dataclasses.asdict(r) for r in rows])
    if searches:
        paths["search_csv"] = str(out / f"{cfg.name}-max-seq-len.csv")
        recs = []
        for s in searches:
            d = dataclasses.asdict(s)
            d["probes"] = " ".join(f"{n}:{st}" for n, st in s.probes)
            recs.append(d)
        write_csv(paths["search_csv"], recs)
    return paths


def write_csv(path: str, records: list[dict[str, Any]]) -> None:
    """``records`` as a CSV with a header (an empty file when there are none)."""
    with open(path, "w", newline="") as fh:
        if not records:
            return
        w = csv.DictWriter(fh, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
