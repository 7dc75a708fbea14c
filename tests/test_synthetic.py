"""Synthetic task generator: every family's rule holds, seeded, bounded, loadable.

The rule checks below are written independently of synthetic.py: each one infers the
task's parameters from the pairs themselves (e.g. the colour map) and checks that one
set of parameters explains every pair of the task.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from arc_ttft.training import synthetic
from arc_ttft.training.synthetic import (
    ALL_FAMILIES,
    ARC_FAMILIES,
    DEFAULT_FAMILIES,
    FAMILIES,
    family_of,
    generate,
    iter_training_examples,
    make_task,
    write_kaggle,
)

REPO = Path(__file__).resolve().parents[1]

# Reference rules for the parameter-free families.
GEOMETRIC = {
    "copy": lambda g: g,
    "rot90": lambda g: np.array([list(col) for col in zip(*g)][::-1]),  # counter-clockwise
    "rot180": lambda g: g[::-1, ::-1],
    "rot270": lambda g: np.array([list(col)[::-1] for col in zip(*g)]),
    "flip_h": lambda g: g[:, ::-1],
    "flip_v": lambda g: g[::-1, :],
    "transpose": lambda g: g.T,
    "anti_transpose": lambda g: g[::-1, ::-1].T,
    "scale2": lambda g: g.repeat(2, axis=0).repeat(2, axis=1),
    "mirror_h": lambda g: np.concatenate([g, g[:, ::-1]], axis=1),
    "mirror_v": lambda g: np.concatenate([g, g[::-1, :]], axis=0),
}


def _components_ref(g: np.ndarray) -> list[set[tuple[int, int]]]:
    """8-connected non-zero objects, by repeated neighbour merging (no stack walk)."""
    label = {(r, c): (r, c) for r, c in zip(*np.nonzero(g))}
    changed = True
    while changed:
        changed = False
        for (r, c), lab in list(label.items()):
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    other = label.get((r + dr, c + dc))
                    if other is not None and other < lab:
                        label[(r, c)], lab, changed = other, other, True
    groups: dict = {}
    for cell, lab in label.items():
        groups.setdefault(lab, set()).add(cell)
    return list(groups.values())


def _enclosed_ref(g: np.ndarray) -> np.ndarray:
    """Background cells that no path of background cells joins to the border."""
    from collections import deque

    h, w = g.shape
    seen = np.zeros_like(g, dtype=bool)
    q = deque((r, c) for r in range(h) for c in range(w) if r in (0, h - 1) or c in (0, w - 1))
    while q:
        r, c = q.popleft()
        if 0 <= r < h and 0 <= c < w and not seen[r, c] and g[r, c] == 0:
            seen[r, c] = True
            q.extend([(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)])
    return (g == 0) & ~seen


def _gravity_ref(g: np.ndarray, side: str) -> np.ndarray:
    out = np.zeros_like(g)
    lines = {"down": g.T, "up": g.T, "right": g, "left": g}[side]
    for k, line in enumerate(lines):
        cells = [x for x in line.tolist() if x]
        pad = [0] * (len(line) - len(cells))
        new = pad + cells if side in ("down", "right") else cells + pad
        if side in ("down", "up"):
            out[:, k] = new
        else:
            out[k, :] = new
    return out


def _check_arc_family(family: str, pairs: list) -> None:
    """Reference rules of the families of real ARC rules (ARC_FAMILIES)."""
    if family == "scale3":
        for i, o in pairs:
            assert np.array_equal(i.repeat(3, axis=0).repeat(3, axis=1), o)
    elif family == "tile":
        reps = {(o.shape[0] // i.shape[0], o.shape[1] // i.shape[1]) for i, o in pairs}
        assert len(reps) == 1 and all(o.shape[0] % i.shape[0] == 0 for i, o in pairs)
        ((rh, rw),) = reps

        def tiled(i, mirror):
            rows = [[i[:: -1 if mirror and r % 2 else 1, :: -1 if mirror and c % 2 else 1]
                     for c in range(rw)] for r in range(rh)]  # fmt: skip
            return np.block(rows)

        modes = [m for m in (False, True) if all(np.array_equal(tiled(i, m), o) for i, o in pairs)]
        assert modes, "plain or mirrored copies, one way for the whole task"
    elif family == "colour_map_wide":
        check_rule("colour_map", {"train": [], "test": [
            {"input": i.tolist(), "output": o.tolist()} for i, o in pairs
        ]})  # fmt: skip
    elif family == "gravity":
        sides = [s for s in ("down", "up", "left", "right")
                 if all(np.array_equal(_gravity_ref(i, s), o) for i, o in pairs)]  # fmt: skip
        assert sides, "one fall direction for the whole task"
    elif family == "fill_enclosed":
        fills = set()
        for i, o in pairs:
            inside = _enclosed_ref(i)
            assert np.array_equal(o[~inside], i[~inside])
            fills |= set(o[inside].tolist())
        assert len(fills) == 1
    elif family == "connect_lines":
        for i, o in pairs:
            changed = np.argwhere(o != i)
            assert len(changed) and not i[o != i].any()
            for r, c in changed:
                colour = o[r, c]
                row, col = i[r], i[:, c]
                between_row = (row[:c] == colour).any() and (row[c + 1 :] == colour).any()
                between_col = (col[:r] == colour).any() and (col[r + 1 :] == colour).any()
                assert between_row or between_col
    elif family == "crop_largest":
        for i, o in pairs:
            objects = sorted(_components_ref(i), key=len)
            assert len(objects) >= 2 and len(objects[-1]) > len(objects[-2])
            rows, cols = zip(*objects[-1])
            assert np.array_equal(i[min(rows) : max(rows) + 1, min(cols) : max(cols) + 1], o)
    elif family == "denoise":
        for i, o in pairs:
            p = np.pad(i, 1, constant_values=-1)
            for r, c in zip(*np.nonzero(i)):
                near = [p[r, c + 1], p[r + 2, c + 1], p[r + 1, c], p[r + 1, c + 2]]
                assert o[r, c] == (0 if i[r, c] not in near else i[r, c])
            assert np.array_equal(o[i == 0], i[i == 0])
    else:
        raise AssertionError(f"no reference rule for family {family}")


def _crop_ref(g: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(g)
    return g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _pairs(task: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.array(p["input"]), np.array(p["output"])) for p in task["train"] + task["test"]]


def check_rule(family: str, task: dict) -> None:
    """Assert that one rule with one set of parameters explains all pairs of ``task``."""
    pairs = _pairs(task)
    if family in GEOMETRIC:
        for i, o in pairs:
            assert np.array_equal(GEOMETRIC[family](i), o), family
    elif family == "crop":
        for i, o in pairs:
            assert np.array_equal(_crop_ref(i), o)
            assert o.shape != i.shape
    elif family == "colour_map":
        mapping: dict[int, int] = {}
        for i, o in pairs:
            assert i.shape == o.shape
            for a, b in zip(i.ravel().tolist(), o.ravel().tolist()):
                assert mapping.setdefault(a, b) == b, "one colour map for the whole task"
        assert any(a != b for a, b in mapping.items())
        # a map: distinct colours stay distinct (it is a permutation)
        assert len(set(mapping.values())) == len(mapping)
    elif family == "recolour_one":
        changes = set()
        for i, o in pairs:
            assert i.shape == o.shape
            diff = i != o
            changes |= set(zip(i[diff].tolist(), o[diff].tolist()))
        assert len(changes) == 1, changes
        ((src, _dst),) = changes
        for i, o in pairs:
            assert np.all(i[i == src] != o[i == src]), "every source cell is recoloured"
    elif family == "fill_background":
        fills = set()
        for i, o in pairs:
            assert i.shape == o.shape
            assert np.array_equal(i[i != 0], o[i != 0])
            fills |= set(o[i == 0].tolist())
        assert len(fills) == 1 and 0 not in fills
        # the fill colour never appears in an input, so the rule is unambiguous
        assert not any(fills & set(i.ravel().tolist()) for i, _ in pairs)
    else:
        _check_arc_family(family, pairs)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_rule_holds(family):
    rng = np.random.default_rng(123)
    for size in [(1, 3), (3, 7), (8, 12)]:
        for _ in range(15):
            task = make_task(family, rng, (3, 4), *size)
            assert 3 <= len(task["train"]) <= 4 and len(task["test"]) == 1
            check_rule(family, task)
            for i, o in _pairs(task):
                if family == "copy":
                    assert np.array_equal(i, o)
                else:
                    assert i.shape != o.shape or not np.array_equal(i, o)


def test_every_family_has_a_reference_rule_here():
    assert set(FAMILIES) == set(GEOMETRIC) | set(ARC_FAMILIES) | {
        "crop",
        "colour_map",
        "recolour_one",
        "fill_background",
    }
    assert "copy" not in DEFAULT_FAMILIES
    assert len(DEFAULT_FAMILIES) == len(FAMILIES) - 1 - len(ARC_FAMILIES)
    assert set(ALL_FAMILIES) == set(DEFAULT_FAMILIES) | set(ARC_FAMILIES)
    all_tasks = generate(len(ALL_FAMILIES), 0, "all")[0]
    assert {family_of(t) for t in all_tasks} == set(ALL_FAMILIES)


def test_family_generator_shares_task_parameters():
    rng = np.random.default_rng(5)
    params = {**synthetic.sample_params("colour_map", rng), "min_size": 3, "max_size": 6}
    i, o = FAMILIES["colour_map"](rng, params)
    assert np.array_equal(synthetic.apply_rule("colour_map", i, params), o)
    assert np.array_equal(np.asarray(params["colours"])[i], o)


def test_generate_is_deterministic_and_prefix_stable():
    a = generate(60, seed=3, min_size=2, max_size=6)
    b = generate(60, seed=3, min_size=2, max_size=6)
    assert a == b
    c = generate(20, seed=3, min_size=2, max_size=6)
    assert c[0] == {k: a[0][k] for k in c[0]} and list(c[0]) == list(a[0])[:20]
    d = generate(60, seed=4, min_size=2, max_size=6)
    assert [v for v in d[1].values()] != [v for v in a[1].values()]


def test_generate_rules_ids_and_balance():
    challenges, solutions = generate(280, seed=1, min_size=3, max_size=8)
    assert len(challenges) == len(solutions) == 280  # ids unique
    assert list(challenges) == list(solutions)
    counts = Counter(family_of(t) for t in challenges)
    assert set(counts) == set(DEFAULT_FAMILIES)
    assert max(counts.values()) - min(counts.values()) <= 1
    for tid, ch in challenges.items():
        assert tid.startswith(f"{family_of(tid)}-1-")
        assert all(set(t) == {"input"} for t in ch["test"]), "no answers in challenges"
        assert len(solutions[tid]) == len(ch["test"]) == 1
        task = {
            "train": ch["train"],
            "test": [{"input": ch["test"][0]["input"], "output": solutions[tid][0]}],
        }
        check_rule(family_of(tid), task)


def test_family_of():
    assert family_of("anti_transpose-12-00003") == "anti_transpose"
    assert family_of("fill_background-0-00000") == "fill_background"
    with pytest.raises(ValueError, match="not a synthetic task id"):
        family_of("007bbfb7")


# Families whose inputs may have a side of 1; the others (crop, rotations, flips) need 2.
SIDE_ONE_OK = {
    "copy",
    "colour_map",
    "recolour_one",
    "fill_background",
    "scale2",
    "mirror_h",
    "mirror_v",
}


@pytest.mark.parametrize("lo,hi", [(1, 2), (1, 3), (3, 7), (12, 15), (16, 30), (30, 30)])
def test_sizes_within_bounds(lo, hi):
    families = ["copy", *DEFAULT_FAMILIES]
    challenges, solutions = generate(
        3 * len(families), seed=7, families=families, min_size=lo, max_size=hi
    )
    for tid, ch in challenges.items():
        fam = family_of(tid)
        grids_in = [p["input"] for p in ch["train"]] + [t["input"] for t in ch["test"]]
        grids_out = [p["output"] for p in ch["train"]] + solutions[tid]
        for g in grids_in + grids_out:
            arr = np.array(g)
            assert arr.ndim == 2 and 1 <= arr.shape[0] <= 30 and 1 <= arr.shape[1] <= 30
            assert arr.min() >= 0 and arr.max() <= 9
        widens = fam in {"scale2", "mirror_h", "mirror_v"}
        for g in grids_in:
            h, w = np.array(g).shape
            if hi <= 15 or not widens:
                low = lo if fam in SIDE_ONE_OK else max(lo, 2)
                assert low <= h <= hi and low <= w <= hi, (tid, h, w)


def test_n_train_and_distinct_inputs():
    for n_train in [2, (3, 4), (5, 5)]:
        ch, _ = generate(30, seed=2, n_train=n_train, min_size=2, max_size=4)
        lo, hi = (n_train, n_train) if isinstance(n_train, int) else n_train
        for task in ch.values():
            assert lo <= len(task["train"]) <= hi
            inputs = [json.dumps(p["input"]) for p in task["train"] + task["test"]]
            assert len(set(inputs)) == len(inputs)


def test_colour_map_test_colours_seen_in_train():
    ch, _ = generate(200, seed=9, families=["colour_map", "recolour_one"], min_size=2, max_size=4)
    for tid, task in ch.items():
        if family_of(tid) != "colour_map":
            continue
        seen = {c for p in task["train"] for row in p["input"] for c in row}
        assert {c for row in task["test"][0]["input"] for c in row} <= seen


def test_training_stream_matches_generate():
    stream = iter_training_examples(11, families="rot90,crop", min_size=3, max_size=5)
    ch, sol = generate(6, seed=11, families=["rot90", "crop"], min_size=3, max_size=5)
    for (tid, c), task in zip(ch.items(), [next(stream) for _ in range(6)]):
        assert task["train"] == c["train"]
        assert task["test"] == [{"input": c["test"][0]["input"], "output": sol[tid][0]}]
        check_rule(family_of(tid), task)


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown synthetic family 'levitate'.*fix"):
        generate(3, seed=0, families=["levitate"])
    with pytest.raises(ValueError, match="min_size=5, max_size=4"):
        make_task("rot90", 0, 3, 5, 4)
    with pytest.raises(ValueError, match="max_size >= 2"):
        make_task("colour_map", 0, 3, 1, 1)
    with pytest.raises(ValueError, match="max_size <= 30"):
        generate(1, seed=0, max_size=31)
    with pytest.raises(ValueError, match="seed"):
        generate(1, seed=-1)


def test_write_kaggle_round_trip(tmp_path):
    challenges, solutions = generate(14, seed=0)
    cpath, spath = write_kaggle(challenges, solutions, tmp_path / "out", "synth")
    assert cpath.name == "synth_challenges.json" and spath.name == "synth_solutions.json"
    assert json.loads(cpath.read_text()) == challenges
    assert json.loads(spath.read_text()) == solutions
    assert not list((tmp_path / "out").glob("*.tmp"))
    with pytest.raises(ValueError, match="only one of challenges/solutions"):
        write_kaggle(challenges, {}, tmp_path, "bad")


def test_kaggle_pair_loads_with_tasks_module(tmp_path):
    from arc_ttft import tasks

    challenges, solutions = generate(28, seed=5, min_size=1, max_size=12)
    cpath, spath = write_kaggle(challenges, solutions, tmp_path, "synth")
    result = tasks.load_tasks(str(cpath), str(spath))
    assert not result.problems
    assert [t.id for t in result.tasks] == list(challenges)
    for t in result.tasks:
        assert len(t.train) == len(challenges[t.id]["train"])
        assert np.array_equal(np.asarray(t.test[0].output), np.array(solutions[t.id][0]))


def test_generator_is_fast():
    start = time.perf_counter()
    challenges, _ = generate(1000, seed=0, min_size=3, max_size=12)
    seconds = time.perf_counter() - start
    assert len(challenges) == 1000
    assert seconds < 5.0, f"1000 tasks took {seconds:.2f}s"


def test_make_synthetic_script(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_synthetic.py"),
            "--n-tasks",
            "20",
            "--seed",
            "2",
            "--min-size",
            "3",
            "--max-size",
            "5",
            "--families",
            "rot90,fill_background",
            "--out",
            str(tmp_path),
            "--prefix",
            "mini",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    paths = out.stdout.split()
    assert paths == [str(tmp_path / "mini_challenges.json"), str(tmp_path / "mini_solutions.json")]
    ch = json.loads(Path(paths[0]).read_text())
    assert len(ch) == 20 and {family_of(t) for t in ch} == {"rot90", "fill_background"}
    bad = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_synthetic.py"),
            "--families",
            "levitate",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown synthetic family" in bad.stderr
