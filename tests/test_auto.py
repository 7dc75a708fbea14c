"""What `auto` decides, per machine: the Kaggle GPU's choices made and seen on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arc_ttft import auto, selection
from arc_ttft import config as C

GPU_VLLM = auto.Machine("cuda", ("NVIDIA L4",) * 4, vllm=True)
GPU_HF = auto.Machine("cuda", ("Tesla T4",) * 2, vllm=False)
CPU = auto.Machine("cpu")


@pytest.mark.parametrize(
    ("machine", "want"),
    [
        (GPU_VLLM, ("vllm", "dfs", "architects", 8, 4)),
        # No vLLM on the GPU: a DFS walk of one-token forwards per prompt cannot batch.
        (GPU_HF, ("hf", "greedy", "poe", 8, 2)),
        (CPU, ("hf", "greedy", "poe", 4, 1)),
    ],
)
def test_auto_decides_from_the_device_and_the_backend(machine, want):
    cfg = auto.resolve(C.RunConfig(), machine)
    got = (cfg.infer.backend, cfg.infer.sampling, cfg.infer.scorer, cfg.infer.rescore)
    assert (*got, cfg.workers) == want


def test_explicit_settings_win_over_auto():
    cfg = C.from_flat(C.RunConfig, {"backend": "hf", "sampling": "dfs", "rescore": 0, "workers": 1})
    got = auto.resolve(cfg, GPU_VLLM)
    assert (got.infer.backend, got.infer.sampling, got.infer.scorer) == ("hf", "dfs", "vote")
    assert (got.infer.rescore, got.workers) == (0, 1)


def test_sampling_auto_follows_the_backend_it_is_given():
    """--sampling auto picked DFS whenever CUDA existed, whatever the backend."""
    inf = C.InferConfig()
    assert auto.sampling_for(GPU_VLLM, "hf", inf.samples, inf.temperature) == "greedy"
    assert auto.sampling_for(GPU_VLLM, "vllm") == "dfs"
    assert auto.sampling_for(CPU, "vllm") == "greedy"
    assert auto.sampling_for(CPU, "hf", 8, 1.0) == "sample"


def test_the_kaggle_gpu_profile_decides_as_on_the_gpu_here():
    machine = auto.machine_for("kaggle-gpu")
    cfg = auto.resolve(C.from_flat(C.RunConfig, {"profile": "kaggle-gpu"}), machine)
    assert (cfg.infer.backend, cfg.infer.sampling, cfg.infer.scorer) == (
        "vllm",
        "dfs",
        "architects",
    )
    assert (cfg.infer.rescore, cfg.workers) == (8, 2)
    d = auto.describe(cfg, machine)
    line = auto.describe_line(d)
    assert d["device"] == "cpu" and line.startswith("device: CPU, dtype: float32")
    assert "decided as on: kaggle-gpu" in line and "sampling: dfs" in line


def test_a_gpu_with_a_cpu_torch_build_gets_a_warning(monkeypatch):
    import torch

    auto.detect_machine.cache_clear()
    monkeypatch.setattr(auto, "nvidia_gpus_present", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        m = auto.detect_machine()
    finally:
        auto.detect_machine.cache_clear()
    assert m.device == "cpu" and "CPU build" in m.warnings[0]


def test_library_calls_resolve_rescore_for_this_machine():
    assert selection.resolve_rescore(C.InferConfig()) == auto.rescore_for(auto.detect_machine())
    assert selection.resolve_rescore(C.InferConfig(rescore=3)) == 3


def test_the_run_records_what_it_resolved(tmp_path, capsys):
    """config.json held `auto`; now it holds the choices, and the run says what runs."""
    from arc_ttft import pipeline

    flat = {
        "challenges": "arc1-eval",
        "max_tasks": 1,
        "model": "tiny",
        "ttt_steps": 0,
        "views": 1,
        "probe_tasks": 0,
        "budget_minutes": 2,
        "output": str(tmp_path / "run"),
    }
    res = pipeline.run(C.validate(C.from_flat(C.RunConfig, flat)))
    saved = json.loads((Path(res.output) / "config.json").read_text())
    assert saved["infer"]["sampling"] in ("greedy", "sample", "dfs")
    assert saved["infer"]["scorer"] != "auto" and saved["infer"]["rescore"] is not None
    assert saved["workers"] >= 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("device: ") and "sampling: " in first and "workers: " in first
    assert "runs on: device: " in (Path(res.output) / "summary.md").read_text()
    assert res.runs_on["backend"] == saved["infer"]["backend"]
