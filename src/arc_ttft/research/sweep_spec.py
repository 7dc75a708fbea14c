"""The spec of `arc-ttft sweep` and the jobs it makes: read and check a spec (every
problem listed before anything starts), then one job per fine-tune and seed, and one per
(arm, seed, shard). Each job's ``result.json`` is written atomically.

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

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_ttft import config as C
from arc_ttft.config import ConfigError
from arc_ttft.tasks import Task, load_tasks, select_tasks

# Run fields the sweep sets per job; a spec may not.
RUN_SET_BY_SWEEP = ("challenges", "solutions", "tasks", "max_tasks", "seed", "output")
FINETUNE_SET_BY_SWEEP = ("seed", "output")


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
                key = finetune_key(spec, arm)
                ft_id = f"finetune/{key}/s{seed}"
                folder = out / "finetune" / f"{key}-s{seed}"
                jobs.setdefault(
                    ft_id,
                    Job(
                        ft_id,
                        "finetune",
                        str(folder),
                        {**ft, "data": data, "seed": seed, "output": str(folder / "out")},
                        seed,
                        scored=list(task_ids),
                    ),
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
