"""Typed configuration: the one source of truth for CLI flags and notebook parameters.

Every field has a docstring (``help`` metadata) that becomes the flag's help text.
Field names are unique across all groups, so a nested config flattens into one flat
set of flags (``ttt_steps`` -> ``--ttt-steps``) and one flat set of notebook
parameters. ``validate`` lists every problem at once instead of stopping at the first.

Over 500 lines: every parameter of every command, each with its help text and its checks,
in one place on purpose (the single source of truth for flags and notebook parameters).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration with one or more problems; ``problems`` lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def option(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with its help text (and optional CLI aliases / choices): every
    config class (here, and the research commands' own) declares its fields with it."""
    meta = {"help": help, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


_f = option  # short name for the many fields below


def at_least(cfg: Any, minimum: float, *names: str) -> list[str]:
    """``name: value must be >= minimum`` for each named field below it (unset passes)."""
    values = {n: getattr(cfg, n) for n in names}
    return [
        f"{n}: {v} must be >= {minimum}" for n, v in values.items() if v is not None and v < minimum
    ]


# ---------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    challenges: str = _f(
        "arc1-eval",
        "Tasks: a Kaggle challenges JSON, a folder of per-task JSON files, or a bundled set "
        "(arc1-train, arc1-eval, arc2-train, arc2-eval).",
    )
    solutions: str | None = _f(
        None, "Solutions JSON for a challenges file (bundled sets carry their own)."
    )
    tasks: list[str] = _f([], "Only these task ids (comma separated).")
    max_tasks: int | None = _f(None, "Only the first N tasks (after --tasks).")
    skip_invalid: bool = _f(False, "Keep going with the valid tasks and report the invalid ones.")

    def problems(self) -> list[str]:
        out = []
        if not self.challenges:
            out.append("challenges: empty; give a file, a folder or a bundled set name")
        if self.max_tasks is not None and self.max_tasks < 1:
            out.append(f"max_tasks: {self.max_tasks} must be >= 1 (or leave it unset for all)")
        return out


@dataclass
class ModelConfig:
    model: str = _f(
        "tiny",
        "Model: a registry name (see `arc-ttft models`), a hub id or a local folder. "
        "`tiny` is a small offline model for tests and dry runs.",
    )
    random_weights: bool = _f(
        False, "Build the architecture from its config with random weights (timing only)."
    )
    int4: bool = _f(False, "Load the base model in 4-bit nf4 (bitsandbytes) for QLoRA.")
    dtype: str = _f(
        "auto",
        "Weights/compute dtype: auto (bf16 where supported, fp16 on T4, fp32 on CPU), "
        "float32, bfloat16, float16.",
        choices=["auto", "float32", "bfloat16", "float16"],
    )
    max_seq_len: int | None = _f(
        None,
        "Longest prompt+answer in tokens; train pairs are dropped to fit (default: registry's).",
    )
    format: str = _f("digits", "Grid text format (see encoding.FORMATS).")
    trust_remote_code: bool = _f(False, "Allow model code from the hub (off unless you ask).")
    shrink_vocab: bool = _f(
        False,
        "Keep only the tokens prompts can contain (digits, newline, prompt words, special "
        "tokens): slices embeddings and lm_head, remaps the tokenizer (vocab.load_shrunk).",
    )
    rope_scaling: str | None = _f(
        None,
        "Stretch the model's context: linear:FACTOR or yarn:FACTOR (e.g. yarn:4 takes a 2k "
        "model to 8k), written into the model config that transformers and vLLM both read. "
        "Fine-tune with it (`arc-ttft finetune`) before relying on the longer prompts.",
    )

    def problems(self) -> list[str]:
        out = []
        if self.max_seq_len is not None and self.max_seq_len < 64:
            out.append(f"max_seq_len: {self.max_seq_len} is too short for any ARC task; use >= 64")
        if self.rope_scaling is not None:
            kind, _, factor = self.rope_scaling.partition(":")
            try:
                ok = kind in ("linear", "yarn") and float(factor) > 1
            except ValueError:
                ok = False
            if not ok:
                out.append(
                    f"rope_scaling: {self.rope_scaling!r} is not linear:FACTOR or yarn:FACTOR "
                    "with FACTOR > 1; e.g. --rope-scaling yarn:4"
                )
        from arc_ttft.models import find_candidate  # no torch: models imports it lazily

        cand = find_candidate(self.model)
        if cand is not None and cand.grid_format and cand.grid_format != self.format:
            out.append(
                f"format: {self.model} was trained on the {cand.grid_format!r} grid format, "
                f"not {self.format!r}; use --format {cand.grid_format}"
            )
        return out


@dataclass
class LoraTraining:
    """The LoRA and optimizer fields TTT and ``arc-ttft finetune`` share (each config
    class inherits them; finetune changes three defaults)."""

    lora_rank: int = _f(16, "LoRA rank.")
    lora_alpha: float = _f(
        32.0, "LoRA alpha (scale = alpha / rank, or alpha / sqrt(rank) with rsLoRA)."
    )
    lora_dropout: float = _f(0.0, "LoRA dropout.")
    lora_targets: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that get LoRA adapters (comma separated).",
    )
    use_rslora: bool = _f(False, "Rank-stabilised LoRA scaling.")
    learning_rate: float = _f(1e-4, "Peak learning rate.")
    lr_schedule: str = _f(
        "cosine", "Schedule after warm-up.", choices=["cosine", "linear", "constant"]
    )
    warmup_steps: int = _f(2, "Linear warm-up steps.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    label_mode: str = _f(
        "answer",
        "Which tokens carry loss: the answer grid only, or every output grid after the first.",
        choices=["answer", "outputs"],
    )
    gradient_checkpointing: bool = _f(False, "Trade compute for memory (long sequences).")

    def lora_problems(self, need_targets: bool = True) -> list[str]:
        out = at_least(self, 1, "lora_rank") + at_least(self, 0, "warmup_steps")
        if self.learning_rate <= 0:
            out.append(f"learning_rate: {self.learning_rate} must be > 0")
        if not 0 <= self.lora_dropout < 1:
            out.append(f"lora_dropout: {self.lora_dropout} must be in [0, 1)")
        if need_targets and not self.lora_targets:
            out.append("lora_targets: empty; name at least one module, e.g. q_proj,v_proj")
        return out


@dataclass
class TTTConfig(LoraTraining):
    ttt_steps: int = _f(
        32, "Optimizer steps per task (0 = no test-time fine-tuning).", aliases=["--steps"]
    )
    batch_size: int = _f(1, "Sequences per step (packed without padding when > 1).")
    ttt_views: int | None = _f(
        None,
        "Distinct augmented views in a task's training data, cycled (default: a fresh view "
        "for every pass over the pairs; 1 = the plain task only).",
    )
    ttt_transforms: str = _f(
        "dihedral",
        "Geometric transforms of the training views: dihedral (all 8), central (identity and "
        "rot180, which keep every rotation, flip and transpose rule) or none (colours and "
        "pair order only).",
        choices=["dihedral", "central", "none"],
    )
    ttt_colours: str = _f(
        "permute",
        "Colours of the training views: permute (a random permutation, background kept: "
        "keeps every rule that treats colours alike), own (the task's colours: keeps a fixed "
        "colour rule such as '5 becomes 8', which every permutation turns into another map), "
        "or fit: train the task twice, permuted under --ttt-transforms and own-coloured "
        "under all 8 dihedral transforms, half the steps each, and keep the own-coloured "
        "adapter only when its loss ends under half the permuted one's (views that keep a "
        "task's rule can all be fitted by one rule).",
        choices=["permute", "own", "fit"],
    )
    adapter_mode: str = _f(
        "per-task",
        "per-task: a fresh adapter per task; shared: one adapter for all tasks; "
        "continue: start each task from --base-adapter.",
        choices=["per-task", "shared", "continue"],
    )
    base_adapter: str | None = _f(None, "Adapter folder to start from (adapter_mode=continue).")
    lora_dtype: str = _f(
        "float32",
        "dtype the LoRA weights compute in: float32 (peft's upcast of the adapter, exact), or "
        "bfloat16 (the adapter runs in bf16 like the base, with fp32 master weights in the "
        "optimizer: less activation memory and time, for bf16 bases).",
    )
    ttt_max_seconds: float | None = _f(
        None, "Wall-clock cap per task's training, checked every step."
    )
    seed: int = _f(0, "Seed for views, sampling and initialisation.")

    def problems(self) -> list[str]:
        out = self.lora_problems() + at_least(self, 0, "ttt_steps")
        out += at_least(self, 1, "ttt_views", "batch_size")
        if self.lora_dtype not in ("float32", "bfloat16"):
            out.append(f"lora_dtype: {self.lora_dtype!r} must be float32 or bfloat16")
        if self.adapter_mode == "continue" and not self.base_adapter:
            out.append("base_adapter: adapter_mode=continue needs --base-adapter PATH")
        if self.ttt_colours == "fit" and self.adapter_mode == "shared":
            out.append(
                "ttt_colours: fit picks views per task; use --ttt-colours permute or own "
                "with adapter_mode=shared"
            )
        return out


@dataclass
class InferConfig:
    backend: str = _f(
        "auto",
        "Inference backend: auto (vLLM when usable), vllm, hf.",
        choices=["auto", "vllm", "hf"],
    )
    views: int = _f(8, "Augmented views per test input (the identity view first).")
    view_transforms: str = _f(
        "auto",
        "Geometric transforms of the inference and re-scoring views (as --ttt-transforms); "
        "auto: a task's adapter is asked in the views it was trained in (--ttt-transforms, "
        "and its own colours where --ttt-colours kept them), the base model in all 8.",
        choices=["auto", "dihedral", "central", "none"],
    )
    base_votes: bool = _f(
        False,
        "Also ask every view of a fine-tuned task without its adapter and pool those answers "
        "into the vote: TTT fixes some tasks and breaks others, and the base model's votes "
        "keep what it already solved. Doubles the generation work of fine-tuned tasks.",
    )
    sampling: str = _f(
        "auto",
        "How a view's answers are generated: greedy (one argmax answer), sample (--samples "
        "at --temperature), dfs (depth-first search: every answer whose probability stays "
        ">= --min-prob, the ARChitects' and NVARC's method). auto: dfs on a CUDA GPU, where "
        "the anchors used it, with vLLM; greedy elsewhere (or sample when --samples > 1): "
        "the transformers backend walks DFS one prompt at a time (auto.py says why).",
        choices=["auto", "greedy", "sample", "dfs"],
    )
    min_prob: float = _f(
        0.1,
        "DFS: keep a branch while its probability stays >= this (published: 0.17 and 0.10 "
        "ARChitects 2024, 0.07 ARChitects 2025, 0.2 NVARC).",
    )
    dfs_max_candidates: int = _f(8, "DFS: at most this many answers per view (most likely first).")
    dfs_max_nodes: int = _f(
        4096,
        "DFS: at most this many expanded nodes (one token forward each) per view; bounds the "
        "cost of a flat distribution.",
    )
    scorer: str = _f(
        "auto",
        "How candidates are ranked: vote (count, then mean log-prob), poe (product of experts "
        "over --rescore views + vote weight), nvarc (views that found it - mean NLL under "
        "--rescore views), architects (sum over finding views of 3 - NLL + mean over them of "
        "the augmented 3 - NLL sum). auto: architects with dfs, else poe when --rescore > 0, "
        "else vote.",
        choices=["auto", "vote", "poe", "nvarc", "architects"],
    )
    samples: int = _f(1, "Samples per view (1 = greedy; diversity comes from the views).")
    temperature: float = _f(0.0, "Sampling temperature (0 = greedy).")
    rescore: int | None = _f(
        None,
        "Re-score each distinct candidate under M other views (0 = off, vote only). "
        "Default: 8 on a GPU (the ARChitects' and NVARC's 8 augmentations), 4 on a CPU.",
    )
    rescore_vote_weight: float = _f(
        1.0,
        "Re-scoring rank = summed log-likelihood over the M views + this x log(vote count) "
        "(0 = pure product of experts).",
    )
    max_new_tokens: int | None = _f(
        None, "Cap on generated tokens (default: the largest plausible output grid + margin)."
    )
    probe_tasks: int = _f(
        16,
        "Before TTT, the base model answers this many tasks, so that the time TTT leaves "
        "for inference is measured rather than guessed (their answers are kept as "
        "fallbacks). 0 = off.",
    )
    infer_batch_size: int = _f(16, "Prompts per generate call for the transformers backend.")
    infer_timeout_s: float = _f(1800.0, "Abandon an inference call after this many seconds.")
    gpu_memory_utilization: float = _f(0.85, "vLLM: share of GPU memory for weights + KV cache.")
    enforce_eager: bool = _f(False, "vLLM: no CUDA graphs (less memory, slower).")
    fallback: str = _f(
        "input",
        "Attempts for tasks without predictions: the test input then [[0]], or zeros.",
        choices=["input", "zeros"],
    )

    def problems(self) -> list[str]:
        out = at_least(self, 1, "views", "samples", "dfs_max_candidates", "dfs_max_nodes")
        out += at_least(self, 0, "rescore", "probe_tasks")
        if self.samples > 1 and self.temperature == 0:
            out.append(
                "temperature: samples > 1 with temperature 0 gives identical samples; set > 0"
            )
        if not 0 < self.min_prob < 1:
            out.append(f"min_prob: {self.min_prob} must be in (0, 1), e.g. 0.1")
        if self.sampling == "sample" and self.temperature <= 0:
            out.append("temperature: --sampling sample needs a temperature > 0, e.g. 1.0")
        if self.scorer in ("nvarc", "architects") and self.rescore is not None and self.rescore < 1:
            out.append(
                f"rescore: the {self.scorer} scorer scores under --rescore views; set >= 1 "
                "(8 in the published recipes)"
            )
        if self.infer_timeout_s <= 0:
            out.append(f"infer_timeout_s: {self.infer_timeout_s} must be > 0")
        if not 0 < self.gpu_memory_utilization <= 1:
            out.append(f"gpu_memory_utilization: {self.gpu_memory_utilization} must be in (0, 1]")
        return out


@dataclass
class BudgetConfig:
    budget_hours: float = _f(12.0, "Wall-clock budget for the whole run, from its start.")
    budget_minutes: float | None = _f(None, "Budget in minutes (overrides --budget-hours).")
    safety_margin_minutes: float | None = _f(
        None, "Kept free at the end (default: 5% of the budget, at most 30 minutes)."
    )
    started_at: float | None = _f(
        None,
        "Unix time (time.time()) the budget's clock started: Kaggle counts 12 hours from "
        "the notebook's start, installs and loading included, so the submit notebook sets it "
        "in its first cell. Default: $ARC_TTFT_STARTED_AT, else the start of `run`.",
    )

    def budget_seconds(self) -> float:
        if self.budget_minutes is not None:
            return self.budget_minutes * 60.0
        return self.budget_hours * 3600.0

    def margin_seconds(self) -> float:
        if self.safety_margin_minutes is not None:
            return self.safety_margin_minutes * 60.0
        return min(0.05 * self.budget_seconds(), 1800.0)

    def problems(self) -> list[str]:
        out = []
        if self.budget_seconds() <= 0:
            out.append("budget_hours/budget_minutes: the budget must be > 0")
        elif (
            self.safety_margin_minutes is not None
            and self.margin_seconds() >= self.budget_seconds()
        ):
            out.append("safety_margin_minutes: must be smaller than the budget")
        return out


@dataclass
class RunConfig:
    """Everything `arc-ttft run` (and the submit notebook) needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    output: str = _f("runs/latest", "Output folder (submission.json, config.json, run.jsonl, ...).")
    resume: bool = _f(False, "Reuse per-task results already in --output.")
    workers: int | None = _f(
        None, "Worker processes, tasks sharded by cost (default: one per visible GPU, 1 on CPU)."
    )
    profile: str = _f(
        "auto",
        "The machine every `auto` decides for: auto (this one), kaggle-gpu (as on Kaggle's "
        "GPUs with vLLM: vllm, dfs, architects, 8 scoring views, 2 workers; the run still "
        "executes here, so a CPU shows the GPU path), cpu. config.json records the choices.",
        choices=["auto", "kaggle-gpu", "cpu"],
    )
    scratch_dir: str | None = _f(
        None,
        "Folder for bulky per-run files (LoRA adapters). Default: <output>/adapters. The "
        "submit notebook uses /tmp on Kaggle, where /kaggle/working has a size limit.",
    )


# ---------------------------------------------------------------------------------------
# Validation, flattening, (de)serialisation
# ---------------------------------------------------------------------------------------


def problems(cfg: Any) -> list[str]:
    """Every problem of a (nested) config, one line each."""
    out: list[str] = []
    if hasattr(cfg, "problems"):
        out += cfg.problems()
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += problems(v)
    return out


def validate(cfg: Any) -> Any:
    """Raise ConfigError listing every problem; return the config when it is valid."""
    found = problems(cfg)
    if found:
        raise ConfigError(found)
    return cfg


def flat_fields(cls: type) -> dict[str, tuple[dataclasses.Field, type]]:
    """name -> (field, resolved type) for every leaf field of a (nested) config class."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[dataclasses.Field, type]] = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            sub = flat_fields(t)
            clash = set(sub) & set(out)
            assert not clash, f"duplicate config field names: {clash}"
            out.update(sub)
        else:
            out[f.name] = (f, t)
    return out


def _unwrap_optional(t: Any) -> tuple[Any, bool]:
    args = typing.get_args(t)
    if (typing.get_origin(t) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return t, False


def _parse_value(t: Any, raw: Any) -> Any:
    """Convert a CLI string (or notebook value) to the field's type."""
    base, optional = _unwrap_optional(t)
    if raw is None or (optional and isinstance(raw, str) and raw.lower() in ("none", "")):
        return None
    if typing.get_origin(base) is list:
        if isinstance(raw, str):
            return [s.strip() for s in raw.split(",") if s.strip()]
        return list(raw)
    if base is bool:
        if isinstance(raw, str):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        return bool(raw)
    if base is int and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return base(raw)


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, only: list[str] | None = None
) -> None:
    """Add one flag per leaf field of ``cls`` (``--field-name``; bools take true/false or no value)."""
    for name, (f, t) in flat_fields(cls).items():
        if only is not None and name not in only:
            continue
        flags = ["--" + name.replace("_", "-")] + list(f.metadata.get("aliases", []))
        base, _ = _unwrap_optional(t)
        kw: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": (f.metadata.get("help") or "").replace("%", "%%"),  # argparse %-formats help
        }
        if base is bool:
            kw.update(nargs="?", const="true", metavar="BOOL")
        elif "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        parser.add_argument(*flags, **kw)


def from_flat(cls: type, values: dict[str, Any]) -> Any:
    """Build a (nested) config from flat ``{field: value}``; values may be strings.

    Unknown names raise ConfigError listing them (typos in notebook parameters must not
    pass silently).
    """
    known = flat_fields(cls)
    if "model" in known:
        given = model_defaults(values.get("model", known["model"][0].default))
        values = {**{k: v for k, v in given.items() if k in known}, **values}
    unknown = sorted(set(values) - set(known))
    errors = [f"{u}: unknown parameter" for u in unknown]

    def build(c: type) -> Any:
        hints = typing.get_type_hints(c)
        kwargs = {}
        for f in dataclasses.fields(c):
            t = hints[f.name]
            if dataclasses.is_dataclass(t):
                kwargs[f.name] = build(t)
            elif f.name in values:
                try:
                    kwargs[f.name] = _parse_value(t, values[f.name])
                except (TypeError, ValueError) as e:
                    errors.append(f"{f.name}: cannot read {values[f.name]!r} ({e})")
        return c(**kwargs)

    cfg = build(cls)
    if errors:
        raise ConfigError(errors)
    return cfg


def model_defaults(model: Any) -> dict[str, Any]:
    """The settings registered as best for ``model`` (``Candidate.run_defaults``, and its
    ``grid_format`` as ``format``), which ``from_flat`` puts under the values it is given."""
    from arc_ttft.models import find_candidate  # no torch: models imports it lazily

    cand = find_candidate(str(model))
    if cand is None:
        return {}
    out = dict(cand.run_defaults)
    if cand.grid_format:  # the format it was trained on (arc-nano3: shaped)
        out.setdefault("format", cand.grid_format)
    return out


def from_namespace(cls: type, ns: argparse.Namespace) -> Any:
    known = flat_fields(cls)
    return from_flat(cls, {k: v for k, v in vars(ns).items() if k in known})


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_flat(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(to_flat(v))
        else:
            out[f.name] = v
    return out


def command_line(cfg: Any, command: str, always: tuple[str, ...] = ()) -> str:
    """The `arc-ttft COMMAND` line that reproduces ``cfg``: the flags that differ from the
    defaults, and those in ``always`` first."""
    values, default = to_flat(cfg), to_flat(type(cfg)())
    parts = ["arc-ttft", command]
    for k in [*always, *(k for k in values if k not in always)]:
        v = values[k]
        if v == default[k] and k not in always:
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else f"{flag} false")
        elif isinstance(v, list):
            parts += [flag, ",".join(map(str, v))]
        elif v is not None:
            parts += [flag, f"{v:g}" if isinstance(v, float) else str(v)]
    return " ".join(parts)


def save(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON (nested, as the dataclasses are)."""
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load(cls: type, path: str | Path) -> Any:
    """Read a config written by ``save``."""
    return from_flat(cls, to_flat_dict(json.loads(Path(path).read_text())))


def to_flat_dict(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(to_flat_dict(v))
        else:
            out[k] = v
    return out
