"""`arc-ttft sweep`: arms x seeds x shards of `arc-ttft run`, spread over a Ray cluster.

A spec (TOML; its format is in ``sweep_spec``) names the tasks, the arms (RunConfig overrides, optionally a
fine-tune first), the seeds and the resources of one job. Each (arm, seed, shard) is one
Ray task that runs ``pipeline.run`` on its shard of the tasks in a Python process of its
own (a crashed or out-of-memory run takes only itself down, and a GPU is handed back
whole). An arm with a ``finetune`` table first runs ``training.finetune.run`` once per
seed; arms with the same fine-tune share it.

Without an address a fresh Ray starts on this machine; with ``--address auto``
or ``ray://host:10001`` the sweep joins that cluster. Ray retries a job whose process or
node dies (``max_retries``); a job that keeps failing is recorded as failed and the
sweep goes on. Every job writes its ``result.json`` atomically, so a killed driver loses
nothing finished, and ``--resume`` reruns only the jobs without one.

Results per arm: the shards' submissions merged per seed, scored, the mean over seeds
with a 95% interval, per rule family (generated tasks) or grid-size bucket, appended to
``sweep.jsonl`` and written to ``summary.md`` and ``sweep.png``.

The spec and its jobs are in ``sweep_spec``, merging and the summary in ``sweep_summary``;
this module runs the jobs.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arc_ttft import config as C
from arc_ttft.config import ConfigError, option
from arc_ttft.research.sweep_spec import (
    Job,
    SweepSpec,
    plan_jobs,
    read_result,
    read_spec,
    scored_tasks,
    spec_problems,
    write_json_atomic,
)
from arc_ttft.research.sweep_summary import SweepResult, append_jsonl, summarise, ttt_final_losses

RAY_MISSING = (
    "arc-ttft sweep needs Ray, which is not installed (fix: pip install -e '.[sweep]', "
    "or pip install 'ray>=2.40')"
)


@dataclass
class SweepConfig:
    """`arc-ttft sweep`: a spec's arms, seeds and shards as Ray tasks."""

    spec: str = option("", "The sweep spec (TOML): tasks, arms, seeds, resources.")
    address: str | None = option(
        None, "Ray cluster to join (auto, HOST:PORT or ray://HOST:10001); unset: start Ray here."
    )
    output: str = option("runs/sweep", "Folder for the jobs, sweep.jsonl, summary.md, sweep.png.")
    resume: bool = option(False, "Keep the finished jobs in --output and run only the others.")

    def problems(self) -> list[str]:
        return [] if self.spec else ["spec: missing (fix: --spec SWEEP.toml)"]


# ---------------------------------------------------------------------------------------
# Running one job
# ---------------------------------------------------------------------------------------


def execute(job: Job) -> dict:
    """Run one job in this process and write its ``result.json``."""
    t0 = time.monotonic()
    base = {"id": job.id, "kind": job.kind, "arm": job.arm, "seed": job.seed,
            "shard": job.shard, "host": socket.gethostname(), "node": job.node}  # fmt: skip
    if job.kind == "finetune":
        from arc_ttft.training.config import FinetuneConfig
        from arc_ttft.training.finetune import run as finetune

        cfg = C.validate(C.from_flat(FinetuneConfig, job.flat))
        res = finetune(cfg, progress=False)
        trained = json.loads((res.output / "train_tasks.json").read_text())
        result = {
            **base,
            "model_dir": str(res.model_dir),
            "format": cfg.model.format,
            "max_seq_len": cfg.model.max_seq_len,
            "steps": res.steps,
            "final_loss": res.final_loss,
            "train_tasks": res.n_train_tasks,
            "scored_in_training": sorted({t["id"] for t in trained} & set(job.scored)),
        }
    else:
        from arc_ttft import pipeline

        cfg = C.validate(C.from_flat(C.RunConfig, job.flat))
        res = pipeline.run(cfg, progress=False)
        losses = ttt_final_losses(res.output)
        result = {
            **base,
            "tasks": list(cfg.data.tasks),
            "submission": str(res.submission),
            "score": None if res.score is None else res.score.score,
            "solved": None if res.score is None else res.score.solved_tasks,
            "per_task": None if res.score is None else res.score.per_task,
            "ttt_losses": losses,
            "faults": list(res.faults),
        }
    result.update(status="done", seconds=round(time.monotonic() - t0, 1))
    write_json_atomic(Path(job.folder) / "result.json", result)
    return result


def _die_with_parent() -> None:
    # The job's process dies with the Ray worker that started it (a killed node or
    # driver must not leave runs behind holding a GPU).
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_job_process(job: dict, finetuned: dict | None) -> dict:
    """The Ray task: the job in a fresh Python process (``python -m
    arc_ttft.research.sweep JOB.json``); raises on failure so that Ray retries it."""
    import ray  # only ever called inside a Ray task

    job = Job(**job)
    job.node = ray.get_runtime_context().get_node_id()
    if finetuned is not None:
        job.flat.update(
            model=finetuned["model_dir"],
            format=finetuned["format"],
            max_seq_len=finetuned["max_seq_len"],
        )
    folder = Path(job.folder)
    done = read_result(job)
    if done is not None and done.get("status") == "done":
        return done  # an earlier attempt finished; its node died before it could report
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "job.json", dataclasses.asdict(job))
    with (folder / "started").open("a") as f:  # one line per attempt
        f.write(f"{job.node}\n")
    log = folder / "job.log"
    with log.open("a") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "arc_ttft.research.sweep", str(folder / "job.json")],
            stdout=f,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    result = read_result(job)
    if proc.returncode != 0 or result is None or result.get("status") != "done":
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(
            f"{job.id}: exit {proc.returncode} on {socket.gethostname()}; {log}:\n{tail}"
        )
    return result


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------


def run_sweep(cfg: SweepConfig, *, progress: bool = True) -> SweepResult:
    """`arc-ttft sweep`: read and check the spec, run it (``sweep``)."""
    C.validate(cfg)
    spec = read_spec(cfg.spec)
    return sweep(spec, cfg.output, address=cfg.address, resume=cfg.resume, progress=progress)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError([RAY_MISSING]) from None
    return ray


def resolved_spec(spec: SweepSpec) -> dict:
    """The spec as ``spec.json`` stores it (plain JSON values), for comparing on --resume."""
    return json.loads(json.dumps(dataclasses.asdict(spec), default=str))


def extends(spec: dict, stored: dict) -> bool:
    """Whether the resolved ``spec`` is the ``stored`` one, or it with arms added: then
    the finished jobs still mean what they meant, and a resumed sweep runs the new arms'
    jobs only (an arm is added to a finished sweep without rerunning the others)."""
    new_arms = {a["name"]: a for a in spec.get("arms", [])}
    kept = all(new_arms.get(a["name"]) == a for a in stored.get("arms", []))
    shared = {k: v for k, v in spec.items() if k != "arms"}
    return kept and shared == {k: v for k, v in stored.items() if k != "arms"}


def sweep(
    spec: SweepSpec,
    output: str | Path,
    *,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Run every unfinished job of ``spec`` on Ray, then merge and summarise."""
    errors = spec_problems(spec)
    if errors:
        raise ConfigError(errors)
    out = Path(output)
    tasks = scored_tasks(spec)
    jobs = plan_jobs(spec, out, [t.id for t in tasks])
    results = {j.id: r for j in jobs if (r := read_result(j)) and r.get("status") == "done"}
    if results and not resume:
        raise ConfigError([f"output: {out} holds {len(results)} finished jobs of a sweep "
                           "(fix: --resume to keep them and run the rest, or a new --output)"])  # fmt: skip
    resolved = resolved_spec(spec)
    stored = out / "spec.json"
    if results and stored.exists() and not extends(resolved, json.loads(stored.read_text())):
        raise ConfigError([f"spec: not the one the sweep in {out} started with, nor that one "
                           "with arms added (fix: resume with the same spec, add arms without "
                           "changing the others, or give a new --output)"])  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "spec.json", resolved)
    todo = [j for j in jobs if j.id not in results]
    for job in todo:  # a killed sweep's marks would count its queued jobs as running
        (Path(job.folder) / "started").unlink(missing_ok=True)
    failed = _run_on_ray(todo, results, spec, out, address, progress) if todo else 0
    return summarise(spec, out, tasks, jobs, jobs_run=len(todo), jobs_failed=failed)


def _run_on_ray(
    todo: list[Job], results: dict, spec: SweepSpec, out: Path, address: str | None, progress
) -> int:
    ray = _import_ray()
    from tqdm.auto import tqdm

    # "local": always a fresh Ray here, never a stale `ray start` cluster that Ray would
    # otherwise find in its temp folder and wait for. log_to_driver off: each job's output
    # is in its own job.log, not interleaved here.
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(run_job_process).options(
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            max_retries=spec.max_retries,
            retry_exceptions=True,
        )
        refs: dict[str, Any] = {}
        for job in todo:  # fine-tunes come first: a run passes its fine-tune's ref (or result)
            dep = None if job.needs is None else refs.get(job.needs, results.get(job.needs))
            refs[job.id] = task.remote(dataclasses.asdict(job), dep)
        by_ref = {refs[job.id]: job for job in todo}
        # the bar only on a terminal: logs and CI get the one line per job alone
        bar = tqdm(total=len(todo), desc="sweep jobs", unit="job",
                   disable=not (progress and sys.stderr.isatty()))  # fmt: skip
        done = failed = 0
        while by_ref:
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=2.0)
            for ref in ready:
                job = by_ref.pop(ref)
                try:
                    result = ray.get(ref)
                    done += 1
                    line = _job_line(result)
                except Exception as e:  # retries spent: record it, go on
                    failed += 1
                    cause = getattr(e, "cause", None) or e  # a RayTaskError wraps the job's
                    error = f"{type(cause).__name__}: {cause}"
                    result = {"id": job.id, "kind": job.kind, "arm": job.arm, "seed": job.seed,
                              "shard": job.shard, "status": "failed", "error": error[-3000:]}  # fmt: skip
                    write_json_atomic(Path(job.folder) / "result.json", result)
                    line = f"failed {job.id}: {_last_error_line(error)}"
                results[job.id] = result
                append_jsonl(out / "sweep.jsonl", {"event": "job", **result})
                running = sum((Path(j.folder) / "started").exists() for j in by_ref.values())
                left = len(by_ref)
                tqdm.write(
                    f"[sweep] {line}  (done {done}, running {running}, failed {failed}, "
                    f"left {left})",
                    file=sys.stdout,
                )
                bar.update(1)
                bar.set_postfix(done=done, running=running, failed=failed, left=left)
        bar.close()
        return failed
    finally:
        ray.shutdown()


def _last_error_line(error: str) -> str:
    # the job log's last "...Error: ..." line says why; the first says only where
    lines = [x.strip() for x in error.splitlines() if x.strip()]
    found = [x for x in lines if "Error" in x.split(":")[0] or x.startswith("- ")]
    return (found[-1] if found else lines[0])[:300]


def _job_line(r: dict) -> str:
    if r["kind"] == "finetune":
        return f"done {r['id']}: {r['steps']} steps, loss {r['final_loss']} ({r['seconds']:.0f} s)"
    got = "" if r["score"] is None else f" {r['solved']}/{len(r['tasks'])} solved"
    return f"done {r['id']}:{got} ({r['seconds']:.0f} s on {r['host']})"


def main(argv: list[str] | None = None) -> int:
    """``python -m arc_ttft.research.sweep JOB.json``: one job, in this process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m arc_ttft.research.sweep JOB.json", file=sys.stderr)
        return 2
    execute(Job(**json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
