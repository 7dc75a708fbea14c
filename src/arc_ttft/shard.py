"""One shard's work on real models: ``ShardWork`` (``schedule.ShardOps`` with peft TTT and
an inference backend) and ``process_shard``, which runs them in the order and under the
budget of ``schedule.run_shard``. The single process runs one shard; each GPU worker
(``workers``) runs its own.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arc_ttft import budget as B
from arc_ttft import config as C
from arc_ttft import costs, encoding, schedule
from arc_ttft.events import EventLog
from arc_ttft.results import (
    ANSWERS,
    ANSWERS_BASE,
    adapters_root,
    earlier_answers,
    read_answers,
    read_ttt,
    task_dir,
    write_json,
)
from arc_ttft.tasks import Task

DFS_SHARE_OF_TIMEOUT = 0.8  # of an inference call's time limit, for DFS (then scoring)


def estimate_tokens(task: Task, fmt: str, max_seq_len: int | None) -> int:
    n = encoding.task_tokens(task, fmt)
    return min(n, max_seq_len) if max_seq_len else n


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


@dataclass
class ShardWork:
    """``schedule.ShardOps`` on real models: TTT with peft, inference with a backend.

    ``worker``: the worker's index when several run (its shared adapter gets a folder of
    its own); ``publish``: what to call after every inference chunk (the single process
    rewrites the submission; a worker leaves the merge to its parent).
    """

    cfg: C.RunConfig
    out: Path
    events: EventLog
    device: str
    progress: bool = True
    worker: int | None = None
    publish_fn: Any = None
    model: Any = None
    tokenizer: Any = None
    backend: Any = None

    @property
    def max_seq_len(self) -> int:
        from arc_ttft import models

        return models.resolve_max_seq_len(self.cfg.model)

    def adapters_dir(self) -> Path:
        root = adapters_root(self.cfg, self.out)
        return root if self.worker is None else root / f"worker{self.worker}"

    def load_trainer(self) -> None:
        from arc_ttft import models, ttt

        model, self.tokenizer = models.load_model(
            self.cfg.model, device=self.device, for_training=True
        )
        self.model = ttt.prepare_peft_model(model, self.cfg.ttt)
        self.events.log(
            "load", what="trainer", model=self.cfg.model.model, vocab=len(self.tokenizer)
        )

    def train(self, task: Task, steps: int, should_stop) -> schedule.TrainOutcome:
        from arc_ttft import models, ttt

        seq_len = self.max_seq_len
        for attempt in range(2):
            try:
                res = ttt.train_task(
                    self.model, self.tokenizer, task, self.cfg.ttt, self.cfg.model.format,
                    seq_len, steps=steps, output_dir=self.adapters_dir(), events=self.events,
                    should_stop=should_stop, progress=self.progress,
                )  # fmt: skip
                break
            except Exception as e:
                if attempt == 0 and models.is_oom(e):
                    self.events.log(
                        "fault", task=task.id, where="ttt", error=repr(e)[:500], oom=True
                    )
                    _free_memory()
                    seq_len = max(256, seq_len // 2)  # retry shorter: drop pairs to fit
                    continue
                write_json(
                    task_dir(self.out, task.id) / "ttt.json", {"adapter": None, "decision": "fault"}
                )
                raise
        write_json(task_dir(self.out, task.id) / "ttt.json", res.to_dict())
        return schedule.TrainOutcome(res.steps, res.seconds, res.adapter)

    def train_shared(self, tasks: list[Task], should_stop) -> schedule.TrainOutcome:
        from arc_ttft import ttt

        res = ttt.train_shared(
            self.model, self.tokenizer, tasks, self.cfg.ttt, self.cfg.model.format,
            self.max_seq_len, output_dir=self.adapters_dir(), events=self.events,
            progress=self.progress, should_stop=should_stop,
        )  # fmt: skip
        for t in tasks:
            write_json(task_dir(self.out, t.id) / "ttt.json", {**res.to_dict(), "shared": True})
        return schedule.TrainOutcome(res.steps, res.seconds, res.adapter)

    def close_trainer(self) -> None:
        self.model = None
        _free_memory()

    def load_backend(self) -> None:
        from arc_ttft import infer

        if B.abandoned_alive() and self.device.startswith("cuda"):
            # Its engine still holds the GPU's memory: a second one would not fit. The
            # worker ends instead and a fresh process takes the rest (workers.worker_exit).
            raise RuntimeError(
                "a call abandoned at its deadline still holds GPU memory; a fresh worker "
                "takes the unfinished tasks"
            )
        self.backend = infer.make_backend(self.cfg, device=self.device)
        # Warm up (vLLM builds its engine at the first call): the load's cost is measured
        # here, not charged to the first inference chunk, whose time scales the reserve.
        tok = self.backend.tokenizer
        self.backend.generate([infer.Request(tok("0\n")["input_ids"], max_new_tokens=1)])
        self.events.log(
            "load", what="backend", backend=self.backend.name, model=self.cfg.model.model,
            vocab=len(self.backend.tokenizer),
        )  # fmt: skip

    def infer(
        self, tasks: list[Task], adapters, timeout_s: float, base: bool, predicted_cap: bool = False
    ) -> float | None:
        from arc_ttft import selection

        backend = self.backend
        # DFS stops itself before the hard timeout, keeping what it found and leaving time
        # to score the candidates; the timeout then only catches a hung engine.
        dfs_deadline = time.time() + DFS_SHARE_OF_TIMEOUT * timeout_s
        measured: dict[str, Any] = {}
        cancel = threading.Event()  # set at the timeout: the backend stops and lets go
        backend.cancel = cancel
        selections = B.with_deadline(
            lambda: selection.predict_tasks(
                tasks, backend, backend.tokenizer, self.cfg.infer, self.cfg.model.format,
                {} if base else {t.id: adapters.get(t.id) for t in tasks}, self.max_seq_len,
                seed=self.cfg.ttt.seed, events=self.events,
                adapter_transforms=self.cfg.ttt.ttt_transforms, deadline=dfs_deadline,
                measured=measured, predicted_cap=predicted_cap,
            ),
            timeout_s,
            cancel,
        )  # fmt: skip
        name = ANSWERS_BASE if base else ANSWERS
        for t in tasks:
            sels = selections[t.id]
            # An earlier real answer (the probe's, or an adapter's before a resume) fills
            # the gaps before any fallback: an empty inference must never erase it.
            earlier = [] if base else earlier_answers(self.out, t.id)
            # who answered: the probe (base model), the task's adapter, or the base model
            # when the task has no adapter (no TTT, or TTT skipped by the budget)
            source = "probe" if base else "adapter" if adapters.get(t.id) else "base"
            sourced = [
                s.sourced_attempts(t, i, earlier[i] if i < len(earlier) else (), source)
                for i, s in enumerate(sels)
            ]
            write_json(
                task_dir(self.out, t.id) / name,
                {
                    "attempts": [{"attempt_1": a, "attempt_2": b} for (a, b), _ in sourced],
                    "sources": [list(src) for _, src in sourced],
                    "selections": [s.to_dict() for s in sels],
                    "base": base,
                },
            )
            self.events.log(
                "select", task=t.id, base=base, candidates=[len(s.candidates) for s in sels]
            )
            for i, s in enumerate(sels):
                reason = s.empty_reason(self.cfg.infer.views)
                if reason or s.dfs_stopped in ("nodes", "deadline"):  # cut short
                    self.events.log(
                        "empty" if reason else "dfs_stopped", task=t.id, test=i, base=base,
                        reason=reason or s.dfs_stopped, samples=s.samples, invalid=s.invalid,
                        kept=[src for src in sourced[i][1] if src != "fallback"],
                    )  # fmt: skip
        return measured.get("answer_tokens")

    def close_backend(self) -> None:
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception as e:  # noqa: BLE001 - a broken engine must not end the run
                self.events.log("fault", where="close_backend", error=repr(e)[:500])
        self.backend = None
        _free_memory()

    def publish(self) -> None:
        if self.publish_fn is not None:
            self.publish_fn()


def process_shard(
    tasks: list[Task],
    cfg: C.RunConfig,
    out: Path,
    guard: B.Budget,
    events: EventLog,
    device: str | None = None,
    progress: bool = True,
    worker: int | None = None,
    publish_fn: Any = None,
) -> schedule.ShardReport:
    """TTT for the whole shard, then one inference engine for all its adapters (the order
    and the budget are ``schedule.run_shard``'s)."""
    from arc_ttft import models

    dev = device or models.default_device()
    cost = costs.CostModel.for_device(dev, cfg.model.model)
    work = ShardWork(cfg, out, events, dev, progress, worker, publish_fn)
    adapters: dict[str, str | None] = {}
    ttt_todo = []
    for t in tasks:
        done = read_ttt(out, t.id) if cfg.resume else None
        if done is not None:
            adapters[t.id] = done.get("adapter")
            events.log("ttt", task=t.id, decision="resumed", adapter=done.get("adapter"))
        else:
            ttt_todo.append(t)
    infer_todo = [t for t in tasks if not (cfg.resume and read_answers(out, t.id, False))]
    max_seq_len = models.resolve_max_seq_len(cfg.model)
    tokens = {t.id: estimate_tokens(t, cfg.model.format, max_seq_len) for t in tasks}
    return schedule.run_shard(
        cfg, work, guard, cost, events,
        tokens=tokens, ttt_todo=ttt_todo, infer_todo=infer_todo, adapters=adapters,
    )  # fmt: skip
