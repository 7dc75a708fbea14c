"""Measure one configuration in a fresh process: its result, its peak memory, its OOM.

The benchmark commands (``arc-ttft candidates``, ``arc-ttft bench ttt``) time one
configuration per process so that its peak memory is its own (CUDA
max_memory_allocated, or VmHWM on CPU, which cannot be reset inside a process), and so
that an out-of-memory crash or a hard kill becomes a result with its reason instead of
ending the run.

A measurement is a function ``measure(spec: dict) -> dict`` in a module of this package.
``run_isolated("arc_ttft.MODULE:FUNCTION", spec)`` runs
``python -m arc_ttft.research.isolation arc_ttft.MODULE:FUNCTION JSON``; the child imports torch and
the model code (they count as the baseline, before any ``memory_cap_gb`` in the spec
caps the address space), calls the function and prints one ``HARNESS_RESULT {json}``
line, which the parent reads back.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULT_PREFIX = "HARNESS_RESULT "
GIB = 1024**3


# ---------------------------------------------------------------------------------------
# Memory and OOM (in the measuring process)
# ---------------------------------------------------------------------------------------


def proc_status_kib(key: str) -> int | None:
    """A field of /proc/self/status in KiB (VmHWM: peak RSS, VmRSS, VmSize), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM) in KiB."""
    hwm = proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def peak_memory_bytes(device: str) -> int:
    """Peak memory of this process: max_memory_allocated on CUDA, else VmHWM."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_kib() * 1024


def set_memory_cap(gb: float) -> None:
    """Limit the address space to what the process has now plus ``gb`` (Linux, CPU)."""
    import resource

    now = (proc_status_kib("VmSize") or 0) * 1024
    cap = now + int(gb * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, at most 300 characters."""
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


# ---------------------------------------------------------------------------------------
# The parent and the child
# ---------------------------------------------------------------------------------------


def run_isolated(target: str, spec: dict[str, Any], timeout_s: float | None = None) -> dict:
    """``target`` ("arc_ttft.MODULE:FUNCTION") on ``spec`` in a fresh process; never raises.

    A child that dies (killed by the kernel's OOM killer, a segfault) or runs past
    ``timeout_s`` comes back as a result with status oom / error / timeout and the reason.
    """
    cmd = [sys.executable, "-m", "arc_ttft.research.isolation", target, json.dumps(spec)]
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


def _child_main(target: str, spec_json: str) -> int:
    spec = json.loads(spec_json)
    import torch  # noqa: F401  (imports count as the baseline, before the cap)

    from arc_ttft import models, ttt  # noqa: F401

    module, _, name = target.partition(":")
    measure = getattr(importlib.import_module(module), name)
    if spec.get("memory_cap_gb"):
        set_memory_cap(float(spec["memory_cap_gb"]))
    result = measure(spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and ":" in argv[0]:
        return _child_main(argv[0], argv[1])
    print(
        "usage: python -m arc_ttft.research.isolation arc_ttft.MODULE:FUNCTION JSON  (the benchmark "
        "commands' own children: arc-ttft candidates, arc-ttft bench ttt)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
