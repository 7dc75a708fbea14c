"""scripts/pretrain_base.py: from-scratch pretraining on generated tasks through
`arc_ttft.training.finetune`, evaluated with `arc-ttft run` (learning.run_arm)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from arc_ttft.training import finetune

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pretrain_base.py"


@pytest.fixture(scope="module")
def pb():
    spec = importlib.util.spec_from_file_location("pretrain_base", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_old_flags_map_onto_finetune(pb):
    """The flags arc-nano's model card cites still parse, into a full fine-tune of
    generated tasks with the curriculum's sizes and the output-grid loss."""
    args = pb.parse_args(
        "--out runs/arc-nano --minutes 100 --hidden 128 --heads 2 --layers 4 --lr 2e-3 "
        "--batch-tokens 2048 --curriculum small --format digits --threads 1 --seed 0 "
        "--ckpt-minutes 10".split()
    )
    cfg = pb.finetune_config(args)
    assert cfg.full and cfg.label_mode == "outputs" and cfg.model.format == "digits"
    assert (cfg.generated_min_size, cfg.generated_max_size) == (2, 6)
    assert (cfg.budget_minutes, cfg.checkpoint_minutes, cfg.learning_rate) == (100, 10, 2e-3)
    assert cfg.batch_size == 8 and cfg.max_steps == 20000 and cfg.warmup_steps == 600
    assert cfg.data == ["generated:20000"]
    with pytest.raises(ValueError, match="head_dim"):
        pb.make_model(pb.load_tokenizer(), 100, 1, 3, 0)


@pytest.mark.timeout(180)
def test_trains_through_finetune_and_evaluates_with_the_pipeline(pb, tmp_path):
    from arc_ttft.config import ModelConfig
    from arc_ttft.models import load_model

    args = pb.parse_args(
        ["--steps", "5", "--hidden", "64", "--heads", "1", "--layers", "1", "--batch-size", "2",
         "--n-tasks", "6", "--samples-per-task", "2", "--curriculum", "small",
         "--format", "digits", "--max-len", "512", "--out", str(tmp_path)]
    )  # fmt: skip
    summary = pb.train(args, log=lambda m: None)
    assert summary["steps"] == 5 and math.isfinite(summary["final_loss"])
    rows = list(csv.DictReader((tmp_path / "losses.csv").open()))
    assert len(rows) == 5 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert (tmp_path / "loss.png").is_file()
    # finetune wrote it: its config, its ids, its card (with this script's command)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["full"] and cfg["data"] == ["generated:6"] and cfg["max_steps"] == 5
    assert len(json.loads((tmp_path / "train_tasks.json").read_text())) == 6
    card = (tmp_path / "model" / "README.md").read_text()
    assert "pretrained from scratch" in card and "hidden 64, layers 1, heads 1" in card
    assert "seed 0" in card and "Command:\n\n    python " in card
    assert "Data mix: `generated:6`" in card
    model, tok = load_model(ModelConfig(model=str(tmp_path / "model")), device="cpu")
    assert model.config.hidden_size == 64 and model.config.num_attention_heads == 1

    for ttt_steps in (0, 1):
        ev = pb.parse_args(
            ["--eval-only", str(tmp_path / "model"), "--eval-tasks", "2", "--eval-min-size", "2",
             "--eval-max-size", "3", "--format", "digits", "--ttt-steps", str(ttt_steps),
             "--eval-out", str(tmp_path / f"eval{ttt_steps}.json"), "--eval-set", "views=2",
             "--eval-set", "rescore=0", "--eval-set", "max_seq_len=512"]
        )  # fmt: skip
        res = pb.evaluate(ev)
        assert res["total"] == 2
        # The count agrees with the submission checked here against the solutions.
        assert res["correct"] == _solved(tmp_path / "eval", "ttt" if ttt_steps else "base")
        assert sum(n for _, n in res["per_family"].values()) == 2
        assert res["ttt_tasks"] == (2 if ttt_steps else 0)  # the pipeline's TTT ran per task
        assert res["model"] == str(tmp_path / "model")


def _solved(work: Path, arm: str) -> int:
    """Tasks whose every test output is one of the submission's two attempts."""
    (sol_path,) = (work / "data").glob("*_solutions.json")
    solutions = json.loads(sol_path.read_text())
    sub = json.loads((work / "runs" / arm / "submission.json").read_text())
    return sum(
        all(want in attempts.values() for want, attempts in zip(outs, sub[tid], strict=True))
        for tid, outs in solutions.items()
    )


def test_finetune_is_what_trains(pb, monkeypatch, tmp_path):
    """train() hands a fresh model to finetune.run (no loop of its own)."""
    seen = {}

    def fake_run(cfg, *, model, tokenizer, **kw):
        seen.update(cfg=cfg, model=model, kw=kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(finetune, "run", fake_run)
    args = pb.parse_args(["--steps", "3", "--hidden", "64", "--heads", "1", "--layers", "1",
                          "--out", str(tmp_path)])  # fmt: skip
    with pytest.raises(RuntimeError, match="stop here"):
        pb.train(args, log=lambda m: None)
    assert seen["cfg"].full and seen["cfg"].max_steps == 3
    assert seen["model"].config.hidden_size == 64
    assert seen["kw"]["command"].startswith("python ")  # the script's own command line
