"""``FinetuneConfig``: the parameters of `arc-ttft finetune` (training/finetune.py), built
from the shared pieces of ``arc_ttft.config`` (``LoraTraining``, ``ModelConfig``, the
field helper and the validation every config uses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from arc_ttft.config import LoraTraining, ModelConfig, at_least
from arc_ttft.config import option as _f


def mix_problems(items: list[str]) -> list[str]:
    """Problems of a ``--data`` mix (FinetuneConfig.data), one line each."""
    import os

    from arc_ttft.bundled_sets import BUNDLED_SETS  # numpy only, no torch

    out = []
    for item in items:
        source = item[len("-holdout:") :] if item.startswith("-holdout:") else item
        if source.startswith("generated:"):
            n = source[len("generated:") :]
            if not (n.isdigit() and int(n) >= 1):
                out.append(f"data: {item!r}: generated:N needs a count N >= 1, e.g. generated:200")
        elif source.startswith("-"):
            out.append(
                f"data: {item!r}: the only exclusion is -holdout:SET, e.g. -holdout:arc1-eval"
            )
        elif source not in BUNDLED_SETS and not os.path.exists(source):
            out.append(
                f"data: {item!r} is neither a bundled set ({', '.join(BUNDLED_SETS)}), "
                "generated:N, -holdout:SET nor an existing challenges file or folder"
            )
    if items and all(i.startswith("-holdout:") for i in items):
        out.append("data: only -holdout items; name the tasks to train on, e.g. arc1-train,...")
    return out


@dataclass
class FinetuneConfig(LoraTraining):
    """Everything `arc-ttft finetune` needs: train a base model on ARC tasks, in the
    prompt format TTT and inference use (training/finetune.py)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: list[str] = _f(
        ["arc1-train"],
        "Training data mix, comma separated: arc1-train, arc1-eval, arc2-train, arc2-eval, a "
        "challenges file or folder, generated:N (N seeded synthetic tasks); -holdout:SET "
        "removes SET's tasks (or --holdout-fraction of them) and writes their ids to "
        "OUTPUT/holdout.json, e.g. arc1-train,arc1-eval,-holdout:arc1-eval.",
    )
    holdout_fraction: float = _f(
        1.0,
        "Share of each -holdout SET held out (seeded); the rest of SET stays in training "
        "when SET is also in the mix. 0.1 trains on 90% of SET.",
    )
    max_tasks_per_source: int | None = _f(
        None, "Use a seeded sample of at most N tasks of each named source (quick runs)."
    )
    generated_min_size: int = _f(3, "generated:N: smallest input side.")
    generated_max_size: int = _f(10, "generated:N: largest input side.")
    generated_families: str = _f(
        "default",
        "generated:N: rule families, comma separated; 'default' is arc-nano's 14 (dihedral, "
        "colour maps, crop, scale2, mirrors), 'all' adds scale3, tile, colour_map_wide, "
        "gravity, fill_enclosed, connect_lines, crop_largest and denoise.",
    )
    real_samples_per_task: int | None = _f(
        None,
        "Samples per task of the named sources (bundled sets, files), to weigh real tasks "
        "against generated ones (default: --samples-per-task).",
    )
    samples_per_task: int = _f(
        8,
        "Leave-one-out samples per task (ttt_samples.make_samples: each under a random view: "
        "dihedral x colour permutation x pair order); a task's test pairs with known "
        "outputs join its train pairs.",
    )
    transforms: str = _f(
        "dihedral",
        "Geometric transforms of the views (as --ttt-transforms).",
        choices=["dihedral", "central", "none"],
    )
    full: bool = _f(False, "Train every weight instead of a LoRA adapter.")
    add_layers: int = _f(
        0,
        "Decoder layers to insert before training (with --full), spread evenly, each a copy "
        "of the layer before it with its output projections zeroed: a deeper model that "
        "starts out answering exactly as --model does.",
    )
    # LoraTraining's fields, three with other defaults: a base wants a larger adapter.
    lora_rank: int = _f(64, "LoRA rank.")
    lora_alpha: float = _f(64.0, "LoRA alpha.")
    warmup_steps: int = _f(10, "Linear warm-up steps.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 = off).")
    batch_size: int = _f(
        4,
        "Sequences per step and device (equal lengths as rows, others packed into one row "
        "without padding, as TTT does).",
    )
    grad_accum: int = _f(1, "Gradient accumulation steps (global batch = batch x devices x this).")
    epochs: float = _f(1.0, "Passes over the samples (when --max-steps is not set).")
    max_steps: int | None = _f(None, "Optimizer steps (default: from --epochs).")
    budget_minutes: float | None = _f(
        None,
        "Wall-clock budget of this process's training: when it runs out, training stops "
        "cleanly and the output folder is written as if it had finished.",
    )
    checkpoint_minutes: float | None = _f(
        30.0,
        "Write a resumable checkpoint (OUTPUT/checkpoints) every N minutes (0 = every step, "
        "unset = never).",
    )
    resume: bool = _f(False, "Continue from the newest checkpoint in --output.")
    save_adapter: bool = _f(
        False,
        "Write the LoRA adapter (OUTPUT/adapter, for --adapter-mode continue --base-adapter) "
        "instead of a merged model (OUTPUT/model).",
    )
    seed: int = _f(0, "Seed for the data order, views, holdout and initialisation.")
    output: str = _f(
        "runs/finetune",
        "Output folder: model/ (or adapter/), config.json, holdout.json, train_tasks.json, "
        "losses.csv, summary.json, checkpoints/.",
    )

    def problems(self) -> list[str]:
        out = self.lora_problems(need_targets=not self.full)
        out += at_least(
            self, 1, "samples_per_task", "real_samples_per_task", "batch_size", "grad_accum",
            "max_steps",
        )  # fmt: skip
        if self.generated_families not in ("default", "all"):
            from arc_ttft.training.synthetic import SPECS  # numpy only, no torch

            unknown = [f for f in self.generated_families.split(",") if f.strip() not in SPECS]
            if unknown:
                out.append(
                    f"generated_families: unknown {', '.join(unknown)}; use 'default', 'all' "
                    f"or names from {', '.join(sorted(SPECS))}"
                )
        if not self.data:
            out.append("data: empty; give a mix, e.g. --data arc1-train")
        out += mix_problems(self.data)
        if not 0 < self.holdout_fraction <= 1:
            out.append(f"holdout_fraction: {self.holdout_fraction} must be in (0, 1], e.g. 0.1")
        if self.max_tasks_per_source is not None and self.max_tasks_per_source < 1:
            out.append(f"max_tasks_per_source: {self.max_tasks_per_source} must be >= 1 (or unset)")
        if not 1 <= self.generated_min_size <= self.generated_max_size <= 30:
            out.append(
                f"generated_min_size/generated_max_size: {self.generated_min_size}.."
                f"{self.generated_max_size} must satisfy 1 <= min <= max <= 30"
            )
        if self.max_grad_norm < 0:
            out.append(f"max_grad_norm: {self.max_grad_norm} must be >= 0 (0 = no clipping)")
        if self.epochs <= 0:
            out.append(f"epochs: {self.epochs} must be > 0")
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            out.append(f"budget_minutes: {self.budget_minutes} must be > 0 (or unset)")
        if self.checkpoint_minutes is not None and self.checkpoint_minutes < 0:
            out.append(f"checkpoint_minutes: {self.checkpoint_minutes} must be >= 0 (or unset)")
        if self.add_layers < 0 or (self.add_layers and not self.full):
            out.append(
                f"add_layers: {self.add_layers} needs --full and must be >= 0 (a LoRA "
                "adapter cannot train the new layers' zeroed projections)"
            )
        if self.full and self.model.int4:
            out.append("full: 4-bit weights cannot be trained directly; drop --int4 or --full")
        if self.full and self.save_adapter:
            out.append(
                "save_adapter: a full fine-tune has no adapter; drop --save-adapter or --full"
            )
        if not self.output:
            out.append("output: empty; give a folder, e.g. --output runs/finetune")
        return out
