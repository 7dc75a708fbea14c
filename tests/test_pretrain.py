"""Smoke tests for scripts/pretrain_base.py (from-scratch pretraining on generated tasks)."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from arc_ttft import encoding, synthetic

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pretrain_base.py"


@pytest.fixture(scope="module")
def pb():
    spec = importlib.util.spec_from_file_location("pretrain_base", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tok(pb):
    return pb.load_tokenizer()


def test_encode_task_labels_answer_and_later_outputs(pb, tok):
    task = synthetic.make_task("flip_h", 3, n_train=3, min_size=2, max_size=3)
    ex = pb.encode_task(task, "shaped", tok)
    plain = pb.encode_task(task, "shaped", tok, label_outputs=False)
    assert ex.ids == plain.ids
    # Same prompt ids as the pipeline builds for inference.
    examples = [(np.array(p["input"]), np.array(p["output"])) for p in task["train"]]
    prompt = encoding.build_prompt(examples, np.array(task["test"][0]["input"]), "shaped", tok)
    p_ids, _ = encoding.tokenize_prompt(prompt, tok)
    assert ex.ids[: len(p_ids)] == p_ids
    answer = [t for t in plain.labels if t != -100]
    assert answer == ex.ids[len(p_ids) :]
    labelled = [t for t in ex.labels if t != -100]
    # Outputs 2 and 3 of the demonstrations are labelled too; the first is not.
    assert len(labelled) > len(answer)
    text = tok.decode([i for i, lab in zip(ex.ids, ex.labels) if lab != -100][: -len(answer)])
    outs = [encoding.render_shaped(np.array(p["output"])) for p in task["train"]]
    assert outs[1] in text and outs[2] in text


def test_schedules(pb):
    assert pb.stage_at("default", 0.0) == (2, 4)
    assert pb.stage_at("default", 0.99) == (3, 10)
    assert pb.lr_at(0.0, 1e-3) < pb.lr_at(0.03, 1e-3) == pytest.approx(1e-3)
    assert pb.lr_at(1.0, 1e-3) == pytest.approx(5e-5)


def test_batches_are_right_padded_without_loss_on_pads(pb, tok):
    stream = pb.task_stream(0, "shaped", tok, lambda: (2, 3))
    examples = next(pb.batch_stream(stream, 1024, pool=8))
    batch = pb.make_batch(examples)
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == (len(examples), max(len(e.ids) for e in examples))
    for r, e in enumerate(examples):
        n = len(e.ids)
        assert ids[r, :n].tolist() == e.ids and labels[r, :n].tolist() == e.labels
        assert (labels[r, n:] == -100).all()


def test_train_five_steps_saves_a_loadable_model(pb, tmp_path):
    from arc_ttft.config import ModelConfig
    from arc_ttft.models import load_model

    args = pb.parse_args(
        ["--steps", "5", "--hidden", "64", "--heads", "1", "--layers", "1",
         "--batch-tokens", "512", "--out", str(tmp_path), "--log-every", "100"]
    )  # fmt: skip
    summary = pb.train(args, log=lambda m: None)
    assert summary["steps"] == 5 and math.isfinite(summary["final_loss_ema"])
    rows = list(csv.DictReader((tmp_path / "loss.csv").open()))
    assert len(rows) == 5 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert (tmp_path / "loss.png").is_file()
    card = (tmp_path / "model" / "README.md").read_text()
    assert "Seed 0" in card and "Command" in card
    model, tok = load_model(ModelConfig(model=str(tmp_path / "model")), device="cpu")
    assert model.config.hidden_size == 64 and model.config.num_attention_heads == 1

    ch, sol = synthetic.generate(2, seed=999, max_size=3)
    res = pb.evaluate(model, tok, ch, sol, "shaped", max_new=20)
    assert res["total"] == 2 and 0 <= res["correct"] <= 2
    res = pb.evaluate(model, tok, ch, sol, "shaped", max_new=20, ttt_steps=1)
    assert res["total"] == 2
