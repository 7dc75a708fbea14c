"""`arc-ttft sweep`: arms x seeds x shards of `arc-ttft run`, spread over a Ray cluster.

A spec (TOML, below) names the tasks, the arms (RunConfig overrides, optionally a
fine-tune first), the seeds and the resources of one job. Each (arm, seed, shard) is one
Ray task that runs ``pipeline.run`` on its shard of the tasks in a Python process of its
own (a crashed or out-of-memory run takes only itself down, and a GPU is handed back
whole). An arm with a ``finetune`` table first runs ``training.finetune.run`` once per
seed; arms with the same fine-tune share it.

Without an address Ray starts on this machine (``ray.init()``); with ``--address auto``
or ``ray://host:10001`` the sweep joins that cluster. Ray retries a job whose process or
node dies (``max_retries``); a job that keeps failing is recorded as failed and the
sweep goes on. Every job writes its ``result.json`` atomically, so a killed driver loses
nothing finished, and ``--resume`` reruns only the jobs without one.

Results per arm: the shards' submissions merged per seed, scored, the mean over seeds
with a 95% interval, per rule family (generated tasks) or grid-size bucket, appended to
``sweep.jsonl`` and written to ``summary.md`` and ``sweep.png``.

Spec::

    challenges = "arc1-simple"    # task source: bundled set, folder or challenges file
    # solutions = "..."           # when the source does not carry them
    # tasks = ["3c9b0459"]        # only these ids;  max_tasks = 10
    held_out = ["arc1-eval-small"]  # held out of every fine-tune's data (-holdout:)
    seeds = [0, 1, 2]
    shards = 2                    # jobs per (arm, seed)
    max_retries = 2
    [resources]
    num_cpus = 1
    num_gpus = 0                  # 1 on a GPU cluster
    [run]                         # RunConfig fields every arm shares
    model = "arc-nano"
    [arms.base]
    run = { ttt_steps = 0 }
    [arms.ttt]
    run = {}
    [arms.mix]
    finetune = { data = ["arc1-train"], max_steps = 500 }   # FinetuneConfig fields
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_ttft import config as C
from arc_ttft.config import ConfigError, option
from arc_ttft.events import read_events
from arc_ttft.tasks import Task, load_tasks, select_tasks

RAY_MISSING = (
    "arc-ttft sweep needs Ray, which is not installed (fix: pip install -e '.[sweep]', "
    "or pip install 'ray>=2.40')"
)
# Run fields the sweep sets per job; a spec may not.
RUN_SET_BY_SWEEP = ("challenges", "solutions", "tasks", "max_tasks", "seed", "output")
FINETUNE_SET_BY_SWEEP = ("seed", "output")
SIZE_BUCKETS = ((5, "sides <= 5"), (10, "sides 6-10"), (20, "sides 11-20"), (30, "sides 21-30"))
# Student's t at 97.5% for 1..10 degrees of freedom; 1.96 beyond (seed counts are small).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


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


@dataclass
class Arm:
    """One arm: RunConfig overrides, and a fine-tune (FinetuneConfig overrides) first."""

    name: str
    run: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] | None = None


@dataclass
class SweepSpec:
    """What a sweep runs (the TOML spec, read by ``read_spec``)."""

    challenges: str  # the tasks every arm is scored on: bundled set, folder or file
    arms: list[Arm]  # at least one
    solutions: str | None = None  # their test outputs, when the source lacks them
    tasks: list[str] = field(default_factory=list)  # only these ids
    max_tasks: int | None = None  # only the first N (after tasks)
    held_out: list[str] = field(default_factory=list)  # -holdout: of every fine-tune's data
    seeds: list[int] = field(default_factory=lambda: [0])  # each arm runs once per seed
    shards: int = 1  # jobs per (arm, seed): shard k of n takes every n-th task from k
    max_retries: int = 2  # Ray's retries of a job whose process or node died
    num_cpus: float = 1.0  # per job ([resources])
    num_gpus: float = 0.0  # per job: 1 on a GPU cluster
    run: dict[str, Any] = field(default_factory=dict)  # RunConfig fields every arm shares
    finetune: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig fields, shared
    name: str = "sweep"  # the summary's title


# ---------------------------------------------------------------------------------------
# The spec: read, check everything before anything starts
# ---------------------------------------------------------------------------------------

_TOP = {"name", "challenges", "solutions", "tasks", "max_tasks", "held_out", "seeds",
        "shards", "max_retries", "resources", "run", "finetune", "arms"}  # fmt: skip


def read_spec(source: str | Path | dict) -> SweepSpec:
    """A spec from a TOML file (or the same as a dict); raises ConfigError listing every
    problem: unknown fields, unknown models, no arms, bad values of any arm's config."""
    if isinstance(source, dict):
        raw, where = source, "spec"
    else:
        where = str(source)
        try:
            raw = tomllib.loads(Path(source).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError([f"{where}: cannot read ({e}) (fix: a TOML file)"]) from None
    errors = [
        f"{k}: unknown field (known: {', '.join(sorted(_TOP))})" for k in raw if k not in _TOP
    ]
    resources = raw.get("resources", {})
    errors += [f"resources.{k}: unknown field (num_cpus, num_gpus)" for k in resources
               if k not in ("num_cpus", "num_gpus")]  # fmt: skip
    arms = []
    for name, table in (raw.get("arms") or {}).items():
        if not isinstance(table, dict):
            errors.append(f"arms.{name}: expected a table with run and/or finetune")
            continue
        errors += [f"arms.{name}.{k}: unknown field (run, finetune)" for k in table
                   if k not in ("run", "finetune")]  # fmt: skip
        ft = table.get("finetune")
        arms.append(
            Arm(
                name,
                _table(table.get("run", {}), f"arms.{name}.run", errors),
                None if ft is None else _table(ft, f"arms.{name}.finetune", errors),
            )
        )
    if not arms:
        errors.append("arms: none (fix: add at least one [arms.NAME] table)")
    if "challenges" not in raw:
        errors.append("challenges: missing (fix: a bundled set, folder or challenges file)")
    spec = SweepSpec(
        challenges=str(raw.get("challenges", "")),
        arms=arms,
        solutions=raw.get("solutions"),
        tasks=[str(t) for t in raw.get("tasks", [])],
        max_tasks=raw.get("max_tasks"),
        held_out=[str(h) for h in raw.get("held_out", [])],
        seeds=list(raw.get("seeds", [0])),
        shards=raw.get("shards", 1),
        max_retries=raw.get("max_retries", 2),
        num_cpus=resources.get("num_cpus", 1.0),
        num_gpus=resources.get("num_gpus", 0.0),
        run=_table(raw.get("run", {}), "run", errors),
        finetune=_table(raw.get("finetune", {}), "finetune", errors),
        name=str(raw.get("name", "sweep")),
    )
    errors += spec_problems(spec) if "challenges" in raw else _arm_problems(spec)
    if errors:
        raise ConfigError([f"{where}: {e}" for e in errors])
    return spec


def _table(value: Any, where: str, errors: list[str]) -> dict:
    if isinstance(value, dict):
        return dict(value)
    errors.append(f"{where}: expected a table of config fields, got {value!r}")
    return {}


def spec_problems(spec: SweepSpec) -> list[str]:
    """Every problem of a spec: its numbers, its tasks, and each arm's configs."""
    out = []
    if not spec.seeds or any(not isinstance(s, int) or s < 0 for s in spec.seeds):
        out.append(f"seeds: {spec.seeds} (fix: a list of integers >= 0, e.g. [0, 1, 2])")
    elif len(set(spec.seeds)) != len(spec.seeds):
        out.append(f"seeds: {spec.seeds} repeats a seed (fix: distinct seeds)")
    if not isinstance(spec.shards, int) or spec.shards < 1:
        out.append(f"shards: {spec.shards} (fix: an integer >= 1)")
    if not isinstance(spec.max_retries, int) or spec.max_retries < 0:
        out.append(f"max_retries: {spec.max_retries} (fix: an integer >= 0)")
    for key in ("num_cpus", "num_gpus"):
        v = getattr(spec, key)
        if not isinstance(v, (int, float)) or v < 0:
            out.append(f"resources.{key}: {v} (fix: a number >= 0)")
    try:
        scored_tasks(spec)
    except Exception as e:  # a missing file, a bad id: say which, with the loader's fix
        out.append(f"challenges: {spec.challenges!r}: {e}")
    return out + _arm_problems(spec)


def _arm_problems(spec: SweepSpec) -> list[str]:
    from arc_ttft.training.config import FinetuneConfig

    out = []
    run_fields, ft_fields = C.flat_fields(C.RunConfig), C.flat_fields(FinetuneConfig)
    slugs: dict[str, str] = {}
    for where, given, known, reserved in (
        ("run", spec.run, run_fields, RUN_SET_BY_SWEEP),
        ("finetune", spec.finetune, ft_fields, FINETUNE_SET_BY_SWEEP),
    ):
        out += _field_problems(where, given, known, reserved)
    for arm in spec.arms:
        other = slugs.setdefault(slug(arm.name), arm.name)
        if other != arm.name:
            out.append(f"arms.{arm.name}: same folder name as arms.{other} (fix: rename one)")
        out += _field_problems(f"arms.{arm.name}.run", arm.run, run_fields, RUN_SET_BY_SWEEP)
        flat = {**spec.run, **arm.run}
        if arm.finetune is not None:
            ft = {**spec.finetune, **arm.finetune}
            out += _field_problems(
                f"arms.{arm.name}.finetune", arm.finetune, ft_fields, FINETUNE_SET_BY_SWEEP
            )
            out += _model_problems(f"arms.{arm.name}.finetune", ft.get("model", "tiny"))
            out += _config_problems(f"arms.{arm.name}.finetune", FinetuneConfig, ft, ft_fields)
            # the fine-tuned model replaces these at run time
            flat = {k: v for k, v in flat.items() if k not in ("model", "format", "max_seq_len")}
        else:
            out += _model_problems(f"arms.{arm.name}.run", flat.get("model", "tiny"))
        out += _config_problems(f"arms.{arm.name}.run", C.RunConfig, flat, run_fields)
    return out


def _field_problems(where: str, given: dict, known: dict, reserved: tuple) -> list[str]:
    out = []
    for k in given:
        if k in reserved:
            out.append(f"{where}.{k}: set by the sweep per job (fix: remove it)")
        elif k not in known:
            out.append(f"{where}.{k}: unknown field (fix: see `arc-ttft run --help`)")
    return out


def _config_problems(where: str, cls: type, flat: dict, known: dict) -> list[str]:
    values = {k: v for k, v in flat.items() if k in known and k not in RUN_SET_BY_SWEEP}
    try:
        return [f"{where}: {p}" for p in C.problems(C.from_flat(cls, values))]
    except ConfigError as e:
        return [f"{where}: {p}" for p in e.problems if "unknown parameter" not in p]


def _model_problems(where: str, model: Any) -> list[str]:
    from arc_ttft.model_paths import BUNDLED_MODELS
    from arc_ttft.registry import find_candidate

    name = str(model)
    if (
        name.lower() == "tiny"
        or name.lower() in BUNDLED_MODELS
        or find_candidate(name) is not None
        or (Path(name).expanduser() / "config.json").is_file()
        or (name.count("/") == 1 and not Path(name).exists())  # a hub id, fetched by the job
    ):
        return []
    return [f"{where}.model: unknown model {name!r} (fix: `arc-ttft models`, a hub id or a "
            "folder with config.json)"]  # fmt: skip


def scored_tasks(spec: SweepSpec) -> list[Task]:
    """The tasks every arm is scored on, in id order (with their test outputs when known)."""
    loaded = load_tasks(spec.challenges, spec.solutions)
    tasks = select_tasks(loaded.tasks, spec.tasks or None, spec.max_tasks)
    if not tasks:
        raise ValueError("no tasks (fix: check challenges, tasks and max_tasks)")
    return sorted(tasks, key=lambda t: t.id)


def slug(name: str) -> str:
    """A folder name for an arm."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


# ---------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------


@dataclass
class Job:
    """One process's work: a fine-tune, or one (arm, seed, shard) run."""

    id: str
    kind: str  # "run" | "finetune"
    folder: str
    flat: dict[str, Any]  # the config's values (RunConfig or FinetuneConfig)
    seed: int
    arm: str | None = None  # run jobs
    shard: int = 0
    needs: str | None = None  # the fine-tune job whose model a run job uses
    scored: list[str] = field(default_factory=list)  # fine-tune: ids every arm is scored on
    node: str | None = None  # the Ray node of this attempt (set when it starts)


def finetune_key(spec: SweepSpec, arm: Arm) -> str:
    """Arms with the same fine-tune share it (one job per seed)."""
    text = json.dumps({**spec.finetune, **(arm.finetune or {})}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def plan_jobs(spec: SweepSpec, output: str | Path, task_ids: list[str]) -> list[Job]:
    """Every job, fine-tunes first; shard k of n takes every n-th task id from k."""
    out = Path(output)
    n = min(spec.shards, len(task_ids))
    jobs: dict[str, Job] = {}
    for seed in spec.seeds:
        for arm in spec.arms:
            ft_id = None
            if arm.finetune is not None:
                ft = {**spec.finetune, **arm.finetune}
                data = ft.get("data", [])
                data = [d.strip() for d in data.split(",")] if isinstance(data, str) else list(data)
                data += [f"-holdout:{h}" for h in spec.held_out]
                ft_id = f"finetune/{finetune_key(spec, arm)}/s{seed}"
                folder = out / "finetune" / f"{finetune_key(spec, arm)}-s{seed}"
                jobs.setdefault(
                    ft_id,
                    Job(
                        ft_id,
                        "finetune",
                        str(folder),
                        {**ft, "data": data, "seed": seed, "output": str(folder / "out")},
                        seed,
                        scored=list(task_ids),
                    ),  # fmt: skip
                )
            for k in range(n):
                folder = out / "jobs" / slug(arm.name) / f"s{seed}" / f"shard{k}"
                flat = {
                    **spec.run,
                    **arm.run,
                    "challenges": spec.challenges,
                    "tasks": task_ids[k::n],
                    "seed": seed,
                    "output": str(folder / "run"),
                }
                if spec.solutions:
                    flat["solutions"] = spec.solutions
                jid = f"{arm.name}/s{seed}/shard{k}of{n}"
                jobs[jid] = Job(jid, "run", str(folder), flat, seed, arm.name, k, ft_id)
    return sorted(jobs.values(), key=lambda j: j.kind != "finetune")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write then rename: a reader (or a resumed sweep) never sees half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, p)


def read_result(job: Job) -> dict | None:
    p = Path(job.folder) / "result.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


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
        losses = [
            e["final_loss"]
            for e in read_events(res.output / "run.jsonl")
            if e["stage"] == "ttt" and e.get("steps") and e.get("final_loss") is not None
        ]
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


@dataclass
class ArmSeed:
    """One arm under one seed: its shards merged."""

    arm: str
    seed: int
    score: Any  # submission.ScoreResult | None (no solutions, or a shard failed)
    submission: str
    failed_jobs: list[str]
    seconds: float  # summed over its jobs
    ttt_losses: list[float]
    faults: list[str]
    finetune: dict | None = None  # the fine-tune job's result


@dataclass
class ArmRow:
    """One arm over its seeds."""

    arm: str
    settings: str
    scores: list[float | None]  # per seed, in spec order
    mean: float | None
    low: float | None  # 95% interval over seeds (None with one seed)
    high: float | None
    solved: list[int | None]
    total: int
    failed_jobs: int
    groups: dict[str, list[int]]  # family or size bucket -> [solved, total] over seeds


@dataclass
class SweepResult:
    """A finished sweep: per (arm, seed) runs, per-arm rows, the summary and its files."""

    output: Path
    runs: dict[tuple[str, int], ArmSeed]
    rows: list[ArmRow]
    markdown: str
    paths: dict[str, str]
    jobs_run: int  # jobs this call ran (the others were finished already)
    jobs_failed: int


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
    resolved = json.loads(json.dumps(dataclasses.asdict(spec), default=str))
    stored = out / "spec.json"
    if results and stored.exists() and json.loads(stored.read_text()) != resolved:
        raise ConfigError([f"spec: not the one the sweep in {out} started with (fix: resume "
                           "with the same spec, or give a new --output)"])  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "spec.json", resolved)
    todo = [j for j in jobs if j.id not in results]
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
        by_ref = {ref: job for job in todo for ref in [refs[job.id]]}
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
                _append(out / "sweep.jsonl", {"event": "job", **result})
                running = sum(
                    (Path(j.folder) / "started").exists() and j.id not in results
                    for j in by_ref.values()
                )
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


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


# ---------------------------------------------------------------------------------------
# Merging and the summary
# ---------------------------------------------------------------------------------------


def interval(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean and 95% interval (Student's t) of per-seed scores; no interval for one seed."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def group_of(task: Task) -> str:
    """A task's rule family (generated ids) or its grid-size bucket (real tasks)."""
    from arc_ttft.training import synthetic

    try:
        return synthetic.family_of(task.id)
    except ValueError:
        grids = [g for ex in task.train + task.test for g in (ex.input, ex.output) if g is not None]
        side = max(max(len(g), len(g[0]) if len(g) else 0) for g in grids)
        return next(name for limit, name in SIZE_BUCKETS if side <= limit)


def _group_order(item: tuple[str, Any]) -> tuple[int, str]:
    # size buckets smallest first, families by name
    buckets = [name for _, name in SIZE_BUCKETS]
    return (buckets.index(item[0]), "") if item[0] in buckets else (len(buckets), item[0])


def summarise(
    spec: SweepSpec, out: Path, tasks: list[Task], jobs: list[Job], jobs_run: int, jobs_failed: int
) -> SweepResult:
    """Merge each (arm, seed)'s shards into one submission, score it, write the summary."""
    from arc_ttft.submission import score_submission

    results = {j.id: read_result(j) or {"status": "missing"} for j in jobs}
    known = all(ex.output is not None for t in tasks for ex in t.test)
    group = {t.id: group_of(t) for t in tasks}
    runs: dict[tuple[str, int], ArmSeed] = {}
    rows = []
    for arm in spec.arms:
        groups: dict[str, list[int]] = {}
        for seed in spec.seeds:
            mine = [j for j in jobs if j.arm == arm.name and j.seed == seed]
            done = [results[j.id] for j in mine if results[j.id].get("status") == "done"]
            failed = [j.id for j in mine if results[j.id].get("status") != "done"]
            merged: dict = {}
            for r in done:
                merged.update(json.loads(Path(r["submission"]).read_text()))
            path = out / "arms" / slug(arm.name) / f"s{seed}" / "submission.json"
            write_json_atomic(path, merged)
            # a failed shard's tasks count as unsolved: the score stays on every task
            score = score_submission(merged, tasks) if known else None
            ft = results.get(mine[0].needs) if mine and mine[0].needs else None
            runs[(arm.name, seed)] = ArmSeed(
                arm.name, seed, score, str(path), failed,
                seconds=round(sum(r["seconds"] for r in done), 1),
                ttt_losses=[x for r in done for x in r["ttt_losses"]],
                faults=[f for r in done for f in r["faults"]],
                finetune=ft,
            )  # fmt: skip
            if score is not None:
                for tid, flags in score.per_task.items():
                    g = groups.setdefault(group[tid], [0, 0])
                    g[0] += int(bool(flags) and all(flags))
                    g[1] += 1
        per_seed = [runs[(arm.name, s)] for s in spec.seeds]
        scores = [r.score.score if r.score else None for r in per_seed]
        got = [s for s in scores if s is not None]
        mean, low, high = interval(got) if got else (None, None, None)
        rows.append(
            ArmRow(
                arm=arm.name,
                settings=_settings(arm),
                scores=scores,
                mean=mean,
                low=low,
                high=high,
                solved=[r.score.solved_tasks if r.score else None for r in per_seed],
                total=len(tasks),
                failed_jobs=sum(len(r.failed_jobs) for r in per_seed),
                groups=dict(sorted(groups.items(), key=_group_order)),
            )
        )
    when = time.strftime("%Y-%m-%d %H:%M")
    for row in rows:
        _append(out / "sweep.jsonl", {"event": "arm", "when": when, **dataclasses.asdict(row)})
    paths = {"summary": str(out / "summary.md"), "record": str(out / "sweep.jsonl")}
    if known:
        paths["plot"] = str(sweep_plot(rows, out / "sweep.png"))
    markdown = summary_markdown(spec, rows, len(tasks))
    (out / "summary.md").write_text(markdown + "\n")
    return SweepResult(out, runs, rows, markdown, paths, jobs_run, jobs_failed)


def _settings(arm: Arm) -> str:
    parts = [f"{k}={v}" for k, v in arm.run.items()]
    if arm.finetune is not None:
        parts.insert(0, "finetune(" + ", ".join(f"{k}={v}" for k, v in arm.finetune.items()) + ")")
    return ", ".join(parts) or "(shared settings)"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def summary_markdown(spec: SweepSpec, rows: list[ArmRow], n_tasks: int) -> str:
    """The per-arm table (mean, 95% interval over seeds, per seed) and the per-group one."""
    shared = ", ".join(f"{k}={v}" for k, v in spec.run.items()) or "-"
    lines = [
        f"# Sweep `{spec.name}`: {len(rows)} arms x {len(spec.seeds)} seeds on "
        f"`{spec.challenges}` ({n_tasks} tasks, {spec.shards} shards)",
        "",
        f"Shared run settings: {shared}. Score: ARC Prize score of the merged submission; "
        "mean over seeds with a 95% interval (Student's t).",
        "",
        "| arm | settings | score (mean) | 95% interval | per seed | solved per seed | failed jobs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = "-" if r.low is None else f"{r.low:.4f} to {r.high:.4f}"
        lines.append(
            f"| {r.arm} | {r.settings} | {_pct(r.mean)} | {ci} | "
            f"{', '.join(map(_pct, r.scores))} | "
            f"{', '.join('-' if s is None else f'{s}/{r.total}' for s in r.solved)} | "
            f"{r.failed_jobs} |"
        )
    names = [g for g, _ in sorted({g: 0 for r in rows for g in r.groups}.items(), key=_group_order)]
    if names:
        lines += ["", "Solved per group (family or grid size), over all seeds:", "",
                  "| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]  # fmt: skip
        for r in rows:
            cells = [f"{r.groups[g][0]}/{r.groups[g][1]}" if g in r.groups else "" for g in names]
            lines.append(f"| {r.arm} | " + " | ".join(cells) + " |")
        lines += ["", "![per-arm scores](sweep.png)"]
    return "\n".join(lines)


def sweep_plot(rows: list[ArmRow], path: Path) -> Path:
    """Per-arm mean score with its 95% interval, and each seed's score as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 2), 3.5))
    for i, r in enumerate(rows):
        if r.mean is None:
            continue
        err = None if r.low is None else [[r.mean - r.low], [r.high - r.mean]]
        ax.bar(i, r.mean, 0.6, yerr=err, capsize=4, color="#1E93FF")
        ax.plot([i] * len([s for s in r.scores if s is not None]),
                [s for s in r.scores if s is not None], "o", color="#333333", ms=4)  # fmt: skip
    ax.set_xticks(range(len(rows)), [r.arm for r in rows], rotation=20, ha="right")
    ax.set_ylabel("score (mean over seeds)")
    ax.set_title("sweep: per-arm score, 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
