"""Loading models: ``load_model`` (dtype by hardware, nf4, random weights, RoPE scaling),
``load_tokenizer``, random-weight builds and the sequence-length defaults.

The other model modules: ``registry`` (``REGISTRY``, ``Candidate``, the inline
architecture configs), ``rope`` (RoPE scaling), ``model_paths`` (``resolve_model_path``:
where weights are found) and ``tiny`` (the tiny offline model). Their public names are
re-exported here (``__all__``), so ``models.X`` keeps working; patch them where they live.

Weights load from safetensors only, and model code from the hub runs only with
``trust_remote_code``.

Padding side: tokenizers come back as the model ships them. Batched generation with a
decoder-only model needs ``tokenizer.padding_side = "left"``; setting it is the caller's
business (the inference backends do it), training here uses no padding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

# The registry, RoPE scaling, model discovery and the tiny model live in their own modules
# (registry, rope, model_paths, tiny); their public names are re-exported so that
# ``models.X`` keeps working. A monkeypatch must target the module that defines a name:
# patching the re-export here does not change the calls made inside that module.
from arc_ttft.model_paths import (
    ModelNotFoundError,
    find_in_hub_cache,
    find_in_kaggle,
    folder_candidate,
    hub_cache_dir,
    kaggle_inputs_seen,
    kaggle_model_folders,
    registry_table,
    resolve_model_path,
    rope_overrides,
)
from arc_ttft.registry import (
    ARC_NANO_CONFIG,
    ARC_NANO_TTT,
    BUNDLED_MODELS,
    LORA_TARGETS,
    PHI_TARGETS,
    REGISTRY,
    TINY_CONFIG,
    TINY_VERSION,
    Candidate,
    build_config,
    config_params,
    find_candidate,
    scaled_down,
)
from arc_ttft.rope import (
    ROPE_KINDS,
    apply_rope_scaling,
    context_length,
    parse_rope_scaling,
    rope_changes,
)
from arc_ttft.tiny import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    build_tiny_tokenizer,
    cache_root,
    ensure_tiny_model,
    publish_folder,
    quiet_progress,
)

__all__ = [
    # loading (defined here)
    "build_random_model",
    "default_device",
    "default_seq_len",
    "load_model",
    "load_tokenizer",
    "pick_dtype",
    "random_weights_folder",
    "resolve_dtype",
    "resolve_max_seq_len",
    # re-exported: defined in arc_ttft.registry
    "ARC_NANO_CONFIG",
    "ARC_NANO_TTT",
    "BUNDLED_MODELS",
    "LORA_TARGETS",
    "PHI_TARGETS",
    "REGISTRY",
    "TINY_CONFIG",
    "TINY_VERSION",
    "Candidate",
    "build_config",
    "config_params",
    "find_candidate",
    "registry_table",
    "scaled_down",
    # re-exported: defined in arc_ttft.rope
    "ROPE_KINDS",
    "apply_rope_scaling",
    "context_length",
    "parse_rope_scaling",
    "rope_changes",
    "rope_overrides",
    # re-exported: defined in arc_ttft.model_paths
    "ModelNotFoundError",
    "find_in_hub_cache",
    "find_in_kaggle",
    "folder_candidate",
    "hub_cache_dir",
    "kaggle_inputs_seen",
    "kaggle_model_folders",
    "resolve_model_path",
    # re-exported: defined in arc_ttft.tiny
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "build_tiny_tokenizer",
    "ensure_tiny_model",
]

log = logging.getLogger(__name__)


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


def is_oom(e: BaseException) -> bool:
    """Whether an exception is running out of memory (CUDA, or host RAM)."""
    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cannot allocate"))


def default_device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_tiny_model())


def load_tokenizer(cfg):
    """The tokenizer for ``cfg.model`` (pad token set to eos when missing).

    With ``random_weights`` and no real tokenizer on disk: the real Qwen2 tokenizer for
    Qwen2-family registry models (built offline: ``qwen2_tokenizer.qwen2_tokenizer_for``), else
    the tiny model's tokenizer (ids stay below any vocab_size): good for timing runs only.
    """
    from transformers import AutoTokenizer

    try:
        path = resolve_model_path(cfg.model)
    except ModelNotFoundError:
        if not cfg.random_weights:
            raise
        from arc_ttft import qwen2_tokenizer

        # Random weights of a Qwen2-family model: its real vocabulary, built offline.
        folder = qwen2_tokenizer.qwen2_tokenizer_for(cfg.model)
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
    final = cache_root(None) / f"random-{Path(cfg.model).name}-{dname}-{digest}-tok"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".random-build-", dir=final.parent))
    try:
        model = build_random_model(cfg, dtype, config=config)
        with quiet_progress():
            model.save_pretrained(tmp, safe_serialization=True)
        # vLLM reads its tokenizer from the same folder: the one training used
        load_tokenizer(cfg).save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_folder(tmp, final)


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
