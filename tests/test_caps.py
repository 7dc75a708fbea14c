"""Generation caps: no answer up to 30x30 is cut while the prompt leaves room for it."""

from __future__ import annotations

import numpy as np
import pytest

from arc_ttft import augment, encoding, models, selection
from arc_ttft.config import InferConfig
from arc_ttft.infer.base import answer_shape, generation_cap, query_cap
from arc_ttft.tasks import load_tasks

# arc1-eval tasks whose answer is larger than every example output and the test input:
# the old cap (largest of those + 10%) cut them. The first two follow a size rule
# (output = k x input); the last two size their output by content.
SCALE_UP = ["60c09cac", "833dafe3"]
CONTENT_SIZED = ["2697da3f", "ad7e01d0"]


@pytest.fixture(scope="module")
def arc1_eval():
    return {t.id: t for t in load_tasks("arc1-eval").tasks}


@pytest.fixture(scope="module")
def tok():
    return models._tiny_tokenizer()


def _answer_tokens(grid, tok) -> int:
    text = encoding.get_format("digits").render(np.asarray(grid)) + encoding.end_marker(tok)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_size_rules_bound_the_answer():
    g = lambda h, w: [[0] * w] * h  # noqa: E731
    assert answer_shape([(g(2, 3), g(4, 6)), (g(3, 3), g(6, 6))], g(5, 4)) == (10, 8)  # x2
    assert answer_shape([(g(2, 2), g(4, 4)), (g(3, 3), g(5, 5))], g(6, 6)) == (8, 8)  # +2
    assert answer_shape([(g(4, 4), g(2, 2)), (g(6, 6), g(3, 3))], g(8, 8)) == (8, 8)  # /2: query
    assert answer_shape([(g(2, 2), g(3, 3)), (g(3, 3), g(3, 3))], g(9, 9)) == (9, 9)  # constant
    assert answer_shape([(g(10, 10), g(30, 30))], g(20, 20)) == (30, 30)  # at most 30


def test_scale_up_answers_fit_the_reserve(arc1_eval, tok):
    for tid in SCALE_UP:
        t = arc1_eval[tid]
        examples = [(ex.input, ex.output) for ex in t.train]
        for x in t.test:
            assert _answer_tokens(x.output, tok) <= query_cap(examples, x.input, "digits", tok)


@pytest.mark.parametrize("tid", SCALE_UP + CONTENT_SIZED)
def test_requests_leave_room_for_the_whole_answer(arc1_eval, tok, tid):
    """Every view's request may generate the view's whole answer when the context has room,
    whether a size rule predicted it or not."""
    t = arc1_eval[tid]
    views = selection.task_views(t, 4)
    keyed, skipped = selection.build_requests(
        [t], {t.id: views}, "digits", tok, {}, InferConfig(views=4), max_seq_len=8192
    )
    assert not any(skipped.values()) and len(keyed) == 4 * len(t.test)
    for key, req in keyed:
        truth = augment.apply_grid(key.view, t.test[key.test_index].output)
        assert req.max_new_tokens >= _answer_tokens(truth, tok)
        assert len(req.prompt_ids) + req.max_new_tokens <= 8192


def test_a_binding_budget_caps_answers_at_the_predicted_grid(arc1_eval, tok):
    """When TTT was cut to keep the reserve, answers stop at the predicted grid's tokens
    (what the reserve priced) rather than running on to 30x30."""
    t = arc1_eval[SCALE_UP[0]]
    views = selection.task_views(t, 4)
    args = ([t], {t.id: views}, "digits", tok, {}, InferConfig(views=4))
    free, _ = selection.build_requests(*args, max_seq_len=8192)
    capped, _ = selection.build_requests(*args, max_seq_len=8192, predicted_cap=True)
    largest = generation_cap(0, None, "digits", tok)
    assert all(req.max_new_tokens == largest for _, req in free)
    for (key, req), (_, same) in zip(capped, free):
        vt = augment.apply_task(key.view, t)
        examples = [(ex.input, ex.output) for ex in vt.train]
        cap = query_cap(examples, vt.test[key.test_index].input, "digits", tok)
        assert req.max_new_tokens == cap < largest
        assert req.prompt_ids == same.prompt_ids
        # the prediction still holds the whole answer (a scale-up: the size rule's grid)
        truth = augment.apply_grid(key.view, t.test[key.test_index].output)
        assert req.max_new_tokens >= _answer_tokens(truth, tok)


def test_generation_cap_never_passes_the_room():
    largest = generation_cap(0, None, "digits")
    assert largest >= 30 * 31 + 1  # a 30x30 answer: rows and newlines, then the end
    assert generation_cap(50, 40, "digits") == 40  # the context decides
    assert generation_cap(50, 5000, "digits") == largest
    assert generation_cap(2000, None, "digits") == 2000  # never below the reserve


def test_old_cap_cut_these_answers(arc1_eval, tok):
    """The regression itself: the largest example output or test input is smaller than
    the answer, so a cap taken from them alone (the old rule) cuts it."""
    for tid in SCALE_UP + CONTENT_SIZED:
        t = arc1_eval[tid]
        x = t.test[0]
        grids = [ex.output for ex in t.train] + [x.input]
        h, w = max(g.shape[0] for g in grids), max(g.shape[1] for g in grids)
        assert x.output.shape[0] > h or x.output.shape[1] > w
