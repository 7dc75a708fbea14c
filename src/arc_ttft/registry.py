"""The model registry: every model the pipeline knows, its architecture typed in as data.

Over 500 lines because the table is data: one entry per model, its figures from its
``hub_id``'s published config.json (the family helpers' comments name the file and date
where known). ``Candidate.config`` holds those fields, so a model can be built with random
weights (timing runs) and sized without any download.
``find_candidate`` looks a name up (no torch here: ``config`` imports it), ``config_params``
counts parameters, ``build_config`` makes a transformers config, ``scaled_down`` a
few-layer copy, ``registry_table`` the ``arc-ttft models`` listing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from arc_ttft.rope import rope_changes


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


def registry_table(where: bool = False) -> str:
    """The registry as an aligned text table; ``where`` adds the local folder (no download)."""
    from arc_ttft.model_paths import ModelNotFoundError, resolve_model_path  # it imports this

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
