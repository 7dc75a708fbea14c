"""A generated set written apart from the project's generator (training/synthetic.py), to
check that what TTT adds is not an artefact of how the project makes its own tasks.

Four families, 10 tasks each, 3 demonstrations and 1 test, inputs of sides 2-4 (the
issue's set): colour permutation (one random bijection of the 10 colours per task, every
test colour shown in the demonstrations), mirror-concatenation (the input, then its
left-right mirror), scale 2 (every cell a 2x2 block) and horizontal flip (left-right).

    python benchmarks/independent_set.py make OUT_DIR [--seed 2026]
    arc-ttft run --challenges OUT_DIR/challenges.json --model arc-nano2 --output RUN
    python benchmarks/independent_set.py score RUN_BASE RUN_TTT --challenges OUT_DIR/challenges.json

``score`` prints one row per family: tasks solved without and with TTT.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FAMILIES = ("colour_perm", "mirror_concat", "scale2", "flip_h")
PER_FAMILY = 10


def _grid(rng: np.random.Generator, colours: np.ndarray) -> np.ndarray:
    h, w = rng.integers(2, 5, size=2)
    return rng.choice(colours, size=(h, w))


def _rule(family: str, rng: np.random.Generator):
    if family == "colour_perm":
        perm = rng.permutation(10)
        return lambda g: perm[g]
    if family == "mirror_concat":
        return lambda g: np.concatenate([g, g[:, ::-1]], axis=1)
    if family == "scale2":
        return lambda g: np.repeat(np.repeat(g, 2, axis=0), 2, axis=1)
    return lambda g: g[:, ::-1]


def _task(family: str, rng: np.random.Generator) -> tuple[dict, list]:
    rule = _rule(family, rng)
    colours = rng.choice(10, size=int(rng.integers(3, 6)), replace=False)
    while True:
        grids = [_grid(rng, colours) for _ in range(4)]
        *train, test = grids
        seen = set(np.concatenate([g.ravel() for g in train]).tolist())
        changes = all(not np.array_equal(rule(g), g) for g in grids)
        # a colour map needs every test colour demonstrated; every pair must show the rule
        if changes and (family != "colour_perm" or set(test.ravel().tolist()) <= seen):
            break
    pairs = [{"input": g.tolist(), "output": rule(g).tolist()} for g in train]
    return {"train": pairs, "test": [{"input": test.tolist()}]}, [rule(test).tolist()]


def make(out: Path, seed: int = 2026) -> Path:
    """Write OUT/challenges.json and OUT/solutions.json (Kaggle layout)."""
    rng = np.random.default_rng(seed)
    challenges, solutions = {}, {}
    for family in FAMILIES:
        for i in range(PER_FAMILY):
            tid = f"{family}-{i:02d}"
            challenges[tid], solutions[tid] = _task(family, rng)
    out.mkdir(parents=True, exist_ok=True)
    (out / "challenges.json").write_text(json.dumps(challenges))
    (out / "solutions.json").write_text(json.dumps(solutions))
    return out / "challenges.json"


def _solved(run: Path, solutions: dict) -> set[str]:
    sub = json.loads((run / "submission.json").read_text())
    ok = set()
    for tid, want in solutions.items():
        got = sub.get(tid, [])
        if len(got) == len(want) and all(
            w in (a.get("attempt_1"), a.get("attempt_2")) for a, w in zip(got, want)
        ):
            ok.add(tid)
    return ok


def score(base: Path, ttt: Path, challenges: Path) -> str:
    """A markdown table: per family, tasks solved without and with TTT, and with TTT split
    by whether some demonstration input has the test input's size (a flip learnt per
    size solves only those)."""
    from arc_ttft.report import size_seen
    from arc_ttft.tasks import load_tasks

    solutions = json.loads((challenges.parent / "solutions.json").read_text())
    seen = {task.id for task in load_tasks(str(challenges), None).tasks if size_seen(task, 0)}
    b, t = _solved(base, solutions), _solved(ttt, solutions)
    rows = [
        "| family | without TTT | with TTT | with TTT, test size seen | with TTT, new size |",
        "|---|---|---|---|---|",
    ]
    for family in [*FAMILIES, "all"]:
        ids = {tid for tid in solutions if family == "all" or tid.startswith(family)}
        old, new = ids & seen, ids - seen
        rows.append(
            f"| {family} | {len(b & ids)}/{len(ids)} | {len(t & ids)}/{len(ids)} "
            f"| {len(t & old)}/{len(old)} | {len(t & new)}/{len(new)} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out", type=Path)
    m.add_argument("--seed", type=int, default=2026)
    s = sub.add_parser("score")
    s.add_argument("base", type=Path)
    s.add_argument("ttt", type=Path)
    s.add_argument("--challenges", type=Path, required=True)
    a = p.parse_args()
    if a.cmd == "make":
        print(make(a.out, a.seed))
    else:
        print(score(a.base, a.ttt, a.challenges))


if __name__ == "__main__":
    main()
