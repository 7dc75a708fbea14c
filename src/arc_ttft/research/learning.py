"""The accuracy harness: does a model answer held-out generated tasks, and does TTT help?

One measurement is an *arm*: ``arc-ttft run`` (``pipeline.run``, the real pipeline with
its views, vote and re-scoring) with a set of config overrides, on a seeded set of
generated tasks that no training run saw (``synthetic.generate`` with its own seed). The
result is the score overall and per rule family, so an effect that lives in a few
families (rotations, transposes) is not averaged away.

Arms are appended to a JSONL record, and ``write_markdown`` rebuilds the results part of
``benchmarks/learning.md`` from all of them, so every setting ever tried stays on the page.
``scripts/bench_learning.py`` is the command line; it runs its arms as one
``arc-ttft sweep`` (``run_arms``), so a Ray cluster takes them as readily as this machine.
"""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arc_ttft import config as C
from arc_ttft import pipeline
from arc_ttft.research.sweep_summary import ttt_final_losses
from arc_ttft.training import synthetic

# Families the arc-nano base misses without TTT: where TTT has to earn its keep.
HARD_FAMILIES = ("rot90", "rot180", "rot270", "transpose", "anti_transpose", "flip_v")

# What every arm shares: a budget that never binds (this measures answers, not time),
# the transformers backend (what runs on this CPU), and the model's own defaults.
HARNESS_DEFAULTS: dict[str, Any] = {
    "model": "arc-nano",
    "backend": "hf",
    "budget_minutes": 240.0,
    "probe_tasks": 0,
    "max_seq_len": 2048,
}


def _generic_defaults() -> dict[str, Any]:
    """The plain config defaults of every setting a model registers (what a model
    without ``run_defaults`` gets), so an arm can undo arc-nano's own settings."""
    from arc_ttft.models import REGISTRY

    fields = C.flat_fields(C.RunConfig)
    keys = {k for c in REGISTRY.values() for k in c.run_defaults}
    return {k: fields[k][0].default for k in sorted(keys)}


# Named arms, so that a record says what was compared. More come from --set k=v.
ARMS: dict[str, dict[str, Any]] = {
    "base": {"ttt_steps": 0},  # no TTT; the base model is asked in all 8 transforms
    "ttt": {},  # the model's registered settings (arc-nano: run_defaults)
    "ttt-generic": _generic_defaults(),  # the defaults every other model gets
    "ttt+base-votes": {"base_votes": True},
}


@dataclass
class HeldOutSet:
    """A seeded set of generated tasks, written once in Kaggle's two files."""

    n_tasks: int = 40
    seed: int = 999  # training streams use small seeds; keep evaluation apart
    min_size: int = 2
    max_size: int = 4
    families: list[str] | None = None  # None: every default family, round robin

    @property
    def name(self) -> str:
        fams = "all" if self.families is None else "+".join(self.families)
        return f"gen{self.n_tasks}-s{self.seed}-{self.min_size}to{self.max_size}-{fams}"

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``<name>_challenges.json`` and ``<name>_solutions.json`` (seeded: the
        same files every time)."""
        challenges, solutions = synthetic.generate(
            self.n_tasks, self.seed, self.families, self.min_size, self.max_size
        )
        return synthetic.write_kaggle(challenges, solutions, folder, self.name)


@dataclass
class ArmResult:
    """One arm's answers, overall and per family."""

    arm: str
    overrides: dict[str, Any]
    held_out: str
    model: str
    solved: int
    total: int
    per_family: dict[str, list[int]]  # family -> [solved, total]
    seconds: float
    ttt_tasks: int  # tasks that were fine-tuned
    ttt_final_loss: float | None  # mean final training loss over those tasks
    faults: list[str] = field(default_factory=list)
    command: str = ""  # the command line that produced it
    when: str = ""
    machine: str = ""

    @property
    def accuracy(self) -> float:
        return self.solved / self.total if self.total else 0.0

    def line(self) -> str:
        return f"{self.arm}: {self.solved}/{self.total} ({100 * self.accuracy:.1f}%)"


def per_family(per_task: dict[str, list[bool]]) -> dict[str, list[int]]:
    """``{family: [solved, total]}`` from a ScoreResult's per-task flags."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for tid, flags in per_task.items():
        counts = out[synthetic.family_of(tid)]
        counts[0] += int(bool(flags) and all(flags))
        counts[1] += 1
    return dict(sorted(out.items()))


def run_arm(
    name: str,
    overrides: dict[str, Any],
    held_out: HeldOutSet,
    work_dir: str | Path,
    base: dict[str, Any] | None = None,
) -> ArmResult:
    """Run the pipeline once on ``held_out`` with ``overrides`` and score it per family."""
    work = Path(work_dir)
    challenges, solutions = held_out.write(work / "data")
    flat = {**HARNESS_DEFAULTS, **(base or {}), **overrides}
    flat.update(
        challenges=str(challenges), solutions=str(solutions), output=str(work / "runs" / name)
    )
    cfg = C.validate(C.from_flat(C.RunConfig, flat))
    t0 = time.monotonic()
    result = pipeline.run(cfg, progress=False)
    seconds = time.monotonic() - t0
    losses = ttt_final_losses(result.output)
    return _arm_result(
        name, overrides, held_out, cfg.model.model, result.score, seconds, losses, result.faults
    )


def run_arms(
    arms: list[tuple[str, dict[str, Any]]],
    held_out: HeldOutSet,
    work_dir: str | Path,
    base: dict[str, Any] | None = None,
    *,
    address: str | None = None,
    shards: int = 1,
) -> list[ArmResult]:
    """Every arm as one ``arc-ttft sweep`` (Ray: here, or the cluster at ``address``),
    each arm's tasks split into ``shards`` jobs; the same results as ``run_arm`` per arm."""
    from arc_ttft.research import sweep
    from arc_ttft.research.sweep_spec import read_spec

    work = Path(work_dir)
    challenges, solutions = held_out.write(work / "data")
    shared = {**HARNESS_DEFAULTS, **(base or {})}
    spec = read_spec(
        {
            "name": f"harness {held_out.name}",
            "challenges": str(challenges),
            "solutions": str(solutions),
            "shards": shards,
            "run": shared,
            "arms": {name: {"run": overrides} for name, overrides in arms},
        }
    )
    out = work / "sweeps" / time.strftime("%Y%m%d-%H%M%S")
    done = sweep.sweep(spec, out, address=address)
    results = []
    for name, overrides in arms:
        run = done.runs[(name, 0)]
        if run.failed_jobs:
            raise RuntimeError(f"{name}: jobs failed: {', '.join(run.failed_jobs)} (see {out})")
        results.append(
            _arm_result(
                name,
                overrides,
                held_out,
                str(shared["model"]),
                run.score,
                run.seconds,
                run.ttt_losses,
                run.faults,
            )
        )
    return results


def _arm_result(name, overrides, held_out, model, score, seconds, losses, faults) -> ArmResult:
    if score is None:  # the held-out set carries its solutions: a run always has a score
        raise RuntimeError(f"{name}: the run has no score (fix: check the held-out solutions)")
    mean_loss = sum(losses) / len(losses) if losses else None
    return ArmResult(
        arm=name,
        overrides=overrides,
        held_out=held_out.name,
        model=model,
        solved=score.solved_tasks,
        total=score.total,
        per_family=per_family(score.per_task),
        seconds=round(seconds, 1),
        ttt_tasks=len(losses),
        ttt_final_loss=None if mean_loss is None else round(mean_loss, 4),
        faults=list(faults),
        when=time.strftime("%Y-%m-%d %H:%M"),
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
    )


def append_record(result: ArmResult, path: str | Path) -> None:
    """Append one arm to the JSONL record."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a") as f:
        f.write(json.dumps(asdict(result)) + "\n")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _settings(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "(the model's own settings)"


def results_markdown(records: list[dict[str, Any]]) -> str:
    """One table per (held-out set, model): every arm, overall, the hard families, each
    family."""
    parts: list[str] = []
    by_set: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        by_set[(r["held_out"], r.get("model", "?"))].append(r)
    for (held_out, model), rows in by_set.items():
        families = sorted({f for r in rows for f in r["per_family"]})
        hard = [f for f in families if f in HARD_FAMILIES]
        parts.append(f"### {held_out}, model {model}\n")
        head = ["arm", "settings", "solved", "hard", *families, "TTT loss", "s"]
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "---|" * len(head))
        for r in rows:
            pf = r["per_family"]
            hard_ok = sum(pf[f][0] for f in hard)
            hard_n = sum(pf[f][1] for f in hard)
            cells = [
                r["arm"],
                _settings(r["overrides"]),
                f"{r['solved']}/{r['total']} ({100 * r['solved'] / max(1, r['total']):.0f}%)",
                f"{hard_ok}/{hard_n}",
                *[f"{pf[f][0]}/{pf[f][1]}" if f in pf else "" for f in families],
                "" if r["ttt_final_loss"] is None else f"{r['ttt_final_loss']:.3f}",
                f"{r['seconds']:.0f}",
            ]
            parts.append("| " + " | ".join(str(c) for c in cells) + " |")
        parts.append("")
    return "\n".join(parts)


START, END = "<!-- results:start -->", "<!-- results:end -->"


def write_markdown(records: list[dict[str, Any]], path: str | Path) -> None:
    """Replace the generated results between the markers of ``path`` (create it if new);
    the hand-written text around them stays."""
    p = Path(path)
    text = (
        p.read_text()
        if p.exists()
        else f"# Learning: answers on held-out tasks\n\n{START}\n{END}\n"
    )
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    p.write_text(f"{head}{START}\n{results_markdown(records)}\n{END}{tail}")
