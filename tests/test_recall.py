"""Demonstration recall: TTT must change the answers the pipeline writes.

A tiny random model trained on three tiny generated tasks must answer its own
demonstrations through the test path (leave-one-out prompt, views, inversion, vote) and
must not without the adapter. Two negative controls prove the check can fail: labels
shifted by one token in training, and the adapter dropped at inference.
"""

from __future__ import annotations

import pytest

from arc_ttft import config as C
from arc_ttft import encoding, selection
from arc_ttft.research import recall
from arc_ttft.tasks import load_tasks
from arc_ttft.training import synthetic

# Small enough for a test: ~25 tokens per grid pair, a few seconds of training per task.
TEST_SETTINGS = {**recall.RECALL_DEFAULTS, "ttt_steps": 100, "views": 2, "max_seq_len": 512}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on 2 busy shared cores, 2 OpenMP threads ran TTT ~50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_tasks(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    challenges, solutions = synthetic.generate(
        3, seed=1, families=["colour_map", "flip_h", "rot90"], min_size=2, max_size=3
    )
    ch, so = synthetic.write_kaggle(challenges, solutions, out, "tiny")
    return load_tasks(str(ch), str(so)).tasks


def _measure(tasks, tmp_path):
    cfg = C.validate(C.from_flat(C.RunConfig, {**TEST_SETTINGS, "output": str(tmp_path)}))
    return recall.measure_recall(tasks, cfg, tmp_path)


def test_demonstration_tasks_leave_one_out(tiny_tasks):
    task = tiny_tasks[0]
    demos = recall.demonstration_tasks(task)
    assert len(demos) == len(task.train)
    for j, d in enumerate(demos):
        assert d.id == f"{task.id}#{j}"
        assert d.test[0] is task.train[j]
        assert len(d.train) == len(task.train) - 1
        assert all(ex is not task.train[j] for ex in d.train)


def test_inference_asks_the_prompt_training_saw(tmp_path):
    """With pairs dropped to fit ``max_seq_len``, the prompt a demonstration is asked with
    (the test path) is token for token the prompt TTT trained that pair on."""
    from arc_ttft import augment, models, ttt_samples
    from arc_ttft.config import ModelConfig

    tok = models.load_tokenizer(ModelConfig(model="tiny"))
    ch, so = synthetic.write_kaggle(
        *synthetic.generate(1, seed=4, families=["flip_h"], min_size=3, max_size=8), tmp_path, "t"
    )
    task = load_tasks(str(ch), str(so)).tasks[0]
    full = len(ttt_samples.holdout_sample(task, 0, "digits", tok).input_ids)
    limit = full * 2 // 3  # forces drops in training and in inference
    cfg = C.InferConfig(views=1, rescore=0)
    dropped = 0
    for j, demo in enumerate(recall.demonstration_tasks(task)):
        trained = ttt_samples.holdout_sample(task, j, "digits", tok, limit)
        answer_start = next(i for i, x in enumerate(trained.labels) if x != -100)
        keyed, skipped = selection.build_requests(
            [demo], {demo.id: [augment.identity_view()]}, "digits", tok, {}, cfg, limit
        )
        assert skipped[(demo.id, 0)] == 0
        assert keyed[0][1].prompt_ids == trained.input_ids[:answer_start]
        dropped += len(trained.dropped)
    assert dropped > 0


def test_result_line_format():
    r = recall.RecallResult(0.95, 0.0, 20)
    assert r.line() == "recall: 0.9500 with TTT, 0.0000 without (20 demonstrations)"


def test_recall_with_ttt_high_without_low(tiny_tasks, tmp_path):
    r = _measure(tiny_tasks, tmp_path)
    assert r.n == sum(len(t.train) for t in tiny_tasks)
    assert r.with_ttt >= 0.9, r.per_task
    assert r.without_ttt <= 0.1, r.per_task
    assert (tmp_path / "run.jsonl").exists()


def test_shifted_labels_collapse_recall(tiny_tasks, tmp_path, monkeypatch):
    """Labels one token early (the model learns to predict two ahead): recall collapses."""
    real = encoding.tokenize_prompt

    def shifted(prompt, tokenizer):
        ids, labels = real(prompt, tokenizer)
        return ids, labels[1:] + [-100]

    monkeypatch.setattr(encoding, "tokenize_prompt", shifted)
    r = _measure(tiny_tasks[:2], tmp_path)
    assert r.with_ttt <= 0.2, r.per_task


def test_adapter_dropped_at_inference_collapses_recall(tiny_tasks, tmp_path, monkeypatch):
    """An inference path that ignores the adapters answers like the base model."""
    real = selection.predict_tasks

    def no_adapters(tasks, backend, tokenizer, cfg, fmt, adapters=None, *a, **kw):
        return real(tasks, backend, tokenizer, cfg, fmt, {}, *a, **kw)

    monkeypatch.setattr(selection, "predict_tasks", no_adapters)
    r = _measure(tiny_tasks[:2], tmp_path)
    assert r.with_ttt <= 0.1, r.per_task
    # Training did happen: the adapters are there, only the inference path lost them.
    assert len(list((tmp_path / "adapters").glob("*/adapter_model.safetensors"))) == 2
