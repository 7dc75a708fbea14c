"""The pipeline end to end on the tiny model: valid submission, resume, faults, budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arc_ttft import config as C
from arc_ttft import pipeline, results, shard, submission, ttt, ttt_samples, workers
from arc_ttft import shrunk_vocab as vocab
from arc_ttft.events import read_events
from arc_ttft.tasks import load_tasks, select_tasks

SMALL = dict(
    challenges="arc1-eval",
    model="tiny",
    max_seq_len=1024,
    ttt_steps=2,
    learning_rate=1e-2,
    views=2,
    rescore=1,
    backend="hf",
    budget_minutes=5.0,
)


def _cfg(tmp_path: Path, **kw) -> C.RunConfig:
    return C.validate(C.from_flat(C.RunConfig, {**SMALL, "output": str(tmp_path / "run"), **kw}))


def _tasks(cfg: C.RunConfig):
    return select_tasks(
        load_tasks(cfg.data.challenges).tasks, cfg.data.tasks or None, cfg.data.max_tasks
    )


def _valid(path: Path, tasks) -> dict:
    sub = submission.read_submission(path)
    assert submission.validate_submission(sub, tasks) == []
    return sub


def test_run_writes_every_output(tmp_path):
    cfg = _cfg(tmp_path, max_tasks=5)
    res = pipeline.run(cfg, progress=False)
    out = Path(cfg.output)
    tasks = _tasks(cfg)
    _valid(out / "submission.json", tasks)
    for name in ("config.json", "run.jsonl", "summary.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert res.score is not None and res.score_line().startswith("score: ")
    assert f"- score: {res.score.score:.4f} (" in (out / "summary.md").read_text()
    from arc_ttft import auto  # config.json holds what `auto` resolved to

    assert C.load(C.RunConfig, out / "config.json") == auto.resolve(cfg, auto.detect_machine())
    stages = {e["stage"] for e in read_events(out / "run.jsonl")}
    assert {"start", "budget", "ttt", "infer", "select", "end"} <= stages
    html = (out / "report.html").read_text()
    assert all(t.id in html for t in tasks)
    # Every task got answers on disk (what --resume reads), and an adapter unless even
    # one demonstration is longer than max_seq_len (skipped, not trained truncated).
    trained = 0
    for t in tasks:
        assert results.read_answers(out, t.id) is not None
        ttt = results.read_ttt(out, t.id)
        if ttt["stop_reason"] == "too_long":
            assert ttt["adapter"] is None
            continue
        assert (out / "adapters" / t.id / "adapter_model.safetensors").exists()
        trained += 1
    assert trained >= 3


def test_fault_in_one_task_leaves_the_others(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, max_tasks=3)
    tasks = _tasks(cfg)
    bad = tasks[1].id
    real = ttt.train_task

    def flaky(model, tok, task, *a, **kw):
        if task.id == bad:
            raise RuntimeError("injected failure")
        return real(model, tok, task, *a, **kw)

    monkeypatch.setattr(ttt, "train_task", flaky)
    pipeline.run(cfg, progress=False)
    out = Path(cfg.output)
    _valid(out / "submission.json", tasks)
    events = read_events(out / "run.jsonl")
    faults = [e for e in events if e["stage"] == "fault"]
    assert faults and faults[0]["task"] == bad and "injected" in faults[0]["error"]
    # The faulty task falls back to the base model; the others keep their adapters.
    assert results.read_ttt(out, bad)["adapter"] is None
    for t in tasks:
        assert results.read_answers(out, t.id) is not None
        if t.id != bad:
            assert results.read_ttt(out, t.id)["adapter"]


def test_short_budget_with_slow_steps_ends_on_time(tmp_path, monkeypatch):
    real = ttt_samples.answer_loss

    def slow(model, batch):
        time.sleep(0.5)
        return real(model, batch)

    monkeypatch.setattr(ttt, "answer_loss", slow)
    cfg = _cfg(tmp_path, max_tasks=4, ttt_steps=1000, budget_minutes=1.0, safety_margin_minutes=0.1)
    t0 = time.monotonic()
    pipeline.run(cfg, progress=False)
    took = time.monotonic() - t0
    assert took <= 60.0
    tasks = _tasks(cfg)
    _valid(Path(cfg.output) / "submission.json", tasks)
    events = read_events(Path(cfg.output) / "run.jsonl")
    steps = [e["steps"] for e in events if e["stage"] == "ttt" and "steps" in e]
    assert steps and max(steps) < 1000  # the guard cut the steps


def test_killed_mid_ttt_then_resumed(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "arc_ttft", "run", "--output", str(out), "--max-tasks", "3",
            "--ttt-steps", "40"]  # fmt: skip
    for k, v in SMALL.items():
        if k != "ttt_steps":
            args += ["--" + k.replace("_", "-"), str(v)]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ
    )
    log = out / "run.jsonl"
    deadline = time.monotonic() + 240
    # Wait for the first finished task, then kill hard in the middle of the next one.
    while time.monotonic() < deadline:
        if log.exists() and any(e["stage"] == "ttt" for e in read_events(log)):
            break
        assert proc.poll() is None, "run ended before it could be killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cfg = C.load(C.RunConfig, out / "config.json")
    tasks = _tasks(cfg)
    _valid(out / "submission.json", tasks)  # valid at the moment of the kill
    trained_before = [e["task"] for e in read_events(log) if e["stage"] == "ttt" and "steps" in e]
    assert trained_before

    cfg.resume = True
    pipeline.run(cfg, progress=False)
    events = read_events(log)
    resumed = [e["task"] for e in events if e.get("decision") == "resumed"]
    assert set(trained_before) <= set(resumed)
    trained = [e["task"] for e in events if e["stage"] == "ttt" and "steps" in e]
    assert len(trained) == len(set(trained)) == len(tasks), "a task was trained twice"
    _valid(out / "submission.json", tasks)


def test_resume_reuses_answers(tmp_path):
    cfg = _cfg(tmp_path, max_tasks=2, ttt_steps=0)
    log = Path(cfg.output) / "run.jsonl"
    pipeline.run(cfg, progress=False)
    first = json.loads((Path(cfg.output) / "submission.json").read_text())
    n_infer = sum(e["stage"] == "infer" for e in read_events(log))
    assert n_infer >= 1
    cfg.resume = True
    pipeline.run(cfg, progress=False)
    assert json.loads((Path(cfg.output) / "submission.json").read_text()) == first
    assert sum(e["stage"] == "infer" for e in read_events(log)) == n_infer, (
        "answers were computed again on resume"
    )


def test_shard_tasks_balances_cost():
    tasks = load_tasks("arc1-eval").tasks[:40]
    shards = workers.shard_tasks(tasks, 2, "digits", 10)
    assert sorted(t.id for s in shards for t in s) == sorted(t.id for t in tasks)
    from arc_ttft import encoding

    loads = [sum(encoding.task_tokens(t, "digits") for t in s) for s in shards]
    assert max(loads) / min(loads) < 1.1


def test_bad_config_lists_every_problem(tmp_path):
    with pytest.raises(C.ConfigError) as e:
        C.validate(C.from_flat(C.RunConfig, {"ttt_steps": -1, "views": 0, "max_tasks": 0}))
    text = str(e.value)
    assert "ttt_steps" in text and "views" in text and "max_tasks" in text
    with pytest.raises(C.ConfigError, match="unknown parameter"):
        C.from_flat(C.RunConfig, {"ttt_stepz": 3})


def test_two_workers_merge_into_one_submission(tmp_path):
    """The multi-GPU path (one process per GPU, sharded, merged) with two CPU workers, on
    generated tasks arc-nano answers (so a merged answer is told apart from a fallback)."""
    from arc_ttft.training import synthetic

    challenges, _ = synthetic.write_kaggle(
        *synthetic.generate(4, seed=123, families=["flip_h", "rot180"], max_size=5),
        tmp_path, "gen",
    )  # fmt: skip
    cfg = _cfg(tmp_path, challenges=str(challenges), model="arc-nano", ttt_steps=1, views=1,
               rescore=0, workers=2, max_seq_len=2048)  # fmt: skip
    pipeline.run(cfg, progress=False)
    out = Path(cfg.output)
    tasks = _tasks(cfg)
    _valid(out / "submission.json", tasks)
    shards = [e for e in read_events(out / "run.jsonl") if e["stage"] == "shard"]
    assert len(shards) == 2 and sum(e["tasks"] for e in shards) == 4
    # Each task was trained by exactly one worker, and the shards split the tasks...
    trained = {w: {e["task"] for e in read_events(out / f"run.worker{w}.jsonl")
                   if e["stage"] == "ttt"} for w in (0, 1)}  # fmt: skip
    assert not trained[0] & trained[1] and trained[0] | trained[1] == {t.id for t in tasks}
    assert sorted(len(v) for v in trained.values()) == sorted(e["tasks"] for e in shards)
    # ...and the merged file holds the workers' answers, which are not the fallbacks.
    sub = json.loads((out / "submission.json").read_text())
    fallback = submission.build_submission(tasks, {})
    for t in tasks:
        answers = results.read_answers(out, t.id, base_ok=False)
        assert answers is not None
        assert sub[t.id] == [{"attempt_1": a.tolist(), "attempt_2": b.tolist()} for a, b in answers]
    assert any(sub[t.id] != fallback[t.id] for t in tasks)


def test_shared_adapter_mode(tmp_path):
    cfg = _cfg(tmp_path, max_tasks=2, ttt_steps=2, views=1, rescore=0, adapter_mode="shared")
    pipeline.run(cfg, progress=False)
    out = Path(cfg.output)
    _valid(out / "submission.json", _tasks(cfg))
    shared = out / "adapters" / "shared"
    records = [results.read_ttt(out, t.id) for t in _tasks(cfg)]
    # one adapter, trained once over both tasks, and each task answered with it
    assert {r["adapter"] for r in records} == {str(shared)} and all(r["shared"] for r in records)
    assert (shared / "adapter_config.json").is_file() and records[0]["steps"] > 0
    trained = [e for e in read_events(out / "run.jsonl") if e["stage"] == "ttt" and e.get("steps")]
    assert len(trained) == 1, trained
    for t in _tasks(cfg):
        # the adapter's inference wrote answers.json (the tiny model's answers do not parse:
        # their source is a fallback, which is why the adapter is checked by file)
        answers = json.loads((results.task_dir(out, t.id) / results.ANSWERS).read_text())
        assert answers["base"] is False


def test_shrunk_vocabulary_run(tmp_path):
    """--shrink-vocab: TTT and inference both use the shrunk copy of the model."""
    cfg = _cfg(tmp_path, max_tasks=2, ttt_steps=2, views=1, rescore=0, shrink_vocab=True)
    pipeline.run(cfg, progress=False)
    out = Path(cfg.output)
    _valid(out / "submission.json", _tasks(cfg))
    events = read_events(out / "run.jsonl")
    folder = next(e["folder"] for e in events if e["stage"] == "shrink_vocab")
    kept = vocab.read_map(folder).size
    assert not [e for e in events if e["stage"] == "fault"]
    # The trainer and the backend loaded the shrunk folder, with its vocabulary...
    loads = {e["what"]: e for e in events if e["stage"] == "load"}
    assert set(loads) == {"trainer", "backend"}
    for e in loads.values():
        assert (e["model"], e["vocab"]) == (folder, kept), e
    assert kept < vocab.read_map(folder).old_size
    # ...and every adapter was trained on it (peft records its base).
    for t in _tasks(cfg):
        adapter = Path(results.read_ttt(out, t.id)["adapter"], "adapter_config.json")
        assert json.loads(adapter.read_text())["base_model_name_or_path"] == folder
    assert C.load(C.RunConfig, out / "config.json").model.shrink_vocab  # as the user asked


def test_a_worker_whose_call_was_abandoned_hands_its_tasks_to_a_fresh_one(tmp_path):
    """Issue 21 #7: a call that ignored its cancel still holds the GPU's memory, so no
    second engine is built beside it: the worker ends with WORKER_FRESH_EXIT and its
    parent starts a fresh process for the unfinished tasks."""
    import threading

    from arc_ttft import budget as B
    from arc_ttft.events import EventLog

    cfg = _cfg(tmp_path)
    out, tasks, events = Path(cfg.output), _tasks(cfg)[:2], EventLog()
    assert workers.worker_exit(out, tasks, events) == 0
    release = threading.Event()
    with pytest.raises(B.DeadlineExceeded):
        B.with_deadline(lambda: release.wait(30), 0.01, threading.Event(), grace=0.01)
    try:
        assert workers.worker_exit(out, tasks, events) == workers.WORKER_FRESH_EXIT
        with pytest.raises(RuntimeError, match="fresh worker"):
            shard.ShardWork(cfg, out, events, "cuda:0").load_backend()
    finally:
        release.set()
        B._ABANDONED[-1].join(5)
    assert workers.worker_exit(out, tasks, events) == 0
