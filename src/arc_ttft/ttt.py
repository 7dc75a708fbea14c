"""Test-time fine-tuning: one LoRA adapter per task, trained on the task's own demonstrations.

Data: ``ttt_samples`` (leave-one-out samples under random views, pre-tokenised, packed
without padding, the loss on the answer tokens only), shared with `arc-ttft finetune`.

Precision: an fp16 base (T4, V100: no bf16) trains with torch's mixed precision, as
Trainer's ``fp16=True`` does: the LoRA weights stay fp32 (peft's default upcast), the
forward runs under ``torch.autocast(float16)``, and a ``GradScaler`` scales the loss so
small fp16 gradients do not underflow, skipping the steps whose gradients overflow.

Why a plain loop and not ``transformers.Trainer``: one Trainer per task costs seconds of
set-up for 400 tasks, the budget guard must be asked every step, padding-free packing and
answer-only logits need a custom loss anyway, and the step time must be measured exactly
for the planner. The loop below is ~40 lines and does just that.

Over 500 lines: LoRA set-up, mixed precision, the loop, per-task and shared adapters are
one training path that must agree with itself; each is its own section.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import torch

from arc_ttft.augment import VIEWS_FILE, view_family
from arc_ttft.config import ModelConfig, TTTConfig
from arc_ttft.events import EventLog
from arc_ttft.tasks import Task
from arc_ttft.ttt_samples import (
    Sample,
    answer_loss,
    make_samples,
    pack,
    task_seed,
)

# ---------------------------------------------------------------------------------------
# Model and training
# ---------------------------------------------------------------------------------------


def lora_config(cfg: TTTConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        use_rslora=cfg.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def prepare_peft_model(model, cfg: TTTConfig):
    """Wrap ``model`` with one trainable LoRA adapter named ``default``.

    Target modules the architecture lacks are dropped (e.g. Phi has no ``o_proj``) so one
    config works for every candidate; if none remain, the error lists what exists.
    """
    from peft import get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in cfg.lora_targets if t in names]
    if not targets:
        linear = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear)
            }
        )
        raise ValueError(
            f"lora_targets: none of {cfg.lora_targets} exist in this model; linear layers are {linear}"
        )
    check_lora_dtype(cfg, _device_of(model))
    lc = lora_config(cfg)
    lc.target_modules = targets
    model.config.use_cache = False  # required for correct padding-free packing
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, lc)
    if cfg.lora_dtype == "bfloat16":
        # peft upcasts the adapter to fp32, which also makes every LoRA layer keep an fp32
        # copy of its input for the backward pass; in bf16 q/k/v share one saved input.
        # make_optimizer keeps fp32 master weights, so small updates are not rounded away.
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    return model


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def check_lora_dtype(cfg: TTTConfig, device: torch.device | str) -> None:
    """Refuse ``lora_dtype=bfloat16`` on a GPU without native bf16 (T4, V100, P100).

    There torch emulates bf16 matmuls: slow, and pointless next to the fp16 mixed
    precision that ``float32`` LoRA weights get on an fp16 base.
    """
    dev = torch.device(device)
    if cfg.lora_dtype != "bfloat16" or dev.type != "cuda":
        return
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return
    try:
        name = torch.cuda.get_device_name(dev)
    except Exception:  # noqa: BLE001 - the name only decorates the message
        name = "this GPU"
    raise ValueError(
        f"lora_dtype: 'bfloat16' needs a GPU with bf16 support, and {dev} ({name}) has "
        "none; use --lora-dtype float32 (the fp16 base then trains with fp16 autocast "
        "and loss scaling)"
    )


def reset_adapter(model, seed: int, base_adapter: str | None = None) -> None:
    """Fresh LoRA weights (seeded) in the ``default`` adapter, or a copy of ``base_adapter``."""
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, LoraLayer) and "default" in m.lora_A:
            m.reset_lora_parameters("default", init_lora_weights=True)
    if base_adapter:
        load_adapter_weights(model, base_adapter)


def load_adapter_weights(model, path: str | Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    f = Path(path) / "adapter_model.safetensors"
    if not f.exists():
        raise FileNotFoundError(
            f"base_adapter: {f} not found; give a folder written by `arc-ttft ttt`"
        )
    set_peft_model_state_dict(model, load_file(str(f)))


def master_weights(model) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(trainable parameter, fp32 master copy) for every trainable parameter that is not
    fp32; empty when all are. The optimizer updates the masters (``lora_dtype=bfloat16``)."""
    return [
        (p, p.detach().float().requires_grad_())
        for p in model.parameters()
        if p.requires_grad and p.dtype != torch.float32
    ]


def base_dtype(model) -> torch.dtype:
    """The dtype the base model computes in: that of its input embeddings (peft's
    k-bit preparation makes them fp32, and 4-bit layers return their input's dtype)."""
    emb = model.get_input_embeddings()
    return emb.weight.dtype if emb is not None else next(model.parameters()).dtype


# torch's default; each overflow halves it and skips that update (TTTResult.skipped_steps)
INIT_LOSS_SCALE = 2.0**16


def make_scaler(model, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler when the base is fp16 (mixed precision needs loss scaling), else None."""
    if base_dtype(model) != torch.float16:
        return None
    return torch.amp.GradScaler(device.type, init_scale=INIT_LOSS_SCALE)


def make_optimizer(model, cfg: TTTConfig, steps: int, masters=()):
    """AdamW and the LR schedule over the trainable parameters (their fp32 ``masters``
    where they have one)."""
    from transformers import get_scheduler

    master_of = {id(p): m for p, m in masters}
    params = [master_of.get(id(p), p) for p in model.parameters() if p.requires_grad]
    on_cuda = params[0].is_cuda
    # fused AdamW is fastest on CUDA; foreach is the fast path on CPU.
    opt = torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        fused=on_cuda or None,
        foreach=None if on_cuda else True,
    )
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[
        cfg.lr_schedule
    ]
    warmup = min(cfg.warmup_steps, max(0, steps - 1))
    sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=max(1, steps))
    return opt, sched


@dataclass
class TTTResult:
    """What one task's training did (also written to run.jsonl)."""

    task_id: str
    steps: int
    seconds: float
    first_loss: float | None
    final_loss: float | None
    stop_reason: str  # max_steps | max_time | budget | no_steps | too_long
    adapter: str | None
    losses: list[float] = field(default_factory=list)
    answer_tokens: int = 0
    dropped_pairs: int = 0
    skipped_samples: int = 0  # longer than max_seq_len even after dropping pairs
    skipped_steps: int = 0  # fp16: gradients overflowed, the scaler skipped the update
    views: str = ""  # the view family it trained on (augment.parse_family)
    # ttt_colours=fit: each family's fit_loss; ``losses`` are then the kept family's, and
    # ``steps``/``seconds`` count both trainings
    view_losses: dict[str, float] | None = None

    @property
    def seconds_per_step(self) -> float | None:
        return self.seconds / self.steps if self.steps else None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "losses"}
        d["losses"] = [round(x, 5) for x in self.losses]
        return d


def train_steps(
    model,
    samples: list[Sample],
    cfg: TTTConfig,
    steps: int,
    *,
    max_seconds: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
    desc: str = "ttt",
    on_step: Callable[[int, float], None] | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[list[float], str, int, float]:
    """Train the active adapter for up to ``steps`` steps on ``samples`` (cycled).

    Stops cleanly when ``max_seconds`` is reached or ``should_stop()`` says so, checked
    before every step. Returns (losses, stop_reason, answer_tokens, seconds). An fp16 base
    trains under autocast with loss scaling; ``info`` (when given) receives
    ``skipped_steps`` (updates the scaler skipped) and ``loss_scale`` (None without one).
    """
    from tqdm.auto import tqdm

    device = next(p for p in model.parameters() if p.requires_grad).device
    # Pre-pack every distinct batch once; steps cycle over them.
    bs = cfg.batch_size
    n_batches = max(1, min(steps, math.ceil(len(samples) / bs)))
    batches = [
        pack([samples[(i * bs + j) % len(samples)] for j in range(bs)], device)
        for i in range(n_batches)
    ]
    masters = master_weights(model)
    opt, sched = make_optimizer(model, cfg, steps, masters)
    scaler = make_scaler(model, device)
    model.train()
    losses: list[float] = []
    tokens = 0
    skipped = 0
    reason = "max_steps"
    t0 = time.monotonic()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    for step in range(steps):
        if max_seconds is not None and time.monotonic() - t0 >= max_seconds:
            reason = "max_time"
            break
        if should_stop is not None and should_stop():
            reason = "budget"
            break
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
            loss, n = answer_loss(model, batches[step % len(batches)])
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
        for p, m in masters:
            m.grad, p.grad = p.grad.float(), None
        if scaler is None:
            opt.step()
        else:
            # (a gradient clip would go here, after scaler.unscale_(opt))
            scale = scaler.get_scale()
            scaler.step(opt)  # unscales; skips the update if any gradient is inf/nan
            scaler.update()
            skipped += scaler.get_scale() < scale
        sched.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, m in masters:
                p.copy_(m)
        # .item() syncs with the device; one sync per step is the price of logging.
        losses.append(loss.item())
        tokens += n
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step:
            on_step(step, losses[-1])
    bar.close()
    model.eval()
    if info is not None:
        info["skipped_steps"] = skipped
        info["loss_scale"] = scaler.get_scale() if scaler is not None else None
    return losses, reason, tokens, time.monotonic() - t0


def drop_too_long(
    samples: list[Sample], max_seq_len: int | None, events: EventLog, task_id: str
) -> list[Sample]:
    """The samples that fit ``max_seq_len``; each one that does not is logged (stage
    ``ttt``, decision ``skipped-too-long``) and left out: build_prompt keeps at least one
    example, so a long query pair can exceed the limit on its own."""
    if max_seq_len is None:
        return samples
    kept = []
    for i, s in enumerate(samples):
        if len(s.input_ids) <= max_seq_len:
            kept.append(s)
            continue
        events.log(
            "ttt",
            task=task_id,
            decision="skipped-too-long",
            sample=i,
            length=len(s.input_ids),
            max_seq_len=max_seq_len,
        )
    return kept


def view_families(cfg: TTTConfig) -> list[str]:
    """The view families (augment.parse_family) a task's adapter is trained under, one
    adapter each; ``ttt_colours=fit`` tries two and keeps the better fit."""
    if cfg.ttt_colours == "fit":
        return [view_family(cfg.ttt_transforms), view_family("dihedral", own_colours=True)]
    return [view_family(cfg.ttt_transforms, own_colours=cfg.ttt_colours == "own")]


def _samples_of(
    task: Task, cfg: TTTConfig, fmt: str, tokenizer, n: int, seed: int, max_seq_len,
    family: str | None = None,
):  # fmt: skip
    return make_samples(
        task, fmt, tokenizer, n, seed, max_seq_len, cfg.label_mode,
        n_views=cfg.ttt_views, transforms=family or view_families(cfg)[0],
    )  # fmt: skip


def _train(
    model, samples: list[Sample], cfg: TTTConfig, steps: int, name: str, should_stop,
    progress: bool, max_seconds: float | None, **extra: Any,
) -> TTTResult:  # fmt: skip
    """Train ``steps`` on ``samples``: the result, not yet saved nor logged."""
    info: dict[str, Any] = {}
    losses, reason, tokens, seconds = train_steps(
        model, samples, cfg, steps, max_seconds=max_seconds, should_stop=should_stop,
        progress=progress, desc=f"ttt {name}", info=info,
    )  # fmt: skip
    return TTTResult(
        task_id=name,
        steps=len(losses),
        seconds=round(seconds, 3),
        first_loss=losses[0] if losses else None,
        final_loss=losses[-1] if losses else None,
        stop_reason=reason,
        adapter=None,
        losses=losses,
        answer_tokens=tokens,
        skipped_steps=info["skipped_steps"],
        **extra,
    )


def _save_and_log(model, result: TTTResult, output_dir, events: EventLog) -> TTTResult:
    """Save the trained adapter as ``output_dir/<task id>`` (with its view family), log it."""
    if output_dir is not None and result.steps:
        folder = Path(output_dir) / result.task_id
        result.adapter = str(save_adapter(model, folder, views=result.views))
    return _log_result(events, result)


# ttt_colours=fit: the configured views stay unless another family's fit_loss is under
# this share of theirs. Chosen on 40 ARC-AGI-1 training tasks arc-nano never saw
# (benchmarks/sweeps/arc-nano-ttt-colours.toml): three tasks with 1x1 answers fitted their
# own colours somewhat better (0.55-0.64 of the permuted loss) by memorising answer colours
# and were lost; a fixed colour rule fits 20-60 times better.
FIT_MARGIN = 0.5


def fit_loss(losses: list[float]) -> float:
    """How well an adapter fits its views: the mean loss of its last quarter of steps (one
    step's loss depends on which sample it drew)."""
    tail = losses[-max(1, len(losses) // 4) :]
    return sum(tail) / len(tail)


def _lora_state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    # copies: the next family's training writes into the same parameters
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def train_task(
    model,
    tokenizer,
    task: Task,
    cfg: TTTConfig,
    fmt: str,
    max_seq_len: int | None,
    *,
    steps: int | None = None,
    output_dir: str | Path | None = None,
    events: EventLog | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
    reset: bool = True,
) -> TTTResult:
    """Fresh (or continued) adapter for one task: build samples, train, save.

    With ``ttt_colours=fit`` the task's ``steps`` are shared between two view families
    (``view_families``), each trained from the same start. The first (the configured
    views) is kept unless the other's ``fit_loss`` is under FIT_MARGIN of its own: views
    that keep the task's rule let one rule fit them all, views that change it leave the
    loss high. The result counts the steps and seconds of both.
    """
    from peft import set_peft_model_state_dict

    steps = cfg.ttt_steps if steps is None else steps
    events = events or EventLog()
    if steps <= 0:
        return TTTResult(task.id, 0, 0.0, None, None, "no_steps", None)
    seed = cfg.seed + task_seed(task.id)
    start = cfg.base_adapter if cfg.adapter_mode == "continue" else None
    families = view_families(cfg)
    shares = [steps // len(families) + (i < steps % len(families)) for i in range(len(families))]
    tried: list[tuple[TTTResult, dict | None]] = []
    skipped = 0
    for i, (family, n) in enumerate(zip(families, shares)):
        if n == 0:
            continue
        if reset or i:
            reset_adapter(model, seed, start)
        samples = _samples_of(
            task, cfg, fmt, tokenizer, n * cfg.batch_size, seed, max_seq_len, family
        )
        fitting = drop_too_long(samples, max_seq_len, events, task.id)
        skipped += len(samples) - len(fitting)
        if not fitting:
            continue
        spent = sum(r.seconds for r, _ in tried)
        cap = None if cfg.ttt_max_seconds is None else max(0.0, cfg.ttt_max_seconds - spent)
        res = _train(
            model, fitting, cfg, n, task.id, should_stop, progress, cap, views=family,
            dropped_pairs=max(len(s.dropped) for s in fitting),
        )  # fmt: skip
        tried.append((res, _lora_state(model) if len(families) > 1 and res.steps else None))
    if not tried:
        # Nothing to learn from: the task keeps the base model, the run goes on.
        result = TTTResult(task.id, 0, 0.0, None, None, "too_long", None, skipped_samples=skipped)
        return _log_result(events, result)
    trained = [rw for rw in tried if rw[0].steps] or tried[-1:]
    best, weights = trained[0]
    for res, w in trained[1:]:
        if fit_loss(res.losses) < FIT_MARGIN * fit_loss(best.losses):
            best, weights = res, w
    best.skipped_samples = skipped
    if len(trained) > 1:
        set_peft_model_state_dict(model, weights)
        best.view_losses = {r.views: round(fit_loss(r.losses), 5) for r, _ in trained}
        best.steps = sum(r.steps for r, _ in trained)
        best.seconds = round(sum(r.seconds for r, _ in trained), 3)
        best.answer_tokens = sum(r.answer_tokens for r, _ in trained)
        best.skipped_steps = sum(r.skipped_steps for r, _ in trained)
    return _save_and_log(model, best, output_dir, events)


def _log_result(events: EventLog, result: TTTResult) -> TTTResult:
    fields = {k: v for k, v in result.to_dict().items() if k != "task_id"}
    events.log("ttt", task=result.task_id, **fields)
    return result


def save_adapter(model, folder: Path, views: str = "") -> Path:
    """Write the adapter (safetensors + adapter_config.json) atomically enough for --resume.

    Written to a temporary folder first, then renamed: a killed run never leaves a
    half-written adapter that looks finished. ``views`` (its view family) goes beside it,
    in VIEWS_FILE: inference asks an adapter in the views it learnt in.
    """
    import json
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if views:
        (tmp / VIEWS_FILE).write_text(json.dumps({"views": views}))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def train_shared(
    model,
    tokenizer,
    tasks: list[Task],
    cfg: TTTConfig,
    fmt: str,
    max_seq_len: int | None,
    *,
    output_dir: str | Path | None = None,
    events: EventLog | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
) -> TTTResult:
    """One adapter for all tasks: ``ttt_steps`` steps per task, samples interleaved."""
    events = events or EventLog()
    reset_adapter(model, cfg.seed, cfg.base_adapter)
    n = cfg.ttt_steps * cfg.batch_size
    made = [
        _samples_of(t, cfg, fmt, tokenizer, n, cfg.seed + i, max_seq_len)
        for i, t in enumerate(tasks)
    ]
    per = [drop_too_long(group, max_seq_len, events, t.id) for group, t in zip(made, tasks)]
    skipped = sum(len(a) - len(b) for a, b in zip(made, per))
    # round robin over tasks (a task whose samples were all too long drops out)
    samples = [s for group in zip_longest(*per) for s in group if s is not None]
    if not samples:
        result = TTTResult("shared", 0, 0.0, None, None, "too_long", None, skipped_samples=skipped)
        return _log_result(events, result)
    steps = cfg.ttt_steps * len(tasks)
    result = _train(
        model, samples, cfg, steps, "shared", should_stop, progress, cfg.ttt_max_seconds,
        views=view_families(cfg)[0], skipped_samples=skipped,
    )  # fmt: skip
    return _save_and_log(model, result, output_dir, events)


def run_ttt(
    tasks: list[Task],
    model_cfg: ModelConfig,
    cfg: TTTConfig,
    output_dir: str | Path,
    *,
    events: EventLog | None = None,
    steps_for: Callable[[Task], int] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    device: str | None = None,
) -> list[TTTResult]:
    """Load the model once and train an adapter per task (or one shared adapter).

    ``steps_for(task)`` lets the budget guard decide each task's steps just before it
    starts (re-planned from measured costs); by default every task gets ``ttt_steps``.
    """
    from arc_ttft import models

    events = events or EventLog()
    model, tokenizer = models.load_model(model_cfg, device=device, for_training=True)
    model = prepare_peft_model(model, cfg)
    max_seq_len = models.resolve_max_seq_len(model_cfg)
    out = Path(output_dir)
    if cfg.adapter_mode == "shared":
        return [
            train_shared(
                model,
                tokenizer,
                tasks,
                cfg,
                model_cfg.format,
                max_seq_len,
                output_dir=out,
                events=events,
                should_stop=should_stop,
                progress=progress,
            )
        ]
    results = []
    for task in tasks:
        steps = steps_for(task) if steps_for else cfg.ttt_steps
        results.append(
            train_task(
                model,
                tokenizer,
                task,
                cfg,
                model_cfg.format,
                max_seq_len,
                steps=steps,
                output_dir=out,
                events=events,
                should_stop=should_stop,
                progress=progress,
            )
        )
    return results
