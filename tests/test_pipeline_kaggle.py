"""The path Kaggle takes: several workers, stage faults, the clock, a binding budget.

Each test here failed on the pipeline before the fix it names.

Over 500 lines: one test per fault a Kaggle run met or could meet (a killed worker, a hung
load, an abandoned call, a binding budget), each with its set-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import test_pipeline  # the small run and checks of the pipeline tests

from arc_ttft import budget as B
from arc_ttft import (
    cli,
    costs,
    infer,
    models,
    pipeline,
    results,
    schedule,
    selection,
    shard,
    submission,
    workers,
)
from arc_ttft import config as C
from arc_ttft.events import EventLog, read_events
from arc_ttft.tasks import load_tasks, select_tasks

# test_pipeline's small run, without the probe or re-scoring (these tests count calls).
SMALL = {**test_pipeline.SMALL, "max_seq_len": 512, "rescore": 0, "probe_tasks": 0}
_tasks, _valid = test_pipeline._tasks, test_pipeline._valid


def _cfg(tmp_path: Path, **kw) -> C.RunConfig:
    return C.validate(C.from_flat(C.RunConfig, {**SMALL, "output": str(tmp_path / "run"), **kw}))


# ---------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------


def test_a_worker_never_writes_the_submission(tmp_path):
    """Only the parent writes submission.json: a worker writing its own shard's tasks left
    the file short of the other shard's until the next merge."""
    cfg = _cfg(tmp_path, max_tasks=3, ttt_steps=0, views=1)
    out = Path(cfg.output)
    out.mkdir(parents=True)
    tasks = _tasks(cfg)
    results.write_submission_now(out, tasks)
    guard = B.Budget(B.Clock(), 300.0)
    shard.process_shard(tasks[:1], cfg, out, guard, EventLog(), progress=False, worker=0)
    _valid(out / "submission.json", tasks)  # still every task of the run
    assert results.read_answers(out, tasks[0].id, base_ok=False) is not None


def test_two_workers_keep_their_shared_adapters_and_the_shrunk_vocabulary(tmp_path):
    """--adapter-mode shared: each worker had written adapters/shared (one could serve the
    other's); --shrink-vocab: the workers ran the full model (config.json was written
    before the shrunk model was resolved, and workers never resolved it)."""
    cfg = _cfg(
        tmp_path,
        max_tasks=2,
        workers=2,
        views=1,
        adapter_mode="shared",
        shrink_vocab=True,
        max_seq_len=1024,
    )
    res = pipeline.run(cfg, progress=False)
    out = Path(cfg.output)
    tasks = _tasks(cfg)
    _valid(out / "submission.json", tasks)
    assert res.faults == []
    adapters = {results.read_ttt(out, t.id)["adapter"] for t in tasks}
    assert len(adapters) == 2 and all(Path(a, "adapter_config.json").is_file() for a in adapters)
    full = len(models.load_tokenizer(C.ModelConfig(model="tiny")))
    loads = [
        e for w in (0, 1) for e in read_events(out / f"run.worker{w}.jsonl") if e["stage"] == "load"
    ]
    assert {e["what"] for e in loads} == {"trainer", "backend"}
    assert all(e["vocab"] < full for e in loads), loads  # trained and served shrunk
    assert C.load(C.RunConfig, out / "config.json").model.shrink_vocab  # as the user asked


def test_a_fresh_run_ignores_answers_left_by_an_earlier_run(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, max_tasks=2, ttt_steps=0)
    out = Path(cfg.output)
    tasks = _tasks(cfg)
    stale = [[7, 7], [7, 7]]
    for t in tasks:
        results.write_json(
            results.task_dir(out, t.id) / "answers.json",
            {"attempts": [{"attempt_1": stale, "attempt_2": stale}] * len(t.test)},
        )

    def broken(*a, **kw):
        raise RuntimeError("injected: inference fails")

    monkeypatch.setattr(selection, "predict_tasks", broken)
    pipeline.run(cfg, progress=False)
    sub = _valid(out / "submission.json", tasks)
    assert all(e["attempt_1"] != stale for t in tasks for e in sub[t.id])


# ---------------------------------------------------------------------------------------
# Faults end the stage, not the run
# ---------------------------------------------------------------------------------------


def test_a_backend_that_cannot_load_ends_the_run_normally(tmp_path, monkeypatch, capsys):
    def cannot_load(*a, **kw):
        raise ImportError("injected: vllm is broken")

    monkeypatch.setattr(infer, "make_backend", cannot_load)
    out = tmp_path / "run"
    args = ["run", "--output", str(out), "--max-tasks", "2"]
    for k, v in SMALL.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    assert cli.main(args) == 0
    tasks = select_tasks(load_tasks("arc1-eval").tasks, None, 2)
    _valid(out / "submission.json", tasks)
    assert "load_backend: ImportError: injected" in (out / "summary.md").read_text()
    assert "faults: 1" in capsys.readouterr().out
    assert any(e["stage"] == "fault" for e in read_events(out / "run.jsonl"))


def test_a_model_that_is_nowhere_ends_the_run_normally(tmp_path):
    cfg = _cfg(tmp_path, max_tasks=1, model=str(tmp_path / "no-such-model"))
    res = pipeline.run(cfg, progress=False)
    _valid(res.submission, _tasks(cfg))
    assert any("load_trainer" in f for f in res.faults)
    assert any("load_backend" in f for f in res.faults)


def test_random_weights_reach_the_inference_backend(monkeypatch):
    """make_backend looked for real weights before building the hf backend, so
    `--model Qwen2-0.5B --random-weights` trained, then died in inference."""
    seen = []
    real = models.load_model

    def fake_load(cfg, device=None, for_training=False):
        seen.append(cfg)
        return real(C.ModelConfig(model="tiny"), device="cpu")

    monkeypatch.setattr(models, "load_model", fake_load)
    cfg = C.from_flat(C.RunConfig, {"model": "Qwen2-0.5B", "random_weights": True, "backend": "hf"})
    backend = infer.make_backend(cfg, device="cpu")
    assert backend.name == "hf" and seen[0].random_weights


# ---------------------------------------------------------------------------------------
# Inference chunks
# ---------------------------------------------------------------------------------------


def _answer(task, i, grids=None):
    """A Selection whose candidates are ``grids`` (default: the test input)."""
    grids = [task.test[i].input.tolist()] if grids is None else grids
    return selection.Selection(task.id, i, [selection.Candidate(g, count=1) for g in grids])


class _FakeTokenizer:
    def __call__(self, text):
        return {"input_ids": [0] * len(text)}

    def __len__(self):
        return 10


class _FakeBackend:
    name = "fake"
    tokenizer = _FakeTokenizer()

    def generate(self, requests):
        return [[] for _ in requests]

    def close(self):
        pass


def test_a_hung_chunk_costs_one_chunk(tmp_path, monkeypatch):
    """A hang used to send every later chunk to the fallbacks; now the backend is rebuilt."""
    monkeypatch.setattr(schedule, "HANG_FLOOR_SECONDS", 1.0)
    monkeypatch.setattr(infer, "make_backend", lambda *a, **kw: _FakeBackend())
    calls = []

    def hang_once(tasks, *a, **kw):
        calls.append([t.id for t in tasks])
        if len(calls) == 2:  # the first chunk measures; the second hangs
            time.sleep(5)
        return {t.id: [_answer(t, i) for i in range(len(t.test))] for t in tasks}

    monkeypatch.setattr(selection, "predict_tasks", hang_once)
    cfg = _cfg(tmp_path, max_tasks=6, ttt_steps=0, views=1)
    res = pipeline.run(cfg, progress=False)
    out = Path(cfg.output)
    events = read_events(out / "run.jsonl")
    hung = [e for e in events if e["stage"] == "fault" and "Deadline" in e["error"]]
    assert len(hung) == 1 and len(res.faults) == 1
    assert hung[0]["tasks"] == calls[1]
    backends = [e for e in events if e["stage"] == "load" and e["what"] == "backend"]
    assert len(backends) == 2  # rebuilt after the hang
    answered = [t.id for t in _tasks(cfg) if results.read_answers(out, t.id) is not None]
    assert sorted(answered) == sorted(i for c in calls if c != calls[1] for i in c)
    assert len(answered) == 6 - len(calls[1])


def _infer_with(monkeypatch, work, tasks, grids, base):
    """``work.infer`` with a predict_tasks that answers every test input with ``grids``."""

    def fake(ts, *a, **kw):
        return {t.id: [_answer(t, i, grids) for i in range(len(t.test))] for t in ts}

    monkeypatch.setattr(selection, "predict_tasks", fake)
    work.infer(tasks, {} if base else {t.id: f"/adapters/{t.id}" for t in tasks}, 30.0, base)


def test_an_empty_adapter_inference_keeps_the_probes_answers(tmp_path, monkeypatch):
    """Seen on 68b16354: the adapter's inference found no candidate, Selection.attempts
    filled both attempts with fallbacks, answers.json won over answers.base.json, and the
    submission held the task's own test input instead of the probe's answer."""
    cfg = _cfg(tmp_path, max_tasks=2, views=2)
    out = Path(cfg.output)
    tasks = _tasks(cfg)
    work = shard.ShardWork(cfg, out, EventLog(out / "run.jsonl"), "cpu", progress=False)
    work.backend = _FakeBackend()
    _infer_with(monkeypatch, work, tasks, [[[7]], [[8]]], base=True)  # the probe
    _infer_with(monkeypatch, work, tasks, [], base=False)  # the adapter: nothing
    for t in tasks:
        assert [(a.tolist(), b.tolist()) for a, b in results.read_answers(out, t.id)] == [
            ([[7]], [[8]])
        ] * len(t.test)
    empty = [e for e in read_events(out / "run.jsonl") if e["stage"] == "empty"]
    assert len(empty) == sum(len(t.test) for t in tasks)
    assert all(e["kept"] == ["earlier", "earlier"] and e["reason"] for e in empty)
    # Both answered: the adapter's best first, then the probe's (merged, no fallback).
    _infer_with(monkeypatch, work, tasks, [[[5]]], base=False)
    for t in tasks:
        data = json.loads((results.task_dir(out, t.id) / results.ANSWERS).read_text())
        assert data["attempts"][0] == {"attempt_1": [[5]], "attempt_2": [[7]]}
        assert data["sources"][0] == ["adapter", "earlier"]
    sub = results.write_submission_now(out, tasks)
    assert all(sub[t.id][0]["attempt_1"] == [[5]] for t in tasks)


def test_an_abandoned_call_does_not_abort_the_process(tmp_path):
    """A chunk abandoned inside torch aborted the run at exit (exit 134, "terminate called
    without an active exception") after it had printed its score."""
    script = tmp_path / "abandon.py"
    script.write_text(
        "import sys, torch\n"
        "from arc_ttft import budget\n"
        "def work():\n"
        "    a = torch.randn(300, 300)\n"
        "    while True:\n"
        "        a = (a @ a).tanh()\n"
        "try:\n"
        "    budget.with_deadline(work, 0.3)\n"
        "except budget.DeadlineExceeded:\n"
        "    print('abandoned')\n"
        "print('score: 1.0000 (1/1 tasks)')\n"
        "raise SystemExit(budget.exit_code(int(sys.argv[1])))\n"
    )
    for code in (0, 3):
        res = subprocess.run(
            [sys.executable, str(script), str(code)], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == code, res.stderr
        assert res.stdout.splitlines() == ["abandoned", "score: 1.0000 (1/1 tasks)"]


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch):
    """At the deadline the parent only sent SIGTERM and waited: a worker hung in a CUDA
    call would hold the run past Kaggle's limit."""
    stubborn = [sys.executable, "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(300)"]  # fmt: skip
    procs = []

    def spawn(*a, **kw):
        procs.append(subprocess.Popen(stubborn, stdout=subprocess.PIPE, text=True))
        procs[-1].stdout.readline()  # its handler is set
        return procs[-1]

    monkeypatch.setattr(workers, "_spawn_worker", spawn)
    monkeypatch.setattr(workers, "KILL_GRACE_S", 1.0)
    clock = B.FakeClock()
    guard = B.Budget(clock, 10.0)
    clock.advance(11.0)  # past the deadline
    cfg = _cfg(tmp_path, max_tasks=2)
    tasks = _tasks(cfg)
    out = Path(cfg.output)
    t0 = time.monotonic()
    faults = workers.run_workers([tasks[:1], tasks[1:]], cfg, out, guard, EventLog(), tasks)
    assert time.monotonic() - t0 < 20
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
    assert len([f for f in faults if "killed" in f]) == 2


def test_a_hung_model_load_ends_at_the_deadline():
    """Model loading had no timeout: a load that never returned held the run forever."""
    import numpy as np

    from arc_ttft.research import simulate as S

    tasks = load_tasks("arc1-eval").tasks[:3]
    cfg = C.validate(C.from_flat(C.RunConfig, {"probe_tasks": 0, "ttt_steps": 2}))
    truth = S.TrueCosts(step_per_token=1e-6, gen_per_token=1e-6)
    tokens = {t.id: 100.0 for t in tasks}

    class HungLoads(S.FakeShard):
        def load_trainer(self):
            time.sleep(30)

        def load_backend(self):
            time.sleep(30)

    ops = HungLoads(B.FakeClock(), cfg, truth, tokens, np.random.default_rng(0))
    guard = B.Budget(B.Clock(), 3.0)
    cost = costs.CostModel()
    t0 = time.monotonic()
    report = schedule.run_shard(
        cfg, ops, guard, cost, EventLog(), tokens=tokens, ttt_todo=tasks, infer_todo=tasks,
        adapters={},
    )  # fmt: skip
    assert time.monotonic() - t0 < 8
    assert any("load_trainer" in f for f in report.faults)


def test_the_entry_points_exit_through_the_budget():
    """The console script and both ``python -m`` entries end with budget.exit_code."""
    import tomllib

    import arc_ttft

    root = Path(arc_ttft.__file__).parent
    meta = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["arc-ttft"] == "arc_ttft.cli:entry"
    assert "entry()" in (root / "__main__.py").read_text()
    assert "B.exit_code(worker_main(" in (root / "workers.py").read_text()


def test_chunks_follow_the_measured_cost():
    tasks = load_tasks("arc1-eval").tasks[:40]
    cfg = C.from_flat(C.RunConfig, {"views": 8})
    guard = B.Budget(B.FakeClock(), 3600.0)
    cost = costs.CostModel(gen_seconds_per_token=1e-3, score_seconds_per_token=1e-4)
    assert schedule.next_chunk(tasks, cfg, cost, 1e9) == 1  # not measured yet: one task
    cost.observe_inference(10.0, 10.0)
    target = schedule.chunk_target(tasks, cfg, cost, guard)
    k = schedule.next_chunk(tasks, cfg, cost, target)
    assert 1 < k < len(tasks)
    assert costs.inference_seconds(tasks[:k], cfg, cost) <= target
    cost.observe_inference(10.0, 40.0)  # slower than thought: smaller chunks
    assert schedule.next_chunk(tasks, cfg, cost, target) < k
    assert schedule.chunk_timeout(100.0, cfg, guard) == 400.0  # a multiple of the estimate
    assert schedule.chunk_timeout(1.0, cfg, guard) == schedule.HANG_FLOOR_SECONDS


# ---------------------------------------------------------------------------------------
# The clock
# ---------------------------------------------------------------------------------------


def test_the_budget_counts_from_the_notebook_start(tmp_path):
    cfg = _cfg(
        tmp_path, max_tasks=1, ttt_steps=0, budget_minutes=10.0, started_at=time.time() - 120
    )
    pipeline.run(cfg, progress=False)
    start = next(e for e in read_events(Path(cfg.output) / "run.jsonl") if e["stage"] == "start")
    margin = cfg.budget.margin_seconds()
    assert start["deadline_in"] == pytest.approx(600 - 120 - margin, abs=5)


def test_the_budget_start_can_come_from_the_environment(monkeypatch):
    cfg = C.RunConfig()
    clock = B.FakeClock(1000.0)
    assert pipeline.start_time(cfg, clock) is None
    monkeypatch.setenv("ARC_TTFT_STARTED_AT", str(time.time() - 60))
    assert pipeline.start_time(cfg, clock) == pytest.approx(940.0, abs=1)


N_BINDING = 15


@pytest.fixture
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_binding_budget_infers_every_task_first(tmp_path, one_torch_thread):
    """The measured defect: with 4 minutes for 40 tasks and 200 TTT steps each, TTT ate
    the inference reserve and only 18 of 40 tasks reached inference.

    Here 90 s for 15 of the small evaluation tasks at 400 steps each, on one torch
    thread (what a worker of the README's `pytest -n 2` has; pinned so that `-n 0` plans
    at the same speed): the budget binds, and the reserve, priced for answers as long as
    whole grids, still leaves time to train. (20 tasks of arc1-eval, up to 30x30, left
    none at one thread: the reserve was 120 s of the 104 left.) Before answers were
    capped at the predicted grid under a binding budget, only 8 of these 15 tasks got
    their adapter's inference: answers that ran on took the others' time."""
    cfg = C.validate(
        C.from_flat(
            C.RunConfig,
            {
                "challenges": "arc1-eval-small",
                "max_tasks": N_BINDING,
                "model": "tiny",
                "budget_minutes": 1.5,
                "ttt_steps": 400,
                "output": str(tmp_path / "run"),
            },
        )
    )
    t0 = time.monotonic()
    pipeline.run(cfg, progress=False)
    took = time.monotonic() - t0
    out = Path(cfg.output)
    tasks = _tasks(cfg)
    trained = [e for e in read_events(out / "run.jsonl") if e["stage"] == "ttt" and e.get("steps")]
    adapters = {e["task"] for e in trained}
    # A task with an adapter counts only once its adapter answered: the probe's base
    # answers do not stand in for it (20 of 24 used to be enough to pass).
    inferred = [
        t.id for t in tasks if results.read_answers(out, t.id, base_ok=t.id not in adapters)
    ]
    print(f"{len(inferred)}/{N_BINDING} inferred, {len(trained)} trained, {took:.0f} s of 90")
    assert took <= 90 - cfg.budget.margin_seconds() + 2
    # The budget did bind: the tasks did not all train their 400 steps.
    assert sum(e["steps"] for e in trained) < 400 * N_BINDING
    # The defect left 22 of 40 tasks without inference. The cost estimates behind the
    # reserve come from one probe task on a shared CI machine: 95%, as issue 21 asks.
    assert len(inferred) >= 0.95 * N_BINDING
    # ...and the run still fine-tunes: it does not meet the promise by skipping TTT.
    assert len(trained) >= N_BINDING // 4
    # The adapters' answers stopped at the predicted grids (the probe's did not).
    chunks = [e for e in read_events(out / "run.jsonl") if e["stage"] == "infer"]
    assert chunks[0]["predicted_cap"] is False and chunks[-1]["predicted_cap"] is True


# ---------------------------------------------------------------------------------------
# The whole promise: a worker killed, a reader that never sees a bad file
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_submission_is_always_whole(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "arc_ttft", "run", "--output", str(out), "--max-tasks", "7",
            "--workers", "2", "--budget-minutes", "2", "--ttt-steps", "1000",
            "--max-seq-len", "1024"]  # fmt: skip
    # 1000 steps a task: the budget binds, so the workers are still busy at 30 s.
    for k, v in SMALL.items():
        if k not in ("ttt_steps", "budget_minutes", "max_seq_len"):
            args += ["--" + k.replace("_", "-"), str(v)]
    tasks = select_tasks(load_tasks("arc1-eval").tasks, None, 7)
    problems: list[str] = []
    stop = threading.Event()

    def reader():  # polls like a grader would, from the first write to the end
        path = out / "submission.json"
        while not stop.is_set():
            if path.exists() or problems:
                try:
                    sub = json.loads(path.read_text())
                    bad = submission.validate_submission(sub, tasks)
                    if bad:
                        problems.append(f"invalid: {bad[:2]}")
                except (OSError, ValueError) as e:
                    problems.append(f"unreadable: {e!r}")
            time.sleep(0.1)

    t0 = time.monotonic()
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ
    )
    while not (out / "submission.json").exists():
        assert proc.poll() is None and time.monotonic() - t0 < 60
        time.sleep(0.05)
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    time.sleep(max(0.0, 30 - (time.monotonic() - t0)))
    workers = subprocess.run(
        ["pgrep", "-f", f"arc_ttft.workers {out}"], capture_output=True, text=True
    ).stdout.split()
    assert workers, "no worker alive at 30 s"
    os.kill(int(workers[0]), signal.SIGKILL)
    rc = proc.wait(timeout=240)
    took = time.monotonic() - t0
    stop.set()
    th.join()
    assert rc == 0
    assert problems == []
    assert took <= 120
    events = read_events(out / "run.jsonl")
    assert any(e["stage"] == "fault" and e.get("where") == "worker" for e in events)
    assert any(e["stage"] == "worker_restart" for e in events)
    answered = [t.id for t in tasks if results.read_answers(out, t.id) is not None]
    assert len(answered) == 7


def test_the_probe_spreads_over_task_sizes():
    """The probe's pooled ratio scales the reserve of every task: it must not see only the
    first (or only the small) tasks, even when the time limit cuts it short."""
    tasks = load_tasks("arc1-eval").tasks[:40]
    rank = {t.id: i for i, t in enumerate(tasks)}  # tokens = position: sizes 0..39
    order = [rank[t.id] for t in schedule.probe_order(tasks, rank, 16)]
    assert len(set(order)) == 16
    assert order[0] in range(18, 23)  # the median first
    assert min(order[:3]) < 5 and max(order[:3]) > 34  # then both extremes
    assert [rank[t.id] for t in schedule.probe_order(tasks[:2], rank, 16)] == [1, 0]
