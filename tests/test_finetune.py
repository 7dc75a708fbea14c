"""`arc-ttft finetune` on the tiny offline model: mixes and holdout, kill and resume,
budget stop, the written folder served by `arc-ttft run`, and 2-process data parallelism."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arc_ttft import cli, ttt, ttt_samples
from arc_ttft import config as C
from arc_ttft.tasks import load_tasks
from arc_ttft.training import finetune as F
from arc_ttft.training import synthetic
from arc_ttft.training.config import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    """8 small generated tasks in Kaggle's two files (so `arc-ttft run` can read them)."""
    folder = tmp_path_factory.mktemp("data")
    ch, sol = synthetic.generate(8, seed=3, min_size=2, max_size=3)
    challenges, _ = synthetic.write_kaggle(ch, sol, folder, "gen")
    return challenges


def _flat(task_file: Path, out: Path, **extra) -> dict:
    """A fast fine-tune: half of the tasks held out, 10 steps of 2 x 2 sequences."""
    return {
        "model": "tiny",
        "data": [str(task_file), f"-holdout:{task_file}"],
        "holdout_fraction": 0.5,
        "samples_per_task": 6,
        "max_seq_len": 512,
        "batch_size": 2,
        "grad_accum": 2,
        "max_steps": 10,
        "learning_rate": 1e-3,
        "warmup_steps": 2,
        "lora_rank": 8,
        "checkpoint_minutes": None,
        "output": str(out),
        **extra,
    }


def _cfg(task_file: Path, out: Path, **extra) -> FinetuneConfig:
    return C.validate(C.from_flat(FinetuneConfig, _flat(task_file, out, **extra)))


def _args(flat: dict) -> list[str]:
    args = []
    for k, v in flat.items():
        if v is None:
            continue
        args += ["--" + k.replace("_", "-"), ",".join(v) if isinstance(v, list) else str(v)]
    return args


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def straight(task_file, tmp_path_factory):
    """The uninterrupted reference run."""
    out = tmp_path_factory.mktemp("straight")
    return F.run(_cfg(task_file, out), progress=False)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"weights differ by {worst}"


# ---------------------------------------------------------------------------------------
# Config and data
# ---------------------------------------------------------------------------------------


def test_config_lists_every_problem_with_its_field():
    cfg = C.from_flat(
        FinetuneConfig,
        {"data": "generated:x,-holdout:nowhere,-x", "holdout_fraction": 0, "batch_size": 0,
         "int4": True, "full": True, "checkpoint_minutes": -1},
    )  # fmt: skip
    found = C.problems(cfg)
    for start in ("data: 'generated:x'", "data: '-holdout:nowhere'", "data: '-x'",
                  "holdout_fraction:", "batch_size:", "full:", "checkpoint_minutes:"):  # fmt: skip
        assert any(p.startswith(start) for p in found), (start, found)
    assert cli.main(["finetune", "--data", "generated:0", "--output", "x"]) == 2


def test_lora_fields_are_shared_with_ttt_and_checked_alike():
    """FinetuneConfig and TTTConfig take their LoRA fields from LoraTraining: the same
    checks, finetune's own defaults, and ttt_config hands every one of them to TTT."""
    shared = [f.name for f in dataclasses.fields(C.LoraTraining)]
    bad = {"lora_rank": 0, "warmup_steps": -1, "learning_rate": 0, "lora_dropout": 1.0}
    for cls in (C.TTTConfig, FinetuneConfig):
        assert all(name in C.flat_fields(cls) for name in shared)
        found = C.problems(C.from_flat(cls, bad))
        assert sorted(p.split(":")[0] for p in found) == sorted(bad), found
    ft = FinetuneConfig()
    assert (ft.lora_rank, ft.lora_alpha, ft.warmup_steps) == (64, 64.0, 10)
    assert (C.TTTConfig().lora_rank, C.TTTConfig().warmup_steps) == (16, 2)
    mine = C.from_flat(
        FinetuneConfig,
        {"lora_rank": 8, "lora_alpha": 3.0, "lora_dropout": 0.1, "use_rslora": True,
         "lora_targets": "q_proj", "gradient_checkpointing": True, "seed": 7},
    )  # fmt: skip
    ttt_cfg = F.ttt_config(mine)
    assert {n: getattr(ttt_cfg, n) for n in shared} == {n: getattr(mine, n) for n in shared}
    assert ttt_cfg.seed == 7
    # A full fine-tune needs no LoRA targets; a LoRA one does.
    assert C.problems(C.from_flat(FinetuneConfig, {"full": True, "lora_targets": ""})) == []
    assert "lora_targets" in C.problems(C.from_flat(FinetuneConfig, {"lora_targets": ""}))[0]


def test_holdout_ids_leave_the_training_set():
    """arc1-train,arc1-eval,-holdout:arc1-eval at 0.1: train + 90% of eval, never the 10%."""
    cfg = C.from_flat(
        FinetuneConfig,
        {"data": "arc1-train,arc1-eval,-holdout:arc1-eval", "holdout_fraction": 0.1},
    )
    mix = F.resolve_mix(cfg)
    eval_ids = {t.id for t in load_tasks("arc1-eval").tasks}
    train_ids = [t.id for t in mix.train]
    assert len(mix.holdout_ids) == 40 and set(mix.holdout_ids) <= eval_ids
    assert not set(mix.holdout_ids) & set(train_ids)
    assert len(train_ids) == len(set(train_ids)) == 400 + 360
    assert F.resolve_mix(cfg).holdout_ids == mix.holdout_ids  # seeded
    other = F.resolve_mix(C.from_flat(FinetuneConfig, {**C.to_flat(cfg), "seed": 1}))
    assert other.holdout_ids != mix.holdout_ids
    gen = F.resolve_mix(C.from_flat(FinetuneConfig, {"data": "generated:5"}))
    assert [t.id for t in gen.train] == list(synthetic.generate(5, 0)[0])
    assert all(ex.output is not None for t in gen.train for ex in t.test)


def test_a_mix_with_arc2_train_drops_every_held_out_task_by_id_and_by_grids():
    """ARC-AGI-2's training set holds the held-out ARC-AGI-1 tasks under their ids, and a
    near-copy under another id."""
    cfg = C.from_flat(
        FinetuneConfig,
        {"data": "arc2-train,-holdout:arc1-simple,-holdout:arc1-eval-small"},
    )
    mix = F.resolve_mix(cfg)
    held = load_tasks("arc1-simple").tasks + load_tasks("arc1-eval-small").tasks
    held_ids = {t.id for t in held}
    held_grids = set().union(*(F.grid_keys(t) for t in held))
    assert set(mix.holdout_ids) == held_ids and len(held_ids) == 15 + 77 - 1  # 60c09cac: both
    train_ids = {t.id for t in mix.train}
    assert not train_ids & held_ids
    assert not any(F.copies_held(t, held_grids) for t in mix.train)
    arc2 = load_tasks("arc2-train").tasks
    by_id = [t for t in arc2 if t.id in held_ids]
    by_grids = [t.id for t in arc2 if t.id not in held_ids and F.copies_held(t, held_grids)]
    assert len(by_id) > 0 and by_grids == ["8719f442"]  # two grids of 2072aba6
    assert len(mix.train) == len(arc2) - len(by_id) - len(by_grids)


def test_the_card_records_the_generated_families_and_the_real_tasks_weight():
    cfg = C.from_flat(
        FinetuneConfig,
        {"data": "generated:10,arc1-train", "generated_families": "all",
         "generated_min_size": 2, "real_samples_per_task": 24},
    )  # fmt: skip
    result = F.FinetuneResult(Path("o"), None, None, 5, 5, 0.5, [0.5], "max_steps", 1.0, 3, 9, [])
    card = F.model_card(cfg, result, "arc-ttft finetune ...")
    assert "8 per task, 24 per task of a named set" in card
    assert "families `all`, input sides 2-10, seed 0" in card


def test_samples_are_ttt_samples(task_file):
    """The training sequences are TTT's own (same prompts, views and labels), with the
    test pair joining the train pairs."""
    from arc_ttft import models

    cfg = _cfg(task_file, Path("unused"))
    tok = models.load_tokenizer(cfg.model)
    task = F.resolve_mix(cfg).train[0]
    got = F.build_samples([task], cfg, tok, 512)
    full = F.with_known_tests(task)
    assert len(full.train) == len(task.train) + 1
    want = ttt_samples.make_samples(full, "digits", tok, 6, cfg.seed + ttt_samples.task_seed(task.id), 512,
                            "answer", transforms="dihedral")  # fmt: skip
    assert [s.input_ids for s in got] == [s.input_ids for s in want]
    assert [s.labels for s in got] == [s.labels for s in want]


# ---------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------


def test_output_folder(straight, task_file):
    out = straight.output
    assert straight.steps == 10 and straight.stop_reason == "max_steps"
    assert len(straight.losses) == 10 and straight.losses[-1] < straight.losses[0]
    held = json.loads((out / "holdout.json").read_text())
    assert held["task_ids"] == straight.holdout_ids and len(held["task_ids"]) == 4
    trained = [t["id"] for t in json.loads((out / "train_tasks.json").read_text())]
    assert len(trained) == 4 and not set(trained) & set(held["task_ids"])
    card = (out / "model" / "README.md").read_text()
    assert f"Data mix: `{task_file},-holdout:{task_file}`" in card
    assert (
        "10 steps" in card and "seed 0" in card and f"final loss {straight.final_loss:.4f}" in card
    )
    assert "arc-ttft finetune --model tiny" in card and "--holdout-fraction 0.5" in card
    cfg = C.load(FinetuneConfig, out / "config.json")
    assert (cfg.max_steps, cfg.lora_rank, cfg.data) == (
        10,
        8,
        [str(task_file), f"-holdout:{task_file}"],
    )
    # the merged LoRA changed the base weights
    base = load_file(str(Path(_tiny()) / "model.safetensors"))
    merged = _weights(out / "model")
    assert (merged["model.layers.0.self_attn.q_proj.weight"]
            - base["model.layers.0.self_attn.q_proj.weight"]).abs().max() > 1e-4  # fmt: skip


def _tiny() -> Path:
    from arc_ttft.models import ensure_tiny_model

    return ensure_tiny_model()


@pytest.mark.timeout(240)
def test_killed_run_resumes_to_the_same_model_and_serves(straight, task_file, tmp_path, capsys):
    """Killed (SIGKILL) after its first checkpoint, resumed with --resume: the same losses
    and weights as the uninterrupted run; `arc-ttft run --model DIR` answers the held-out
    tasks with it (transformers backend)."""
    out = tmp_path / "killed"
    flat = _flat(task_file, out, checkpoint_minutes=0)  # a checkpoint after every step
    cmd = [sys.executable, "-m", "arc_ttft", "finetune", *_args(flat)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while F.latest_checkpoint(out / "checkpoints") is None:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(F.latest_checkpoint(out / "checkpoints").name.split("-")[1])
    assert killed_at < 10 and not (out / "model").exists(), "the run was not killed mid-way"

    resumed = F.run(_cfg(task_file, out, checkpoint_minutes=0, resume=True), progress=False)
    assert resumed.resumed_from == str(out / "checkpoints" / f"checkpoint-{killed_at}")
    assert (resumed.steps, resumed.steps_run) == (10, 10 - killed_at)
    assert resumed.losses == pytest.approx(straight.losses[-len(resumed.losses) :], abs=1e-4)
    _assert_same_weights(out / "model", straight.output / "model", atol=1e-5)

    ids = json.loads((out / "holdout.json").read_text())["task_ids"]
    rc = cli.main(["run", "--challenges", str(task_file), "--tasks", ",".join(ids[:2]),
                   "--model", str(out / "model"), "--backend", "hf", "--ttt-steps", "2",
                   "--views", "2", "--rescore", "0", "--probe-tasks", "0", "--max-seq-len", "512",
                   "--budget-minutes", "3", "--output", str(tmp_path / "run")])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "faults" not in text, text
    assert "score: " in text and "/2 tasks)" in text.split("score: ")[1]
    sub = json.loads((tmp_path / "run" / "submission.json").read_text())
    assert sorted(sub) == sorted(ids[:2])


def test_added_layers_start_as_the_base_and_then_train(task_file, tmp_path):
    """--add-layers: the deeper model answers exactly as the base (logits and cached
    generation: the KV cache is indexed by the renumbered layers), then its new layers
    train, and the saved folder is the deeper model."""
    from arc_ttft.models import load_model
    from arc_ttft.training.deepen import deepen, insert_after

    assert insert_after(4, 4) == [0, 1, 2, 3] and insert_after(2, 3) == [0, 0, 1]
    model, _ = load_model(C.ModelConfig(model="tiny"), device="cpu")
    model.eval()
    ids = torch.randint(1, 50, (1, 40))
    with torch.no_grad():
        before = model(ids).logits
        said = model.generate(ids, max_new_tokens=12, do_sample=False)
    n = model.config.num_hidden_layers
    deepen(model, 3)
    assert model.config.num_hidden_layers == len(model.model.layers) == n + 3
    assert len(model.config.layer_types) == n + 3
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)
        assert torch.equal(model.generate(ids, max_new_tokens=12, do_sample=False), said)

    lora = C.from_flat(FinetuneConfig, _flat(task_file, tmp_path, add_layers=2))
    assert any(p.startswith("add_layers:") for p in C.problems(lora))
    res = F.run(_cfg(task_file, tmp_path, add_layers=2, full=True, max_steps=3), progress=False)
    grown = _weights(res.model_dir)
    o_proj = [grown[f"model.layers.{i}.self_attn.o_proj.weight"] for i in range(n + 2)]
    assert len([k for k in grown if k.endswith("o_proj.weight")]) == n + 2
    assert all(w.abs().max() > 0 for w in o_proj)  # the zeroed copies trained
    assert (
        "inserting 2 identity-initialised decoder layers"
        in (res.model_dir / "README.md").read_text()
    )
    served, _ = load_model(C.ModelConfig(model=str(res.model_dir)), device="cpu")
    assert served.config.num_hidden_layers == n + 2


def test_budget_stop_writes_a_loadable_folder(task_file, tmp_path):
    from arc_ttft.models import load_model

    cfg = _cfg(task_file, tmp_path, max_steps=100_000, budget_minutes=0.002, save_adapter=False)
    res = F.run(cfg, progress=False)
    assert res.stop_reason == "budget" and 1 <= res.steps < 100_000
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"{res.steps} steps (budget)" in card
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stop_reason"] == "budget" and summary["steps"] == res.steps
    model, tok = load_model(C.ModelConfig(model=str(tmp_path / "model")), device="cpu")
    assert model.config.use_cache and tok.eos_token == "<|endoftext|>"


def test_save_adapter_continues_ttt(task_file, tmp_path):
    """--save-adapter writes an adapter that --adapter-mode continue starts from."""
    res = F.run(_cfg(task_file, tmp_path, max_steps=2, save_adapter=True), progress=False)
    assert res.model_dir is None and (res.adapter_dir / "adapter_model.safetensors").is_file()
    cfg = C.TTTConfig(lora_rank=8, adapter_mode="continue", base_adapter=str(res.adapter_dir))
    from arc_ttft import models

    model, _ = models.load_model(C.ModelConfig(model="tiny"), device="cpu", for_training=True)
    model = ttt.prepare_peft_model(model, cfg)
    ttt.reset_adapter(model, 0, cfg.base_adapter)
    saved = load_file(str(res.adapter_dir / "adapter_model.safetensors"))
    key = next(k for k in saved if "lora_B" in k)
    loaded = dict(model.named_parameters())[key.replace(".weight", ".default.weight")]
    assert torch.equal(loaded.detach(), saved[key]) and saved[key].abs().max() > 0


@pytest.mark.parametrize("option", ["int4", "shrink_vocab"])
def test_int4_and_shrunk_vocab_write_plain_models(task_file, tmp_path, option):
    """A 4-bit base trains LoRA and is merged into plain weights; shrink_vocab trains the
    shrunk copy and writes it with its remapped tokenizer and vocab map."""
    from arc_ttft import encoding
    from arc_ttft.models import load_model

    if option == "int4":
        pytest.importorskip("bitsandbytes")
    res = F.run(_cfg(task_file, tmp_path, max_steps=2, **{option: True}), progress=False)
    config = json.loads((res.model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    model, tok = load_model(C.ModelConfig(model=str(res.model_dir)), device="cpu")
    shrunk = option == "shrink_vocab"
    assert (config["vocab_size"] < 512) == shrunk == (res.model_dir / "vocab_map.json").is_file()
    assert model.get_input_embeddings().weight.shape[0] == config["vocab_size"]
    task = F.resolve_mix(_cfg(task_file, tmp_path)).train[0]
    ids, _ = encoding.tokenize_prompt(encoding.task_prompt(task, "digits", tok), tok)
    assert max(ids) < config["vocab_size"]


# ---------------------------------------------------------------------------------------
# Data parallel
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_processes_equal_one_with_the_same_global_batch(straight, task_file, tmp_path):
    """torchrun --nproc_per_node 2 (gloo on CPU), per-device batch 2, no accumulation =
    one process with batch 2 x 2 accumulation (the reference run): same losses, same
    weights."""
    out = tmp_path / "ddp"
    flat = _flat(task_file, out, grad_accum=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "arc_ttft", "finetune", *_args(flat)]  # fmt: skip
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "steps: 10" in done.stdout and done.stdout.count("model: ") == 1
    card = (out / "model" / "README.md").read_text()
    assert "batch 2 x 1 accumulation x 2 devices" in card
    losses = [float(r.split(",")[1]) for r in (out / "losses.csv").read_text().splitlines()[1:]]
    assert losses == pytest.approx(straight.losses, abs=1e-4)
    _assert_same_weights(out / "model", straight.output / "model", atol=1e-5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
