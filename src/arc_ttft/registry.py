"""The model registry: every model the pipeline knows, its architecture as data.

The table lives in ``data/registry.json``: one row a model (``Candidate``'s fields, a
``note`` where a figure wants a reason) and one entry a family (the fields its models
share, the hub config.json and date they came from). A row's ``config`` holds what differs
from its family; ``_DERIVED`` computes the few fields that follow from others (Gemma 3's
layer pattern, SmolLM3's NoPE layers). ``Candidate.config`` is the whole architecture, so
a model can be built with random weights (timing runs) and sized without any download.
The bundled models' configs (tiny, arc-nano) stay here, with their reasons.
``find_candidate`` looks a name up (no torch here: ``config`` imports it), ``config_params``
counts parameters, ``build_config`` makes a transformers config, ``scaled_down`` a
few-layer copy (``model_paths.registry_table`` lists the registry).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
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
# arc-nano3's TTT (docs/real-arc.md): arc-nano's, but each task's adapter is trained
# twice, on permuted colours and on its own colours under the 8 dihedral transforms, 64
# steps each, keeping own colours when they fit far better (ttt.FIT_MARGIN): fixed
# colour rules survive only those views.
ARC_NANO3_TTT: dict = {**ARC_NANO_TTT, "ttt_colours": "fit", "ttt_steps": 128}
# arc-nano4's: arc-nano3's with 128 steps per view family. Chosen on 60 ARC-AGI-1 training
# tasks arc-nano4 never saw (benchmarks/sweeps/arc-nano4-ttt.toml): 13/60 solved with 256
# steps in all, against 10/60 with 128 and 11/60 with 512; central views 7/60.
ARC_NANO4_TTT: dict = {**ARC_NANO3_TTT, "ttt_steps": 256}
# arc-nano2: arc-nano continued by `arc-ttft finetune` on real-ARC-like data; arc-nano3:
# arc-nano2 continued in the `shaped` grid format; arc-nano4: arc-nano continued on
# generated tasks weighted towards rotations, flips and transposes (their cards).
BUNDLED_MODELS: dict[str, Path] = {
    name: Path(__file__).parent / "data" / name
    for name in ("arc-nano", "arc-nano2", "arc-nano3", "arc-nano4")
}

_DATA = Path(__file__).parent / "data" / "registry.json"
# What a string ``config`` / ``run_defaults`` in registry.json stands for.
_NAMED = {
    "TINY_CONFIG": TINY_CONFIG,
    "ARC_NANO_CONFIG": ARC_NANO_CONFIG,
    "ARC_NANO_TTT": ARC_NANO_TTT,
    "ARC_NANO3_TTT": ARC_NANO3_TTT,
    "ARC_NANO4_TTT": ARC_NANO4_TTT,
}


def _per_layer(config: dict, every: int, on, off) -> list:
    """``on`` for every ``every``-th layer (the last of each group), ``off`` for the rest."""
    return [on if (i + 1) % every == 0 else off for i in range(config["num_hidden_layers"])]


# The fields a family computes from the others (its ``derived`` in registry.json).
_DERIVED: dict[str, Callable[[dict], dict]] = {
    "qwen2": lambda c: {"sliding_window": c["max_position_embeddings"]},
    "qwen3": lambda c: {"max_window_layers": c["num_hidden_layers"]},
    "gemma3": lambda c: {"layer_types": _per_layer(c, 6, "full_attention", "sliding_attention")},
    "llama32": lambda c: {"head_dim": c["hidden_size"] // c["num_attention_heads"]},
    "smollm3": lambda c: {"no_rope_layers": _per_layer(c, 4, 0, 1)},  # 0: NoPE layer
}


def _family_config(key: str, family: dict, own: dict) -> dict:
    """A model's config: its family's with the model's own fields over it, then derived."""
    unknown = set(own) - set(family["config"])
    missing = set(family["model_fields"]) - set(own)
    if unknown or missing:
        raise ValueError(f"registry.json, {key} model: unknown {unknown}, missing {missing}")
    config = copy.deepcopy({**family["config"], **own})
    derived = _DERIVED[key](config) if key in _DERIVED else {}
    if set(derived) != set(family["derived"]):
        raise ValueError(f"registry.json, family {key}: derived fields {sorted(derived)}")
    config.update(derived)
    return config


def _load_registry(path: Path = _DATA) -> dict[str, Candidate]:
    """The ``Candidate`` rows of registry.json, in its order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    registry: dict[str, Candidate] = {}
    for row in data["models"]:
        fields = {k: v for k, v in row.items() if k not in ("family", "note")}
        for key in ("config", "run_defaults"):
            if isinstance(fields.get(key), str):
                fields[key] = _NAMED[fields[key]]
        if "family" in row:
            fields["config"] = _family_config(
                row["family"], data["families"][row["family"]], fields["config"]
            )
        fields["lora_targets"] = tuple(fields.get("lora_targets", ()))
        if row["name"] in registry:
            raise ValueError(f"registry.json: {row['name']} twice")
        registry[row["name"]] = Candidate(**fields)
    return registry


REGISTRY: dict[str, Candidate] = _load_registry()


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
