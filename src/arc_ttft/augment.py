"""Invertible views of a task: 8 dihedral transforms x colour permutation x example order.

A ``View`` changes how a task looks without changing its rule: rotating or mirroring
every grid, renaming colours, or showing the train pairs in another order gives an
equivalent task. TTT trains on many views; inference asks the question under several
views and maps every answer back with ``invert_grid`` before voting, so each view needs
an exact inverse (a property test checks ``invert_grid(v, apply_grid(v, g)) == g``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from arc_ttft.tasks import Example, Task

Grid = np.ndarray

# The 8 symmetries of the square. Index 0 is the identity; np.rot90 turns counter-clockwise.
DIHEDRAL: tuple[Callable[[Grid], Grid], ...] = (
    lambda g: g,
    lambda g: np.rot90(g, 1),
    lambda g: np.rot90(g, 2),
    lambda g: np.rot90(g, 3),
    lambda g: g[:, ::-1],
    lambda g: g[::-1, :],
    lambda g: g.T,
    lambda g: g[::-1, ::-1].T,
)
DIHEDRAL_NAMES: tuple[str, ...] = (
    "id",
    "rot90",
    "rot180",
    "rot270",
    "flip_lr",
    "flip_ud",
    "transpose",
    "antitranspose",
)
# DIHEDRAL[DIHEDRAL_INVERSE[k]] undoes DIHEDRAL[k]: the rotations pair up, mirrors undo themselves.
DIHEDRAL_INVERSE: tuple[int, ...] = (0, 3, 2, 1, 4, 5, 6, 7)

IDENTITY_COLOURS: tuple[int, ...] = tuple(range(10))

# Which geometric transforms views may use. A dihedral view conjugates a task's rule:
# under a transpose view a rot90 task becomes a rot270 task, so an adapter trained on all
# 8 learns a mixture of rules. rot180 commutes with every dihedral rule (it is the centre
# of the group), and colour and order changes commute with every geometric rule, so
# "central" and "none" keep rotations, flips and transposes what they are.
TRANSFORM_SETS: dict[str, tuple[int, ...]] = {
    "dihedral": tuple(range(8)),
    "central": (0, 2),
    "none": (0,),
}

# A view family names a transform set, plus OWN_COLOURS when its views keep the task's own
# colours. Permuted colours keep every rule that treats colours alike, but not a fixed
# colour rule ("5 becomes 8"): under each permutation that is another map, which a small
# adapter can only follow in context. Under a rotation it stays the same map, so an
# adapter trained on own-coloured dihedral views learns it directly.
OWN_COLOURS = "/own-colours"
# Beside a saved adapter: {"views": family}, the views it was trained in.
VIEWS_FILE = "views.json"


def view_family(transforms: str, own_colours: bool = False) -> str:
    """The family name of views with ``transforms`` (a TRANSFORM_SETS name) and colours
    kept (``own_colours``) or permuted."""
    return transforms + (OWN_COLOURS if own_colours else "")


def parse_family(family: str) -> tuple[tuple[int, ...], bool]:
    """A view family's transforms (indices into DIHEDRAL) and whether it permutes colours."""
    name, own = (
        (family[: -len(OWN_COLOURS)], True) if family.endswith(OWN_COLOURS) else (family, False)
    )
    if name not in TRANSFORM_SETS:
        raise ValueError(
            f"view family {family!r}: transforms {name!r} unknown; use one of "
            f"{', '.join(TRANSFORM_SETS)}, optionally followed by {OWN_COLOURS!r}"
        )
    return TRANSFORM_SETS[name], not own


@dataclass(frozen=True)
class View:
    """One augmentation: ``transform`` indexes DIHEDRAL, ``colours[old] == new``,
    ``order`` lists the original train indices in their new order (None = as is)."""

    transform: int = 0
    colours: tuple[int, ...] = IDENTITY_COLOURS
    order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.transform, int) and 0 <= self.transform < len(DIHEDRAL)):
            raise ValueError(f"View.transform: {self.transform!r} must be an int in 0..7")
        if sorted(self.colours) != list(IDENTITY_COLOURS):
            raise ValueError(
                f"View.colours: {self.colours!r} must be a permutation of 0..9 (colours[old] = new)"
            )
        if self.order is not None and sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"View.order: {self.order!r} must be a permutation of 0..n-1")

    @property
    def is_identity(self) -> bool:
        """True when the view changes nothing (order None or already in order)."""
        same_order = self.order is None or list(self.order) == sorted(self.order)
        return self.transform == 0 and self.colours == IDENTITY_COLOURS and same_order


def identity_view() -> View:
    """The view that changes nothing (always the first of ``make_views``)."""
    return View(0, IDENTITY_COLOURS, None)


def _inverse_colours(colours: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(colours)
    for old, new in enumerate(colours):
        inv[new] = old
    return tuple(inv)


def _recolour(g: Grid, colours: tuple[int, ...]) -> Grid:
    if colours == IDENTITY_COLOURS:
        return g
    lut = np.asarray(colours, dtype=g.dtype if g.dtype.kind in "iu" else np.int64)
    return lut[g]


def apply_grid(view: View, g: Grid) -> Grid:
    """The grid as seen under ``view`` (a new contiguous array, same dtype)."""
    g = np.asarray(g)
    out = _recolour(DIHEDRAL[view.transform](g), view.colours)
    return np.array(out, dtype=g.dtype, order="C")


def invert_grid(view: View, g: Grid) -> Grid:
    """Map a grid seen under ``view`` back to the original task's frame (exact inverse)."""
    g = np.asarray(g)
    back = _recolour(g, _inverse_colours(view.colours))
    out = DIHEDRAL[DIHEDRAL_INVERSE[view.transform]](back)
    return np.array(out, dtype=g.dtype, order="C")


def _apply_example(view: View, ex: Example) -> Example:
    out = None if ex.output is None else apply_grid(view, ex.output)
    return Example(apply_grid(view, ex.input), out)


def apply_task(view: View, task: Task) -> Task:
    """The task under ``view``: every input and output grid transformed, train reordered.

    Test examples keep their order (their indices are the submission's indices).
    """
    train = [_apply_example(view, ex) for ex in task.train]
    if view.order is not None:
        if len(view.order) != len(train):
            raise ValueError(
                f"{task.id}: View.order has {len(view.order)} indices but the task has "
                f"{len(train)} train pairs; build views with make_views(task, ...)"
            )
        train = [train[i] for i in view.order]
    test = [_apply_example(view, ex) for ex in task.test]
    return Task(task.id, train, test)


def _view_key(v: View) -> tuple:
    order = None if v.order is None or list(v.order) == sorted(v.order) else v.order
    return (v.transform, v.colours, order)


def make_views(
    task_or_n_train: Task | int,
    n: int,
    seed: int,
    *,
    identity_first: bool = True,
    permute_colours: bool = True,
    keep_background: bool = True,
    shuffle_order: bool = True,
    transforms: str | Sequence[int] | None = None,
) -> list[View]:
    """``n`` seeded, reproducible views of a task (or of a task with that many train pairs).

    The transforms cycle through shuffled rounds of all 8 (or of ``transforms``: a view
    family, see ``parse_family``, or indices into ``DIHEDRAL``), so any 8 consecutive views
    cover the allowed transforms evenly. A family with OWN_COLOURS keeps the colours.
    Colours are a random permutation (0 stays 0 with ``keep_background``), the train order
    a random permutation. Views are distinct while distinct ones remain; only when the
    space is exhausted (e.g. colours and order fixed and n > 8) do they repeat.
    """
    if n < 0:
        raise ValueError(f"make_views: n={n} must be >= 0")
    if isinstance(transforms, str):
        transforms, permuted = parse_family(transforms)
        permute_colours = permute_colours and permuted
    allowed = sorted(set(range(len(DIHEDRAL)) if transforms is None else transforms))
    if not allowed or not set(allowed) <= set(range(len(DIHEDRAL))):
        raise ValueError(f"make_views: transforms={transforms} must be indices into DIHEDRAL")
    n_train = task_or_n_train if isinstance(task_or_n_train, int) else len(task_or_n_train.train)
    rng = random.Random(seed)
    views: list[View] = []
    seen: set[tuple] = set()
    if identity_first and n > 0:
        views.append(identity_view())
        seen.add(_view_key(views[0]))

    # Rounds of the allowed transforms in shuffled order; the identity view counts for
    # round one.
    pending = [t for t in allowed if not (views and t == 0)]
    rng.shuffle(pending)
    while len(views) < n:
        if not pending:
            pending = list(allowed)
            rng.shuffle(pending)
        # The round's next transform if it still has an unseen view, else the next one
        # that does, else any transform at all; only then accept a repeat.
        candidates = pending + [t for t in allowed if t not in pending]
        view = None
        for t in candidates:
            view = _fresh_view(
                rng, t, n_train, seen, permute_colours, keep_background, shuffle_order
            )
            if view is not None:
                break
        if view is None:
            view = _draw_view(
                rng, pending[0], n_train, permute_colours, keep_background, shuffle_order
            )
        if view.transform in pending:
            pending.remove(view.transform)
        seen.add(_view_key(view))
        views.append(view)
    return views


def _draw_view(
    rng: random.Random, t: int, n_train: int, permute: bool, keep_bg: bool, shuffle: bool
) -> View:
    colours = _random_colours(rng, permute, keep_bg)
    order = None
    if shuffle and n_train > 1:
        perm = list(range(n_train))
        rng.shuffle(perm)
        order = tuple(perm)
    return View(t, colours, order)


def _fresh_view(
    rng: random.Random,
    t: int,
    n_train: int,
    seen: set[tuple],
    permute: bool,
    keep_bg: bool,
    shuffle: bool,
) -> View | None:
    """A random view with transform ``t`` not in ``seen``, or None after a few tries."""
    for _ in range(16):
        v = _draw_view(rng, t, n_train, permute, keep_bg, shuffle)
        if _view_key(v) not in seen:
            return v
    return None


def _random_colours(rng: random.Random, permute: bool, keep_background: bool) -> tuple[int, ...]:
    if not permute:
        return IDENTITY_COLOURS
    rest = list(range(1, 10)) if keep_background else list(range(10))
    rng.shuffle(rest)
    return tuple([0] + rest) if keep_background else tuple(rest)


def describe(view: View) -> str:
    """A short label for logs, e.g. ``rot90 c=0351246789 o=2,0,1`` (``id`` for the identity)."""
    parts = [DIHEDRAL_NAMES[view.transform]]
    if view.colours != IDENTITY_COLOURS:
        parts.append("c=" + "".join(str(c) for c in view.colours))
    if view.order is not None and list(view.order) != sorted(view.order):
        parts.append("o=" + ",".join(str(i) for i in view.order))
    return " ".join(parts)
