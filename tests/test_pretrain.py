"""Smoke tests for scripts/pretrain_base.py (from-scratch pretraining on generated tasks)."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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
    for ttt_steps in (0, 1):
        res = pb.evaluate(model, tok, ch, sol, "shaped", max_new=20, ttt_steps=ttt_steps)
        _check_counts(res, ch)


def _check_counts(res: dict, challenges: dict) -> None:
    """The totals, the per-family counts and the per-task marks tell one story."""
    assert set(res["tasks"]) == set(challenges) and set(res["tasks"].values()) <= {0, 1}
    assert res["total"] == len(challenges)
    assert res["correct"] == sum(res["tasks"].values())
    for fam, (ok, n) in res["per_family"].items():
        mine = [v for t, v in res["tasks"].items() if synthetic.family_of(t) == fam]
        assert (ok, n) == (sum(mine), len(mine))


def test_evaluate_scores_known_answers(pb, tok, monkeypatch):
    """A stand-in decoder with known answers: one right (with text after the end
    marker), one well formed but one cell wrong, one unparseable."""
    ch, sol = synthetic.generate(3, seed=5, families=["flip_h", "rot90"], max_size=4)
    right, wrong, junk = ch
    render = encoding.get_format("shaped").render
    eos = tok.eos_token

    def answer_of(tid: str) -> str:
        want = np.array(sol[tid][0])
        if tid == right:
            return render(want) + eos + "\ninput:\n1x1\n1 0"
        if tid == wrong:
            bad = want.copy()
            bad[0, 0] = (bad[0, 0] + 1) % 10
            return render(bad) + eos
        return "12\n3" + eos

    # Each task's prompt ids, built as the pipeline builds them: the stand-in answers by
    # prompt, so evaluate must feed exactly these.
    by_prompt = {}
    for tid, task in ch.items():
        examples = [(np.array(p["input"]), np.array(p["output"])) for p in task["train"]]
        prompt = encoding.build_prompt(examples, np.array(task["test"][0]["input"]), "shaped", tok)
        by_prompt[tuple(encoding.tokenize_prompt(prompt, tok)[0])] = tid
    assert len(by_prompt) == 3
    monkeypatch.setattr(pb, "_greedy", lambda m, t, ids, n: answer_of(by_prompt[tuple(ids)]))

    res = pb.evaluate(torch.nn.Identity(), tok, ch, sol, "shaped", max_new=20)
    assert res["tasks"] == {right: 1, wrong: 0, junk: 0}
    assert (res["correct"], res["total"]) == (1, 3)
    assert res["per_family"] == {"flip_h": (1, 2), "rot90": (0, 1)}
    assert res["parse_failures"] == {"bad_header": 1}
    _check_counts(res, ch)
