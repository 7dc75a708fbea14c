"""Seeded generator of ARC-format tasks from simple rule families.

Each family is a rule with random task-level parameters (a colour map, a fill colour,
...). A task draws its parameters once, then 3-4 train pairs and one test pair that all
follow the same rule. The output is plain JSON data (lists of lists), so tasks can be
written in Kaggle's format and loaded with ``arc_ttft.tasks.load_tasks``, or streamed
for pretraining a small model.

    challenges, solutions = generate(1000, seed=0, min_size=3, max_size=7)
    write_kaggle(challenges, solutions, "data/synth", "synth")

Guarantees: the same seed gives the same tasks; task ``i`` of a seed does not depend on
``n_tasks``; input sides lie in ``[min_size, max_size]`` (narrowed where a family needs
it: scale-up keeps inputs at most 15 wide, crop and the dihedral transforms
need sides >= 2, and a family of objects widens a window below its least side); every
grid is 1..30 on a side; every
pair's input differs from its output (except the ``copy`` family); a task's inputs are
distinct; the test input uses only colours the train inputs show, where the rule is a
colour map.

Over 500 lines: 22 rule families, each a few lines, share one sampler and its guarantees.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_SIDE = 30
_MAX_TRIES = 200


# ---------------------------------------------------------------------------------------
# Rules: pure functions grid -> grid, driven by a task's parameters
# ---------------------------------------------------------------------------------------


def _colour_map(g: np.ndarray, p: dict) -> np.ndarray:
    return np.asarray(p["colours"], dtype=np.int8)[g]


def _recolour_one(g: np.ndarray, p: dict) -> np.ndarray:
    return np.where(g == p["source"], np.int8(p["target"]), g).astype(np.int8)


def _fill_background(g: np.ndarray, p: dict) -> np.ndarray:
    return np.where(g == 0, np.int8(p["fill"]), g).astype(np.int8)


def _crop(g: np.ndarray, p: dict) -> np.ndarray:
    rows = np.flatnonzero(g.any(axis=1))
    cols = np.flatnonzero(g.any(axis=0))
    if rows.size == 0:  # all background: nothing to crop to
        return g.copy()
    return g[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()


def _scale2(g: np.ndarray, p: dict) -> np.ndarray:
    return np.kron(g, np.ones((2, 2), dtype=np.int8)).astype(np.int8)


# The 8 dihedral transforms; "copy" is the identity.
_DIHEDRAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda g: g,
    "rot90": lambda g: np.rot90(g, 1),
    "rot180": lambda g: np.rot90(g, 2),
    "rot270": lambda g: np.rot90(g, 3),
    "flip_h": np.fliplr,
    "flip_v": np.flipud,
    "transpose": lambda g: g.T,
    "anti_transpose": lambda g: np.rot90(g, 2).T,
}


def _dihedral(name: str, g: np.ndarray, p: dict) -> np.ndarray:
    return np.ascontiguousarray(_DIHEDRAL[name](g)).astype(np.int8)


def _mirror_h(g: np.ndarray, p: dict) -> np.ndarray:
    return np.hstack([g, np.fliplr(g)]).astype(np.int8)


def _mirror_v(g: np.ndarray, p: dict) -> np.ndarray:
    return np.vstack([g, np.flipud(g)]).astype(np.int8)


def _scale3(g: np.ndarray, p: dict) -> np.ndarray:
    return np.kron(g, np.ones((3, 3), dtype=np.int8)).astype(np.int8)


def _tile(g: np.ndarray, p: dict) -> np.ndarray:
    """The grid repeated ``reps`` (rows, cols) times; ``mirror`` flips every other copy."""
    rh, rw = p["reps"]
    if not p["mirror"]:
        return np.tile(g, (rh, rw)).astype(np.int8)
    rows = []
    for i in range(rh):
        row = [np.fliplr(g) if j % 2 else g for j in range(rw)]
        rows.append(np.flipud(np.hstack(row)) if i % 2 else np.hstack(row))
    return np.vstack(rows).astype(np.int8)


def _gravity(g: np.ndarray, p: dict) -> np.ndarray:
    """Every non-zero cell falls towards ``side`` (0 down, 1 right, 2 up, 3 left), in order."""
    k = p["side"]
    r = np.rot90(g, k)  # turn the grid so that the fall is downwards
    out = np.zeros_like(r)
    for c in range(r.shape[1]):
        cells = r[:, c][r[:, c] != 0]
        if cells.size:
            out[-cells.size :, c] = cells
    return np.ascontiguousarray(np.rot90(out, -k)).astype(np.int8)


def _outside(g: np.ndarray) -> np.ndarray:
    """Background cells 4-connected to the border."""
    h, w = g.shape
    seen = np.zeros((h, w), dtype=bool)
    stack = [(r, c) for r in range(h) for c in (0, w - 1)] + [
        (r, c) for c in range(w) for r in (0, h - 1)
    ]
    while stack:
        r, c = stack.pop()
        if 0 <= r < h and 0 <= c < w and not seen[r, c] and g[r, c] == 0:
            seen[r, c] = True
            stack += [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
    return seen


def _fill_enclosed(g: np.ndarray, p: dict) -> np.ndarray:
    """Background cells that cannot reach the border take the fill colour."""
    enclosed = (g == 0) & ~_outside(g)
    return np.where(enclosed, np.int8(p["fill"]), g).astype(np.int8)


def _connect_lines(g: np.ndarray, p: dict) -> np.ndarray:
    """Two cells of one colour alone in a row (or column) are joined by a line of it."""
    out = g.copy()
    for grid_view, out_view in ((g, out), (g.T, out.T)):  # rows, then columns
        for i, line in enumerate(grid_view):
            for colour in np.unique(line[line != 0]):
                at = np.flatnonzero(line == colour)
                if at.size == 2:
                    gap = slice(at[0] + 1, at[1])
                    out_view[i, gap] = np.where(line[gap] == 0, colour, out_view[i, gap])
    return out.astype(np.int8)


def _components(g: np.ndarray) -> list[list[tuple[int, int]]]:
    """Non-zero cells grouped into 8-connected objects (any colours)."""
    h, w = g.shape
    seen = np.zeros((h, w), dtype=bool)
    objects = []
    for r0 in range(h):
        for c0 in range(w):
            if g[r0, c0] == 0 or seen[r0, c0]:
                continue
            seen[r0, c0] = True
            stack, cells = [(r0, c0)], []
            while stack:
                r, c = stack.pop()
                cells.append((r, c))
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < h and 0 <= cc < w and g[rr, cc] and not seen[rr, cc]:
                            seen[rr, cc] = True
                            stack.append((rr, cc))
            objects.append(cells)
    return objects


def _crop_largest(g: np.ndarray, p: dict) -> np.ndarray:
    """The bounding box of the object with the most cells."""
    objects = _components(g)
    if not objects:
        return g.copy()
    cells = np.asarray(max(objects, key=len))
    (r0, c0), (r1, c1) = cells.min(axis=0), cells.max(axis=0)
    return g[r0 : r1 + 1, c0 : c1 + 1].copy()


def _denoise(g: np.ndarray, p: dict) -> np.ndarray:
    """Cells with no 4-neighbour of their own colour (lone noise pixels) become background."""
    pad = np.pad(g, 1, constant_values=-1)
    centre = pad[1:-1, 1:-1]
    alone = np.ones(g.shape, dtype=bool)
    for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        alone &= pad[1 + dr : 1 + dr + g.shape[0], 1 + dc : 1 + dc + g.shape[1]] != centre
    return np.where(alone & (g != 0), np.int8(0), g).astype(np.int8)


# ---------------------------------------------------------------------------------------
# Task-level parameters
# ---------------------------------------------------------------------------------------


def _content_params(rng: np.random.Generator, exclude: Sequence[int] = ()) -> dict:
    """Palette (a random subset of 1-9) and density of non-zero cells, fixed per task."""
    allowed = [c for c in range(1, 10) if c not in exclude]
    k = int(rng.integers(1, min(5, len(allowed)) + 1))
    palette = sorted(int(c) for c in rng.choice(allowed, size=k, replace=False))
    return {"palette": palette, "density": float(rng.uniform(0.15, 0.85))}


def _params_plain(rng: np.random.Generator) -> dict:
    return _content_params(rng)


def _params_colour_map(rng: np.random.Generator) -> dict:
    p = _content_params(rng)
    perm = rng.permutation(10)
    if rng.random() < 0.7:  # usually keep the background black, as ARC tasks mostly do
        perm = np.concatenate([[0], rng.permutation(np.arange(1, 10))])
    if all(perm[c] == c for c in p["palette"]):  # make sure some palette colour changes
        c = p["palette"][0]
        other = int(rng.choice([x for x in range(10) if x != c]))
        j = int(np.flatnonzero(perm == other)[0])
        perm[c], perm[j] = perm[j], perm[c]
    p["colours"] = [int(x) for x in perm]
    return p


def _params_recolour_one(rng: np.random.Generator) -> dict:
    p = _content_params(rng)
    p["source"] = int(rng.choice(p["palette"]))
    p["target"] = int(rng.choice([c for c in range(10) if c != p["source"]]))
    return p


def _params_fill_background(rng: np.random.Generator) -> dict:
    fill = int(rng.integers(1, 10))
    # The fill colour stays out of the palette, so the rule is unambiguous from examples.
    p = _content_params(rng, exclude=[fill])
    p["fill"] = fill
    p["density"] = min(p["density"], 0.7)
    return p


def _params_colour_map_wide(rng: np.random.Generator) -> dict:
    """A colour map over 4-9 colours on dense grids (as ARC's colour-swap tasks)."""
    p = _params_colour_map(rng)
    k = int(rng.integers(4, 10))
    p["palette"] = sorted(int(c) for c in rng.choice(np.arange(1, 10), size=k, replace=False))
    p["density"] = float(rng.uniform(0.6, 1.0))
    if all(p["colours"][c] == c for c in p["palette"]):
        p["colours"] = [int(x) for x in np.concatenate([[0], rng.permutation(np.arange(1, 10))])]
    return p


def _params_tile(rng: np.random.Generator) -> dict:
    p = _content_params(rng)
    reps = [(1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (3, 3), (2, 3), (3, 2)]
    p["reps"] = [int(x) for x in reps[int(rng.integers(len(reps)))]]
    p["mirror"] = bool(rng.random() < 0.3)
    return p


def _params_gravity(rng: np.random.Generator) -> dict:
    p = _content_params(rng)
    p["density"] = float(rng.uniform(0.1, 0.5))  # room to fall
    p["side"] = int(rng.integers(4))
    return p


def _params_fill_enclosed(rng: np.random.Generator) -> dict:
    fill = int(rng.integers(1, 10))
    p = _content_params(rng, exclude=[fill])
    p["fill"] = fill
    return p


def _params_denoise(rng: np.random.Generator) -> dict:
    p = _content_params(rng)
    p["noise"] = [int(c) for c in rng.choice(np.arange(1, 10), size=int(rng.integers(1, 3)))]
    return p


def _params_crop(rng: np.random.Generator) -> dict:
    p = _content_params(rng)
    p["density"] = float(rng.uniform(0.4, 1.0))  # density inside the object
    return p


# ---------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilySpec:
    """One rule family: its rule, its parameter sampler and the input sides it allows."""

    rule: Callable[[np.ndarray, dict], np.ndarray]
    sample_params: Callable[[np.random.Generator], dict]
    min_side: int = 1
    max_side: int = MAX_SIDE
    max_width: int = MAX_SIDE  # for rules that widen the grid
    max_height: int = MAX_SIDE
    object_input: bool = False  # input is one object on a black background (crop)
    colours_from_train: bool = False  # test colours must be seen in train (colour maps)
    may_equal: bool = False  # output may equal the input (copy)
    make_input: Callable | None = None  # draws an input (rng, h, w, params); default random


SPECS: dict[str, FamilySpec] = {
    "colour_map": FamilySpec(_colour_map, _params_colour_map, colours_from_train=True),
    "recolour_one": FamilySpec(_recolour_one, _params_recolour_one),
    "fill_background": FamilySpec(_fill_background, _params_fill_background),
    "crop": FamilySpec(_crop, _params_crop, min_side=2, object_input=True),
    "scale2": FamilySpec(_scale2, _params_plain, max_side=MAX_SIDE // 2),
    "mirror_h": FamilySpec(_mirror_h, _params_plain, max_width=MAX_SIDE // 2),
    "mirror_v": FamilySpec(_mirror_v, _params_plain, max_height=MAX_SIDE // 2),
}
for _name in _DIHEDRAL:
    SPECS[_name] = FamilySpec(
        functools.partial(_dihedral, _name),
        _params_plain,
        min_side=1 if _name == "copy" else 2,  # a 1x1 grid is its own rotation
        may_equal=_name == "copy",
    )

# "copy" is opt-in: its input always equals its output. The default set is arc-nano's
# (the held-out generated sets of the accuracy harness keep it); "all" adds ARC_FAMILIES.
DEFAULT_FAMILIES: tuple[str, ...] = tuple(n for n in SPECS if n != "copy")


def apply_rule(family: str, grid, params: dict) -> np.ndarray:
    """Apply ``family``'s rule with a task's ``params`` to one grid (list or array)."""
    return _spec(family).rule(np.asarray(grid, dtype=np.int8), params)


def sample_params(family: str, rng: np.random.Generator) -> dict:
    """Draw one task's parameters for ``family`` (palette, density, rule parameters)."""
    return _spec(family).sample_params(rng)


def _spec(family: str) -> FamilySpec:
    if family not in SPECS:
        raise ValueError(
            f"unknown synthetic family {family!r} (fix: use one of {', '.join(sorted(SPECS))})"
        )
    return SPECS[family]


def _side_bounds(family: str, min_size: int, max_size: int) -> tuple[int, int, int, int]:
    """(lo_h, hi_h, lo_w, hi_w) for input sides: the caller's bounds narrowed by the family."""
    # max_size 1 is refused: 1x1 grids cannot give a task several distinct inputs.
    if not (1 <= min_size <= max_size <= MAX_SIDE and max_size >= 2):
        raise ValueError(
            f"synthetic sizes: min_size={min_size}, max_size={max_size} "
            f"(fix: need 1 <= min_size <= max_size <= {MAX_SIDE} and max_size >= 2)"
        )
    s = SPECS[family]
    lo = max(min_size, s.min_side)
    hi_h = min(max_size, s.max_side, s.max_height)
    hi_w = min(max_size, s.max_side, s.max_width)
    if s.min_side > max_size:
        # The caller's window lies below the family's least input (objects need room):
        # use the smallest inputs the family allows.
        return s.min_side, s.min_side, s.min_side, s.min_side
    if lo > min(hi_h, hi_w):
        # The caller's window lies above the family's cap (e.g. scale2 above 15):
        # use the largest inputs the family allows, so outputs stay within 30.
        lo = min(hi_h, hi_w)
    return lo, hi_h, lo, hi_w


def _random_grid(rng: np.random.Generator, h: int, w: int, params: dict) -> np.ndarray:
    mask = rng.random((h, w)) < params["density"]
    colours = rng.choice(np.asarray(params["palette"], dtype=np.int8), size=(h, w))
    return np.where(mask, colours, 0).astype(np.int8)


def _object_grid(rng: np.random.Generator, h: int, w: int, params: dict) -> np.ndarray:
    """One random object, smaller than the grid, on a black background."""
    oh = int(rng.integers(1, h + 1))
    ow = int(rng.integers(1, w + 1))
    if oh == h and ow == w:  # the object must leave some background to crop away
        if rng.random() < 0.5:
            oh -= 1
        else:
            ow -= 1
        oh, ow = max(oh, 1), max(ow, 1)
    obj = _random_grid(rng, oh, ow, params)
    g = np.zeros((h, w), dtype=np.int8)
    r = int(rng.integers(0, h - oh + 1))
    c = int(rng.integers(0, w - ow + 1))
    g[r : r + oh, c : c + ow] = obj
    return g


def _place_rects(
    rng: np.random.Generator, h: int, w: int, n: int, min_side: int, gap: int = 1
) -> list[tuple[int, int, int, int]]:
    """Up to ``n`` rectangles (r, c, rh, rw) of sides >= ``min_side`` that keep ``gap``
    background cells between each other."""
    taken = np.zeros((h, w), dtype=bool)
    rects: list[tuple[int, int, int, int]] = []
    for _ in range(n * 20):
        if len(rects) == n or min(h, w) < min_side:
            break
        rh = int(rng.integers(min_side, max(min_side, h * 2 // 3) + 1))
        rw = int(rng.integers(min_side, max(min_side, w * 2 // 3) + 1))
        if rh > h or rw > w:
            continue
        r, c = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        if taken[max(r - gap, 0) : r + rh + gap, max(c - gap, 0) : c + rw + gap].any():
            continue
        taken[r : r + rh, c : c + rw] = True
        rects.append((r, c, rh, rw))
    return rects


def _hollow_grid(rng: np.random.Generator, h: int, w: int, params: dict) -> np.ndarray:
    """1-3 rectangle outlines (interiors empty, some left open) on black."""
    g = np.zeros((h, w), dtype=np.int8)
    for r, c, rh, rw in _place_rects(rng, h, w, int(rng.integers(1, 4)), 3):
        g[r : r + rh, c : c + rw] = rng.choice(params["palette"])
        g[r + 1 : r + rh - 1, c + 1 : c + rw - 1] = 0
        if rng.random() < 0.25:  # an open box: its inside reaches the border, stays empty
            g[r, c + 1 + int(rng.integers(rw - 2))] = 0
    return g


def _pairs_grid(rng: np.random.Generator, h: int, w: int, params: dict) -> np.ndarray:
    """1-3 pairs of same-coloured cells in one row or column, the cells between empty."""
    g = np.zeros((h, w), dtype=np.int8)
    used = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        colour = rng.choice(params["palette"])
        view, mask = (g, used) if rng.random() < 0.5 else (g.T, used.T)
        i = int(rng.integers(view.shape[0]))
        if view.shape[1] < 3 or (view[i] == colour).any():
            continue
        a = int(rng.integers(0, view.shape[1] - 2))
        b = int(rng.integers(a + 2, view.shape[1]))
        if mask[i, a : b + 1].any():
            continue
        view[i, a], view[i, b] = colour, colour
        mask[i, a : b + 1] = True
    return g


def _objects_grid(rng: np.random.Generator, h: int, w: int, params: dict) -> np.ndarray:
    """2-4 separate patterned objects on black, one of them strictly the largest."""
    g = np.zeros((h, w), dtype=np.int8)
    rects = _place_rects(rng, h, w, int(rng.integers(2, 5)), 1)
    areas = sorted(rh * rw for _, _, rh, rw in rects)
    if len(rects) < 2 or areas[-1] == areas[-2]:
        return g  # no unique largest: the caller draws again
    for r, c, rh, rw in rects:
        patch = rng.choice(params["palette"], size=(rh, rw))
        if rng.random() < 0.5:
            patch[:] = patch[0, 0]
        g[r : r + rh, c : c + rw] = patch
    return g


def _noisy_grid(rng: np.random.Generator, h: int, w: int, params: dict) -> np.ndarray:
    """Solid rectangles (sides >= 2) plus lone noise pixels on the background."""
    g = np.zeros((h, w), dtype=np.int8)
    for r, c, rh, rw in _place_rects(rng, h, w, int(rng.integers(1, 4)), 2):
        g[r : r + rh, c : c + rw] = rng.choice(params["palette"])
    for _ in range(int(rng.integers(1, max(2, h * w // 8)))):
        r, c = int(rng.integers(h)), int(rng.integers(w))
        if not g[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any():
            g[r, c] = rng.choice(params["noise"])
    return g


# Families of real ARC-AGI-1 rules arc-nano never saw (issue: a base for real tasks).
ARC_FAMILIES: dict[str, FamilySpec] = {
    "scale3": FamilySpec(_scale3, _params_plain, max_side=MAX_SIDE // 6),
    "tile": FamilySpec(_tile, _params_tile, max_side=MAX_SIDE // 6),
    "colour_map_wide": FamilySpec(_colour_map, _params_colour_map_wide, colours_from_train=True),
    "gravity": FamilySpec(_gravity, _params_gravity, min_side=2),
    "fill_enclosed": FamilySpec(
        _fill_enclosed, _params_fill_enclosed, min_side=4, make_input=_hollow_grid
    ),
    "connect_lines": FamilySpec(_connect_lines, _params_plain, min_side=3, make_input=_pairs_grid),
    "crop_largest": FamilySpec(_crop_largest, _params_plain, min_side=5, make_input=_objects_grid),
    "denoise": FamilySpec(_denoise, _params_denoise, min_side=4, make_input=_noisy_grid),
}
SPECS.update(ARC_FAMILIES)
ALL_FAMILIES: tuple[str, ...] = DEFAULT_FAMILIES + tuple(ARC_FAMILIES)


def _make_pair(
    family: str, rng: np.random.Generator, params: dict
) -> tuple[np.ndarray, np.ndarray]:
    """One (input, output) pair of ``family`` for a task's ``params``.

    ``params`` holds the rule parameters from ``sample_params`` plus ``min_size`` and
    ``max_size``. Retries until the pair is non-trivial (output differs from input,
    the input is not all background).
    """
    s = SPECS[family]
    lo_h, hi_h, lo_w, hi_w = _side_bounds(family, params["min_size"], params["max_size"])
    for _ in range(_MAX_TRIES):
        h = int(rng.integers(lo_h, hi_h + 1))
        w = int(rng.integers(lo_w, hi_w + 1))
        make = s.make_input or (_object_grid if s.object_input else _random_grid)
        inp = make(rng, h, w, params)
        if not inp.any():
            continue
        out = s.rule(inp, params)
        if s.may_equal or inp.shape != out.shape or not np.array_equal(inp, out):
            return inp, out
    raise RuntimeError(
        f"synthetic family {family!r}: no non-trivial pair in {_MAX_TRIES} tries at sizes "
        f"{params['min_size']}..{params['max_size']} (fix: widen the sizes)"
    )


FAMILIES: dict[str, Callable[[np.random.Generator, dict], tuple[np.ndarray, np.ndarray]]] = {
    name: functools.partial(_make_pair, name) for name in SPECS
}


# ---------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------


def _n_train(rng: np.random.Generator, n_train: int | Sequence[int]) -> int:
    if isinstance(n_train, int):
        lo = hi = n_train
    else:
        lo, hi = n_train
    if not 1 <= lo <= hi:
        raise ValueError(
            f"synthetic n_train={n_train!r} (fix: an int >= 1 or (lo, hi) with lo <= hi)"
        )
    return int(rng.integers(lo, hi + 1))


def make_task(
    family: str,
    rng: np.random.Generator | int,
    n_train: int | Sequence[int] = (3, 4),
    min_size: int = 3,
    max_size: int = 10,
) -> dict:
    """One task of ``family``: ``{"train": [{"input", "output"}], "test": [{"input", "output"}]}``.

    All pairs share one draw of the family's parameters. Grids are lists of lists of
    ints. ``rng`` is a numpy Generator or a seed.
    """
    _spec(family)
    _side_bounds(family, min_size, max_size)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    params = {**sample_params(family, rng), "min_size": min_size, "max_size": max_size}
    n = _n_train(rng, n_train)
    make = FAMILIES[family]
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    seen: set[tuple] = set()
    for _ in range(_MAX_TRIES):
        inp, out = make(rng, params)
        key = (inp.shape, inp.tobytes())
        if key in seen:  # distinct inputs: a repeated pair teaches nothing
            continue
        if len(pairs) == n and SPECS[family].colours_from_train:
            train_colours = set(np.unique(np.concatenate([p[0].ravel() for p in pairs])))
            if not set(np.unique(inp)) <= train_colours:
                continue  # the test input would use a colour whose mapping is unseen
        seen.add(key)
        pairs.append((inp, out))
        if len(pairs) == n + 1:
            break
    else:
        raise RuntimeError(
            f"synthetic family {family!r}: could not draw {n + 1} distinct pairs at sizes "
            f"{min_size}..{max_size} (fix: widen the sizes)"
        )
    as_dict = [{"input": i.tolist(), "output": o.tolist()} for i, o in pairs]
    return {"train": as_dict[:n], "test": as_dict[n:]}


def task_id(family: str, seed: int, i: int) -> str:
    """The id of task ``i`` of ``seed``: ``f"{family}-{seed}-{i:05d}"``."""
    return f"{family}-{seed}-{i:05d}"


def family_of(task_id: str) -> str:
    """The family name inside a synthetic task id (``"rot90-0-00012"`` -> ``"rot90"``)."""
    parts = task_id.rsplit("-", 2)
    if len(parts) != 3 or parts[0] not in SPECS:
        raise ValueError(
            f"{task_id}: not a synthetic task id (fix: expected '<family>-<seed>-<index>')"
        )
    return parts[0]


def _families(families: Sequence[str] | str | None) -> list[str]:
    if families is None:
        return list(DEFAULT_FAMILIES)
    if families == "all":
        return list(ALL_FAMILIES)
    if isinstance(families, str):
        families = [f.strip() for f in families.split(",") if f.strip()]
    names = list(families)
    if not names:
        raise ValueError("synthetic families: empty list (fix: name at least one family)")
    for name in names:
        _spec(name)
    return names


def _task_at(
    i: int, seed: int, names: list[str], min_size: int, max_size: int, n_train
) -> tuple[str, dict]:
    # One generator per (seed, index): task i never depends on how many tasks are drawn.
    family = names[i % len(names)]
    rng = np.random.default_rng([seed, i])
    return task_id(family, seed, i), make_task(family, rng, n_train, min_size, max_size)


def generate(
    n_tasks: int,
    seed: int,
    families: Sequence[str] | str | None = None,
    min_size: int = 3,
    max_size: int = 10,
    n_train: int | Sequence[int] = (3, 4),
) -> tuple[dict, dict]:
    """``n_tasks`` tasks, balanced over ``families`` (round robin), in Kaggle's two halves.

    Returns ``(challenges, solutions)``: challenges maps task id -> ``{"train": [...],
    "test": [{"input"}]}``, solutions maps task id -> the list of test output grids.
    """
    if n_tasks < 0 or seed < 0:
        raise ValueError(
            f"synthetic generate: n_tasks={n_tasks}, seed={seed} (fix: both must be >= 0)"
        )
    names = _families(families)
    challenges: dict[str, dict] = {}
    solutions: dict[str, list] = {}
    for i in range(n_tasks):
        tid, task = _task_at(i, seed, names, min_size, max_size, n_train)
        challenges[tid] = {
            "train": task["train"],
            "test": [{"input": t["input"]} for t in task["test"]],
        }
        solutions[tid] = [t["output"] for t in task["test"]]
    return challenges, solutions


def iter_training_examples(
    seed: int,
    families: Sequence[str] | str | None = None,
    min_size: int = 3,
    max_size: int = 10,
    n_train: int | Sequence[int] = (3, 4),
) -> Iterator[dict]:
    """An endless seeded stream of tasks (``make_task`` dicts), round robin over families.

    Task ``i`` of the stream is the task ``generate(..., seed)`` gives at index ``i``.
    """
    if seed < 0:
        raise ValueError(f"synthetic stream: seed={seed} (fix: use a seed >= 0)")
    names = _families(families)
    for i in itertools.count():
        yield _task_at(i, seed, names, min_size, max_size, n_train)[1]


def write_kaggle(
    challenges: dict, solutions: dict, out_dir: str | os.PathLike, prefix: str
) -> tuple[Path, Path]:
    """Write ``<prefix>_challenges.json`` and ``<prefix>_solutions.json`` into ``out_dir``.

    Returns both paths. Files are written whole then renamed, so a reader never sees a
    half-written file.
    """
    missing = sorted(set(challenges) ^ set(solutions))
    if missing:
        raise ValueError(
            f"{missing[0]}: in only one of challenges/solutions ({len(missing)} such ids) "
            "(fix: pass the pair returned by generate)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / f"{prefix}_challenges.json", out / f"{prefix}_solutions.json")
    for path, data in zip(paths, (challenges, solutions)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)
    return paths
