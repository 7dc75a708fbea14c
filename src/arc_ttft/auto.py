"""What ``auto`` means on this machine: the backend, sampling, scorer, scoring views,
workers and dtype a run takes when its settings say ``auto``.

Every choice is a pure function of a :class:`Machine`, so the GPU's choices can be made
(and tested, and seen) on a CPU: ``--profile kaggle-gpu`` decides as on Kaggle's GPU
image with vLLM installed, while the run still executes on the device it has.

The reasons (the figures are in benchmarks/dfs.md):

- backend: vLLM where it is usable (a CUDA GPU, or the CPU build), else transformers.
- sampling: DFS with vLLM on a GPU (the 2024/2025 winners' search; vLLM walks every view
  in lockstep, one batched engine call per depth). With the transformers backend DFS walks
  one prompt at a time with one-token forwards, which a GPU cannot batch, so a GPU
  without vLLM decodes greedily in batches (or samples when --samples > 1). On a CPU,
  greedy: a walk costs several greedy answers there.
- scorer: ARChitects' after DFS, product of experts after greedy or sampling, plain vote
  without scoring views.
- scoring views (--rescore): 8 on a GPU (the anchors' 8 augmentations), 4 on a CPU.
- workers: one per visible GPU; the kaggle-gpu profile on a CPU runs 2 (two cores).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("auto", "kaggle-gpu", "cpu")
GPU_RESCORE = 8  # the ARChitects' and NVARC's 8 augmentations
CPU_RESCORE = 4
PROFILE_WORKERS = 2  # kaggle-gpu on a CPU: what two cores can run side by side


@dataclass(frozen=True)
class Machine:
    """What the decisions depend on."""

    device: str  # "cuda" or "cpu": where the choices are made for
    gpus: tuple[str, ...] = ()  # GPU names, one per visible GPU
    vllm: bool = False  # vLLM usable
    profile: str = "auto"  # "auto" (detected), or the profile that stood in for detection
    warnings: tuple[str, ...] = field(default=())


def nvidia_gpus_present() -> bool:
    """An NVIDIA driver answers here (whatever torch was built for)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0 and "GPU" in res.stdout


@functools.cache
def detect_machine() -> Machine:
    """This machine, as torch sees it, with a warning for a CPU build of torch on a GPU
    (once per process: the planner asks for every chunk)."""
    import torch

    from arc_ttft import infer

    warnings = []
    if torch.cuda.is_available():
        gpus = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Machine("cuda", gpus, infer.vllm_available())
    if torch.version.cuda is None and nvidia_gpus_present():
        warnings.append(
            f"this machine has an NVIDIA GPU but torch {torch.__version__} is a CPU build: "
            "the run uses the CPU (fix: install Kaggle's CUDA torch, not the CPU wheel)"
        )
    return Machine("cpu", (), infer.vllm_available(), warnings=tuple(warnings))


def machine_for(profile: str) -> Machine:
    """The machine ``auto`` decides for: detected, or the one a profile names."""
    if profile == "auto":
        return detect_machine()
    if profile == "kaggle-gpu":
        return Machine("cuda", ("NVIDIA L4",) * PROFILE_WORKERS, True, profile)
    if profile == "cpu":
        return Machine("cpu", (), False, profile)
    raise ValueError(f"profile: {profile!r} unknown; use one of {', '.join(PROFILES)}")


def backend_for(machine: Machine, kind: str = "auto") -> str:
    if kind != "auto":
        return kind
    return "vllm" if machine.vllm else "hf"


def sampling_for(machine: Machine, backend: str, samples: int = 1, temperature: float = 0.0) -> str:
    """``--sampling auto`` on ``machine`` with ``backend`` (module docstring)."""
    if machine.device == "cuda" and backend == "vllm":
        return "dfs"
    return "sample" if samples > 1 and temperature > 0 else "greedy"


def scorer_for(sampling: str, rescore: int) -> str:
    if rescore < 1:
        return "vote"
    return "architects" if sampling == "dfs" else "poe"


def rescore_for(machine: Machine) -> int:
    return GPU_RESCORE if machine.device == "cuda" else CPU_RESCORE


def workers_for(machine: Machine, workers: int | None) -> int:
    if workers is not None:
        return workers
    return max(1, len(machine.gpus))


def resolve(cfg: Any, machine: Machine) -> Any:
    """``cfg`` (a RunConfig) with every ``auto`` of the backend, sampling, scorer, scoring
    views and workers made concrete for ``machine``: what config.json records and the
    workers run. The dtype stays ``auto`` (each worker's device decides: fp16 on T4,
    bf16 on newer GPUs), and :func:`describe` names it."""
    inf = cfg.infer
    backend = backend_for(machine, inf.backend)
    sampling = (
        sampling_for(machine, backend, inf.samples, inf.temperature)
        if inf.sampling == "auto"
        else inf.sampling
    )
    rescore = rescore_for(machine) if inf.rescore is None else inf.rescore
    scorer = scorer_for(sampling, rescore) if inf.scorer == "auto" else inf.scorer
    infer_cfg = dataclasses.replace(
        inf, backend=backend, sampling=sampling, rescore=rescore, scorer=scorer
    )
    return dataclasses.replace(cfg, infer=infer_cfg, workers=workers_for(machine, cfg.workers))


def describe(cfg: Any, machine: Machine) -> dict[str, Any]:
    """What runs, for the run's first line, its event log and summary.md: the device and
    GPUs the run executes on, its dtype, and the choices ``resolve`` made (for a profile's
    machine, when one stood in for detection)."""
    import torch

    from arc_ttft import models

    device = models.default_device()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    dtype = str(models.resolve_dtype(cfg.model.dtype, device)).replace("torch.", "")
    return {
        "device": device.split(":")[0],
        "gpus": gpus,
        "gpu_count": len(gpus),
        "profile": machine.profile,
        "dtype": dtype,
        "backend": cfg.infer.backend,
        "sampling": cfg.infer.sampling,
        "scorer": cfg.infer.scorer,
        "rescore_views": cfg.infer.rescore,
        "workers": cfg.workers,
        "warnings": list(machine.warnings),
    }


def describe_line(d: dict[str, Any]) -> str:
    """One line: ``device: CPU, dtype: float32, backend: hf, ...``."""
    gpus = f" ({d['gpu_count']}x {d['gpus'][0]})" if d["gpus"] else ""
    profile = f", decided as on: {d['profile']}" if d["profile"] != "auto" else ""
    device = "CPU" if d["device"] == "cpu" else d["device"]
    return (
        f"device: {device}{gpus}, dtype: {d['dtype']}, backend: {d['backend']}, "
        f"sampling: {d['sampling']}, scorer: {d['scorer']}, scoring views: "
        f"{d['rescore_views']}, workers: {d['workers']}{profile}"
    )
