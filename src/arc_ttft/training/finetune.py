"""`arc-ttft finetune`: train a base model on ARC tasks before test-time fine-tuning.

The model learns exactly what TTT and inference will show it: the samples are
``ttt_samples.make_samples`` (leave-one-out prompts from ``encoding.build_prompt``, each under a
random view: dihedral x colour permutation x pair order), batched by ``ttt_samples.pack``
(equal lengths as rows, others packed into one row without padding) and scored by
``ttt_samples.answer_loss`` (logits only where the loss is).

Data mixes (``FinetuneConfig.data``): bundled sets, challenges files or folders and
``generated:N``, minus ``-holdout:SET`` (all of SET, or a seeded ``holdout_fraction``
of it). The held-out ids go to ``OUTPUT/holdout.json`` so that an evaluation uses
exactly them; the trained ids to ``OUTPUT/train_tasks.json``.

Training runs on ``transformers.Trainer``: it brings gradient accumulation, the cosine
schedule with warm-up, resumable checkpoints (optimizer, scheduler, RNG and data
position) and data parallelism under ``torchrun`` (DDP, gloo on CPU). ``_Clock`` adds
what Trainer lacks: checkpoints every N minutes and a wall-clock budget, decided on rank
0 and broadcast so that every rank stops (or saves) at the same step. The loss is the
sum over the answer tokens of the whole global batch divided by their count (Trainer's
``num_items_in_batch``), so any split into devices x accumulation gives the same update.

Output (``OUTPUT/``): ``model/`` (merged weights, tokenizer, config.json and a model
card: ``arc-ttft run --model OUTPUT/model``) or, with ``save_adapter``, ``adapter/``
(for ``--adapter-mode continue --base-adapter OUTPUT/adapter``); ``config.json`` (the
resolved FinetuneConfig), ``holdout.json``, ``train_tasks.json``, ``losses.csv``,
``summary.json`` and ``checkpoints/``.

Over 500 lines: data mixes, the Trainer with its checkpoint/budget/DDP care and the
model card of one command.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from arc_ttft import config as C
from arc_ttft.tasks import Example, Task, grid, load_tasks
from arc_ttft.training.config import FinetuneConfig

HOLDOUT = "-holdout:"
GENERATED = "generated:"


# ---------------------------------------------------------------------------------------
# Data mixes
# ---------------------------------------------------------------------------------------


@dataclass
class MixData:
    """The tasks a mix resolves to: what trains, what is held out, and where each came from."""

    train: list[Task]
    holdout_ids: list[str]
    source_of: dict[str, str] = field(default_factory=dict)  # task id -> mix item


def load_source(item: str, cfg: FinetuneConfig) -> list[Task]:
    """The tasks of one mix item (no ``-holdout:`` prefix), test outputs filled where known.

    ``max_tasks_per_source`` keeps a seeded sample (in load order), the same one in every
    process and for the include and the holdout side of a mix.
    """
    if item.startswith(GENERATED):
        from arc_ttft.training import synthetic

        n = int(item[len(GENERATED) :])
        families = None if cfg.generated_families == "default" else cfg.generated_families
        challenges, solutions = synthetic.generate(
            n, cfg.seed, families, cfg.generated_min_size, cfg.generated_max_size
        )
        tasks = [
            Task(
                tid,
                [Example(grid(p["input"]), grid(p["output"])) for p in raw["train"]],
                [Example(grid(t["input"]), grid(o)) for t, o in zip(raw["test"], solutions[tid])],
            )
            for tid, raw in challenges.items()
        ]
    else:
        tasks = load_tasks(item, skip_invalid=True).tasks
    cap = cfg.max_tasks_per_source
    if cap is not None and len(tasks) > cap:
        keep = set(random.Random(f"{cfg.seed}:{item}").sample(range(len(tasks)), cap))
        tasks = [t for i, t in enumerate(tasks) if i in keep]
    return tasks


def holdout_ids(tasks: list[Task], fraction: float, seed: int, item: str) -> list[str]:
    """A seeded ``fraction`` of ``tasks`` (at least one), as sorted ids."""
    ids = sorted(t.id for t in tasks)
    k = max(1, round(fraction * len(ids))) if ids else 0
    return sorted(random.Random(f"{seed}:holdout:{item}").sample(ids, k))


def grid_keys(task: Task) -> set[bytes]:
    """Fingerprints of a task's distinctive grids (inputs and outputs of every pair): at
    least 9 cells and two colours, so that a blank or tiny grid two unrelated tasks share
    by chance does not count as the same task."""
    keys = set()
    for ex in [*task.train, *task.test]:
        for g in (ex.input, ex.output):
            if g is not None and g.size >= 9 and len(set(g.ravel().tolist())) > 1:
                keys.add(bytes(g.shape) + g.astype("int8").tobytes())
    return keys


def copies_held(task: Task, held_grids: set[bytes]) -> bool:
    """Whether ``task`` copies a held-out task: it shares two of its distinctive grids with
    the held-out set, or half of them. One small grid in common happens by chance (nine
    ARC-AGI-1 training tasks share one 3x3 to 4x4 grid with an evaluation task)."""
    keys = grid_keys(task)
    shared = len(keys & held_grids)
    return shared >= 2 or (shared > 0 and 2 * shared >= len(keys))


def resolve_mix(cfg: FinetuneConfig) -> MixData:
    """Training tasks (first occurrence of an id wins) minus the held-out tasks: by id,
    and by grids, since sets copy each other's tasks (ARC-AGI-2's training set holds
    ARC-AGI-1 evaluation tasks, some under other ids)."""
    held: set[str] = set()
    held_grids: set[bytes] = set()
    for item in cfg.data:
        if item.startswith(HOLDOUT):
            source = item[len(HOLDOUT) :]
            tasks = load_source(source, cfg)
            ids = set(holdout_ids(tasks, cfg.holdout_fraction, cfg.seed, source))
            held |= ids
            held_grids |= {k for t in tasks if t.id in ids for k in grid_keys(t)}
    train: list[Task] = []
    source_of: dict[str, str] = {}
    for item in cfg.data:
        if item.startswith(HOLDOUT):
            continue
        for t in load_source(item, cfg):
            if t.id in held or t.id in source_of or copies_held(t, held_grids):
                continue
            source_of[t.id] = item
            train.append(t)
    return MixData(train, sorted(held), source_of)


def with_known_tests(task: Task) -> Task:
    """The task's test pairs with known outputs become train pairs: more to learn from."""
    extra = [ex for ex in task.test if ex.output is not None]
    return Task(task.id, list(task.train) + extra, [])


def build_samples(
    tasks: list[Task],
    cfg: FinetuneConfig,
    tokenizer,
    max_seq_len: int,
    source_of: dict[str, str] | None = None,
) -> list:
    """``samples_per_task`` leave-one-out samples per task (ttt_samples.make_samples), or
    ``real_samples_per_task`` for a task of a named source (``source_of``: id -> mix
    item), those over ``max_seq_len`` or without an answer token dropped."""
    from arc_ttft import ttt_samples

    source_of = source_of or {}
    out = []
    for t in tasks:
        real = not source_of.get(t.id, GENERATED).startswith(GENERATED)
        made = ttt_samples.make_samples(
            with_known_tests(t),
            cfg.model.format,
            tokenizer,
            cfg.real_samples_per_task
            if real and cfg.real_samples_per_task
            else cfg.samples_per_task,
            cfg.seed + ttt_samples.task_seed(t.id),
            max_seq_len,
            cfg.label_mode,
            transforms=cfg.transforms,
        )
        out += [s for s in made if len(s.input_ids) <= max_seq_len and s.n_answer > 0]
    return out


# ---------------------------------------------------------------------------------------
# Trainer pieces
# ---------------------------------------------------------------------------------------


def ttt_config(cfg: FinetuneConfig) -> C.TTTConfig:
    """The TTTConfig whose LoRA fields ``ttt.prepare_peft_model`` reads."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(C.LoraTraining)}
    return C.TTTConfig(**shared, seed=cfg.seed)


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _rank0_decides(*flags: bool) -> list[bool]:
    """Rank 0's flags on every rank: wall clocks differ, and a rank that stops alone
    would leave the others waiting in the next all-reduce."""
    if not _dist_ready():
        return list(flags)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(f) for f in flags])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return [bool(v) for v in t.tolist()]


def _make_clock(budget_s: float | None, checkpoint_s: float | None):
    from transformers import TrainerCallback

    class _Clock(TrainerCallback):
        """Wall-clock budget and time-based checkpoints, checked after every step."""

        def __init__(self) -> None:
            self.start = self.last_save = time.monotonic()
            self.stopped = False
            self.steps = 0  # steps of this process (a resumed run starts past 0)

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.last_save = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1
            now = time.monotonic()
            stop = budget_s is not None and now - self.start >= budget_s
            save = checkpoint_s is not None and now - self.last_save >= checkpoint_s
            stop, save = _rank0_decides(stop, save)
            if save and not stop:  # a budget stop writes the final folder instead
                control.should_save = True
                self.last_save = now
            if stop:
                control.should_training_stop = True
                self.stopped = True
            return control

    return _Clock()


def _make_trainer(model, args, dataset, collate, callbacks):
    from transformers import Trainer

    from arc_ttft import ttt_samples

    class _AnswerTrainer(Trainer):
        # compute_loss divides by the answer tokens of the whole accumulated global batch
        loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mean, n = ttt_samples.answer_loss(model, inputs)
            if num_items_in_batch is None:  # Trainer did not count: fall back to batch means
                return mean / self.args.gradient_accumulation_steps
            # DDP averages gradients over ranks; the sum over all ranks' tokens wants a sum.
            return mean * n / num_items_in_batch * self.accelerator.num_processes

    return _AnswerTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collate, callbacks=callbacks
    )


class _Samples:
    """A map-style dataset of pre-tokenised samples (Trainer samples and shards it)."""

    def __init__(self, samples: list) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.samples[i]


def _collate(samples: list) -> dict:
    from arc_ttft import ttt_samples

    return ttt_samples.pack(samples)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (Trainer writes trainer_state.json last, so a
    checkpoint killed while being written has none, or a truncated one)."""
    done = []
    for p in folder.glob("checkpoint-*"):
        try:
            json.loads((p / "trainer_state.json").read_text())
            done.append((int(p.name.split("-")[1]), p))
        except (OSError, ValueError, IndexError):
            continue
    return max(done)[1] if done else None


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _load(cfg: FinetuneConfig, device: str):
    """(model, tokenizer, source folder) for training, LoRA-wrapped unless ``full``."""
    import dataclasses

    from arc_ttft import models, ttt

    mcfg = cfg.model
    if mcfg.shrink_vocab:
        from arc_ttft import shrunk_vocab as vocab

        folder = vocab.shrunk_folder(mcfg)
        mcfg = dataclasses.replace(
            mcfg, model=str(folder), shrink_vocab=False, random_weights=False
        )
    if cfg.full and mcfg.dtype == "auto":
        # fp32 master weights; Trainer autocasts to bf16/fp16 on GPUs (mixed precision)
        mcfg = dataclasses.replace(mcfg, dtype="float32")
    model, tok = models.load_model(mcfg, device=device, for_training=True)
    if not cfg.full:
        model = ttt.prepare_peft_model(model, ttt_config(cfg))
        ttt.reset_adapter(model, cfg.seed)
    return model, tok, mcfg


def _precision(cfg: FinetuneConfig, device: str) -> dict[str, bool]:
    import torch

    from arc_ttft import models

    dt = models.resolve_dtype(cfg.model.dtype, device)
    if not device.startswith("cuda"):
        return {}
    return {"bf16": dt == torch.bfloat16, "fp16": dt == torch.float16}


# ---------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    """What a fine-tune wrote and how it ended."""

    output: Path
    model_dir: Path | None  # merged model (None with save_adapter, and on ranks > 0)
    adapter_dir: Path | None
    steps: int  # global step reached (a resumed run counts the steps before the kill)
    steps_run: int  # steps this process ran
    final_loss: float | None
    losses: list[float]
    stop_reason: str  # max_steps | budget
    seconds: float
    n_train_tasks: int
    n_samples: int
    holdout_ids: list[str]
    resumed_from: str | None = None


def run(
    cfg: FinetuneConfig,
    *,
    model=None,
    tokenizer=None,
    command: str | None = None,
    progress: bool = True,
    card_title: str | None = None,
) -> FinetuneResult:
    """Fine-tune ``cfg.model`` (or the given ``model``/``tokenizer``, e.g. a fresh one for
    training from scratch) on ``cfg.data``; write ``cfg.output`` (module docstring)."""
    from transformers import TrainingArguments
    from transformers.utils import logging as hf_logging

    from arc_ttft import models

    C.validate(cfg)
    out = Path(cfg.output)
    ckpt_dir = out / "checkpoints"
    rank0 = int(os.environ.get("RANK", "0")) == 0
    resume_from = latest_checkpoint(ckpt_dir) if cfg.resume else None
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)  # a fresh run must not resume an older one by accident
    device = models.default_device()
    if device != "cpu":  # under torchrun, this process's own GPU
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    source = None  # the folder the weights came from (a shrunk copy with shrink_vocab)
    if model is None:
        model, tokenizer, loaded = _load(cfg, device)
        source = Path(loaded.model)
    elif tokenizer is None:
        raise ValueError("finetune.run: a given model needs its tokenizer")
    elif not cfg.full:
        from arc_ttft import ttt

        model = ttt.prepare_peft_model(model, ttt_config(cfg))
        ttt.reset_adapter(model, cfg.seed)
    if cfg.add_layers:  # before Trainer: a resumed checkpoint holds the deeper model
        from arc_ttft.training.deepen import deepen

        deepen(model, cfg.add_layers)
    model.config.use_cache = False  # packing restarts positions: no cache while training

    mix = resolve_mix(cfg)
    if not mix.train:
        raise C.ConfigError([f"data: {','.join(cfg.data)} leaves no task to train on"])
    max_seq_len = models.resolve_max_seq_len(cfg.model)
    samples = build_samples(mix.train, cfg, tokenizer, max_seq_len, mix.source_of)
    if not samples:
        raise C.ConfigError(
            [f"max_seq_len: every sample is longer than {max_seq_len} tokens; raise it"]
        )
    global_batch = cfg.batch_size * cfg.grad_accum * _world_size()
    steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(samples) / global_batch))
    if rank0:
        C.save(cfg, out / "config.json")
        _write_ids(out, cfg, mix)

    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type={"constant": "constant_with_warmup"}.get(
            cfg.lr_schedule, cfg.lr_schedule
        ),
        warmup_steps=cfg.warmup_steps,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",  # _Clock asks for checkpoints by the minute
        save_total_limit=1,
        report_to="none",
        disable_tqdm=not progress,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        average_tokens_across_devices=True,
        ddp_find_unused_parameters=False,
        **_precision(cfg, device),
    )
    budget_s = cfg.budget_minutes * 60 if cfg.budget_minutes is not None else None
    ckpt_s = cfg.checkpoint_minutes * 60 if cfg.checkpoint_minutes is not None else None
    clock = _make_clock(budget_s, ckpt_s)
    trainer = _make_trainer(model, args, _Samples(samples), _collate, [clock])
    if not progress:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the per-step log dicts
        hf_logging.set_verbosity_error()
    t0 = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.monotonic() - t0
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    result = FinetuneResult(
        output=out,
        model_dir=None,
        adapter_dir=None,
        steps=trainer.state.global_step,
        steps_run=clock.steps,
        final_loss=losses[-1] if losses else None,
        losses=losses,
        stop_reason="budget" if clock.stopped else "max_steps",
        seconds=round(seconds, 2),
        n_train_tasks=len(mix.train),
        n_samples=len(samples),
        holdout_ids=mix.holdout_ids,
        resumed_from=str(resume_from) if resume_from else None,
    )
    if trainer.is_world_process_zero():
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        card = model_card(
            cfg,
            result,
            command or C.command_line(cfg, "finetune", always=("model", "data", "output")),
            card_title,
        )
        if cfg.save_adapter:
            result.adapter_dir = _save_folder(unwrapped, tokenizer, out / "adapter", card)
        else:
            merged = _merged(unwrapped, cfg)
            result.model_dir = _save_folder(merged, tokenizer, out / "model", card)
            if source is not None and (source / "vocab_map.json").is_file():
                shutil.copy(source / "vocab_map.json", result.model_dir)  # shrunk: old -> new ids
        _write_losses(out / "losses.csv", trainer.state.log_history)
        summary = {k: v for k, v in result.__dict__.items() if k != "losses"}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if _dist_ready():
        import torch.distributed as dist

        dist.barrier()  # every rank returns once the folder is written
    return result


def _write_ids(out: Path, cfg: FinetuneConfig, mix: MixData) -> None:
    sets = [i[len(HOLDOUT) :] for i in cfg.data if i.startswith(HOLDOUT)]
    holdout = {
        "sets": sets,
        "fraction": cfg.holdout_fraction,
        "seed": cfg.seed,
        "max_tasks_per_source": cfg.max_tasks_per_source,
        "task_ids": mix.holdout_ids,
    }
    if len(sets) == 1 and mix.holdout_ids and not sets[0].startswith(GENERATED):
        holdout["evaluate"] = (
            f"arc-ttft run --challenges {sets[0]} --tasks {','.join(mix.holdout_ids)}"
        )
    (out / "holdout.json").write_text(json.dumps(holdout, indent=1) + "\n")
    train = [{"id": t.id, "source": mix.source_of[t.id]} for t in mix.train]
    (out / "train_tasks.json").write_text(json.dumps(train, indent=0) + "\n")


def _merged(model, cfg: FinetuneConfig):
    """Plain weights to save: the model itself (full), or the LoRA merged into the base
    (a 4-bit base is first reloaded in its compute dtype: nf4 weights cannot take a merge)."""
    if cfg.full:
        return model
    if not cfg.model.int4:
        return model.merge_and_unload()
    import dataclasses

    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from arc_ttft import models, ttt

    state = get_peft_model_state_dict(model)
    mcfg = dataclasses.replace(cfg.model, int4=False)
    if mcfg.shrink_vocab:
        from arc_ttft import shrunk_vocab as vocab

        mcfg = dataclasses.replace(
            mcfg, model=str(vocab.shrunk_folder(cfg.model)), shrink_vocab=False
        )
    base, _ = models.load_model(mcfg, device="cpu")
    base = ttt.prepare_peft_model(base, ttt_config(cfg))
    set_peft_model_state_dict(base, state)
    return base.merge_and_unload()


def _save_folder(model, tokenizer, folder: Path, card: str) -> Path:
    """A model (or adapter) folder with tokenizer and model card, via a temporary folder:
    a kill while saving never leaves a folder that looks finished."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    config = getattr(model, "config", None)
    if config is not None:
        config.use_cache = True  # for inference
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / "README.md").write_text(card)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def _write_losses(path: Path, history: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "learning_rate", "grad_norm"])
        for e in history:
            if "loss" in e:
                w.writerow([e.get("step"), e["loss"], e.get("learning_rate"), e.get("grad_norm")])


def model_card(
    cfg: FinetuneConfig, result: FinetuneResult, command: str, title: str | None = None
) -> str:
    """README.md of the output: data mix, steps, seed, final loss and the exact command."""
    how = "full fine-tune" if cfg.full else f"LoRA rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}"
    if cfg.add_layers:
        how += f" after inserting {cfg.add_layers} identity-initialised decoder layers"
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "-"
    held = (
        f"{len(result.holdout_ids)} held-out task ids in `holdout.json` (fraction "
        f"{cfg.holdout_fraction:g})"
        if result.holdout_ids
        else "no held-out tasks"
    )
    per_task = f"{cfg.samples_per_task} per task"
    if cfg.real_samples_per_task:
        per_task += f", {cfg.real_samples_per_task} per task of a named set"
    generated = ""
    if any(item.startswith(GENERATED) for item in cfg.data):
        generated = (
            f" Generated tasks: families `{cfg.generated_families}`, input sides "
            f"{cfg.generated_min_size}-{cfg.generated_max_size}, seed {cfg.seed}."
        )
    return (
        f"# {title or f'{cfg.model.model} fine-tuned on ARC tasks'}\n\n"
        f"Trained by `arc-ttft finetune` (arc_ttft.training.finetune) from `{cfg.model.model}`: "
        f"{result.steps} steps ({result.stop_reason}), final loss {loss}, seed {cfg.seed}.\n\n"
        f"Command:\n\n    {command}\n\n"
        f"Data mix: `{','.join(cfg.data)}`: {result.n_train_tasks} tasks, "
        f"{result.n_samples} samples ({per_task}, views `{cfg.transforms}` x colours x "
        f"pair order, loss on `{cfg.label_mode}`); {held}.{generated}\n\n"
        f"Training: {how}; peak lr {cfg.learning_rate:g} ({cfg.lr_schedule}, "
        f"{cfg.warmup_steps} warm-up steps); batch {cfg.batch_size} x {cfg.grad_accum} "
        f"accumulation x {_world_size()} devices.\n\n"
        f"Prompt layout and tokenizer are the pipeline's (`arc_ttft.encoding.build_prompt`); "
        f"use it with `--format {cfg.model.format}`.\n"
    )
