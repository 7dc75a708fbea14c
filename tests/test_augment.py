"""Views: exact inverses, task consistency, seeded reproducibility, identity first."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arc_ttft import augment as A
from arc_ttft.tasks import Example, Task

grids = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda hw: arrays(np.int8, hw, elements=st.integers(0, 9))
)
colour_perms = st.permutations(list(range(10))).map(tuple)
views = st.builds(A.View, st.integers(0, 7), colour_perms, st.none())


@settings(max_examples=300, deadline=None)
@given(view=views, g=grids)
def test_invert_undoes_apply(view, g):
    out = A.apply_grid(view, g)
    assert out.dtype == g.dtype
    assert sorted(out.shape) == sorted(g.shape)
    back = A.invert_grid(view, out)
    assert back.shape == g.shape and np.array_equal(back, g)
    # And the other way round: apply undoes invert.
    assert np.array_equal(A.apply_grid(view, A.invert_grid(view, g)), g)


def test_eight_distinct_transforms_on_an_asymmetric_grid():
    g = np.arange(6, dtype=np.int8).reshape(2, 3)
    outs = {
        A.apply_grid(A.View(t), g).tobytes() + bytes(A.apply_grid(A.View(t), g).shape)
        for t in range(8)
    }
    assert len(outs) == 8
    assert np.array_equal(A.apply_grid(A.View(6), g), g.T)
    assert np.array_equal(A.apply_grid(A.View(4), g), g[:, ::-1])


def test_apply_returns_a_new_array():
    g = np.zeros((2, 2), dtype=np.int8)
    out = A.apply_grid(A.identity_view(), g)
    out[0, 0] = 5
    assert g[0, 0] == 0


def test_colours_map_old_to_new():
    v = A.View(0, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9))
    g = np.array([[0, 1, 2]], dtype=np.int8)
    assert A.apply_grid(v, g).tolist() == [[0, 2, 1]]


def test_invalid_views_name_the_field():
    with pytest.raises(ValueError, match="transform"):
        A.View(8)
    with pytest.raises(ValueError, match="colours"):
        A.View(0, (0,) * 10)
    with pytest.raises(ValueError, match="order"):
        A.View(0, A.IDENTITY_COLOURS, (0, 0))


def _task(rule, n_train=4, seed=0, shape=(3, 5)) -> Task:
    rng = np.random.default_rng(seed)
    ex = []
    for _ in range(n_train + 1):
        g = rng.integers(0, 10, size=shape).astype(np.int8)
        ex.append(Example(g, rule(g)))
    return Task("t", ex[:-1], [Example(ex[-1].input, None)])


@settings(max_examples=100, deadline=None)
@given(view=views, order_seed=st.integers(0, 10_000))
def test_apply_task_keeps_pairs_consistent(view, order_seed):
    task = _task(lambda g: g.T.copy())
    order = tuple(np.random.default_rng(order_seed).permutation(len(task.train)).tolist())
    view = A.View(view.transform, view.colours, order)
    vt = A.apply_task(view, task)
    assert len(vt.train) == len(task.train) and len(vt.test) == 1
    assert vt.test[0].output is None
    for new_pos, old in enumerate(order):
        ex, orig = vt.train[new_pos], task.train[old]
        assert np.array_equal(A.invert_grid(view, ex.input), orig.input)
        assert np.array_equal(A.invert_grid(view, ex.output), orig.output)
    # transpose commutes with recolouring, and conjugating it by a dihedral element gives
    # another dihedral element: every augmented pair follows one common rule.
    rule = A.apply_grid(view, A.DIHEDRAL[6](A.invert_grid(view, vt.train[0].input)))
    assert np.array_equal(rule, vt.train[0].output)
    for ex in vt.train:
        expected = A.apply_grid(view, A.invert_grid(view, ex.input).T)
        assert np.array_equal(ex.output, expected)


@settings(max_examples=50, deadline=None)
@given(view=views)
def test_colour_map_rule_survives_augmentation(view):
    # Rule: swap colours 1 and 2. Under a view it becomes: swap colours[1] and colours[2].
    swap = np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9], dtype=np.int8)
    task = _task(lambda g: swap[g])
    vt = A.apply_task(view, task)
    a, b = view.colours[1], view.colours[2]
    new_swap = np.arange(10, dtype=np.int8)
    new_swap[a], new_swap[b] = b, a
    for ex in vt.train:
        assert np.array_equal(ex.output, new_swap[ex.input])


def test_apply_task_rejects_wrong_order_length():
    task = _task(lambda g: g)
    with pytest.raises(ValueError, match="train pairs"):
        A.apply_task(A.View(0, A.IDENTITY_COLOURS, (1, 0)), task)


def test_make_views_identity_first_and_seeded():
    task = _task(lambda g: g, n_train=3)
    a = A.make_views(task, 12, seed=5)
    assert a[0] == A.identity_view() and a[0].is_identity
    assert a == A.make_views(3, 12, seed=5)
    assert a != A.make_views(task, 12, seed=6)
    assert len(set(a)) == 12
    # The identity counts for the first round: the first 8 views cover all transforms.
    assert {v.transform for v in a[:8]} == set(range(8))
    assert all(v.colours[0] == 0 for v in a)
    assert all(v.order is not None and sorted(v.order) == [0, 1, 2] for v in a[1:])


def test_make_views_options():
    v = A.make_views(2, 8, seed=0, permute_colours=False, shuffle_order=False)
    assert all(x.colours == A.IDENTITY_COLOURS and x.order is None for x in v)
    assert sorted(x.transform for x in v) == list(range(8))  # distinct while possible
    more = A.make_views(2, 20, seed=0, permute_colours=False, shuffle_order=False)
    assert len(more) == 20  # repeats only once the space is exhausted
    free = A.make_views(2, 30, seed=1, keep_background=False, identity_first=False)
    assert any(x.colours[0] != 0 for x in free)
    assert len(set(free)) == 30
    assert A.make_views(1, 3, seed=0)[1].order is None  # one pair: nothing to shuffle
    assert A.make_views(3, 0, seed=0) == []


def test_describe():
    assert A.describe(A.identity_view()) == "id"
    v = A.View(1, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9), (1, 0))
    assert A.describe(v) == "rot90 c=0213456789 o=1,0"


# ---------------------------------------------------------------------------------------
# Transform sets: views that keep a geometric rule
# ---------------------------------------------------------------------------------------

GEOMETRIC = ("rot90", "rot180", "rot270", "flip_h", "flip_v", "transpose", "anti_transpose")


def _rule_of(task: Task) -> set[str]:
    """The geometric families whose rule maps every train input to its output."""
    from arc_ttft.training import synthetic

    return {
        f
        for f in GEOMETRIC
        if all(
            np.array_equal(synthetic.apply_rule(f, ex.input, {}), ex.output) for ex in task.train
        )
    }


def _geometric_task(family: str, seed: int) -> Task:
    from arc_ttft.training import synthetic

    raw = synthetic.make_task(family, seed, 3, 3, 5)
    return Task(
        family, [Example(np.array(p["input"]), np.array(p["output"])) for p in raw["train"]], []
    )


@pytest.mark.parametrize("family", GEOMETRIC)
@pytest.mark.parametrize("kind", ["central", "none"])
def test_rule_keeping_views_keep_every_geometric_rule(family, kind):
    task = _geometric_task(family, 1)
    assert family in _rule_of(task)
    views = A.make_views(task, 12, seed=2, transforms=A.TRANSFORM_SETS[kind])
    assert {v.transform for v in views} == set(A.TRANSFORM_SETS[kind])
    for v in views:
        assert family in _rule_of(A.apply_task(v, task)), A.describe(v)


def test_dihedral_views_turn_rotations_into_other_rules():
    """The negative control: under all 8 transforms a rot90 task shows another rule."""
    task = _geometric_task("rot90", 1)
    views = A.make_views(task, 8, seed=2, transforms=A.TRANSFORM_SETS["dihedral"])
    rules = [_rule_of(A.apply_task(v, task)) for v in views]
    assert any("rot90" not in r and "rot270" in r for r in rules)


def test_make_views_rejects_unknown_transforms():
    with pytest.raises(ValueError, match="transforms"):
        A.make_views(3, 4, seed=0, transforms=(9,))
    with pytest.raises(ValueError, match="transforms"):
        A.make_views(3, 4, seed=0, transforms=())
    with pytest.raises(ValueError, match="unknown; use one of dihedral, central, none"):
        A.make_views(3, 4, seed=0, transforms="rotations")


def test_make_views_takes_a_transform_set_by_name():
    for name, allowed in A.TRANSFORM_SETS.items():
        by_name = A.make_views(3, 16, seed=4, transforms=name)
        assert by_name == A.make_views(3, 16, seed=4, transforms=allowed)
        assert {v.transform for v in by_name} == set(allowed)


def test_view_families_name_transforms_and_colours():
    assert A.parse_family("central") == ((0, 2), True)
    assert A.parse_family(A.view_family("dihedral", own_colours=True)) == (
        tuple(range(8)),
        False,
    )
    views = A.make_views(3, 16, seed=1, transforms="none/own-colours")
    assert {v.transform for v in views} == {0}
    assert {v.colours for v in views} == {A.IDENTITY_COLOURS}
    with pytest.raises(ValueError, match="transforms 'spin' unknown.*/own-colours"):
        A.parse_family("spin/own-colours")
