"""Views, voting and re-scoring, with fake backends (no model needed).

Over 500 lines: each view transform, each scorer and each voting rule is checked apart.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from arc_ttft import augment, encoding, selection
from arc_ttft import budget as B
from arc_ttft.config import InferConfig
from arc_ttft.infer import Completion
from arc_ttft.selection import Candidate, RequestKey, Selection
from arc_ttft.tasks import Example, Task


class CharTokenizer:
    """One id per character: enough for prompts, scoring and the end marker."""

    eos_token = "<|endoftext|>"
    eos_token_id = 0
    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) for ch in text]}

    def get_vocab(self):
        return {self.eos_token: 0}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


def g(rows):
    return np.array(rows, dtype=np.int8)


def make_task(tid="t1", n_tests=1):
    train = [
        Example(g([[1, 2, 0], [3, 4, 0]]), g([[0, 3, 1], [0, 4, 2]])),
        Example(g([[5, 6], [7, 8], [9, 1]]), g([[9, 7, 5], [1, 8, 6]])),
        Example(g([[2]]), g([[2]])),
    ]
    tests = [Example(g([[1, 2, 3], [4, 5, 6]]), g([[4, 1], [5, 2], [6, 3]]))]
    if n_tests > 1:
        tests.append(Example(g([[7, 0], [0, 7]]), g([[0, 7], [7, 0]])))
    return Task(tid, train, tests)


class TruthBackend:
    """Answers every request with the view-transformed ground truth (or junk for some)."""

    name = "fake"

    def __init__(self, tasks, fmt="digits", junk_views=(), tokenizer=None):
        self.tasks = {t.id: t for t in tasks}
        self.fmt = fmt
        self.junk_views = set(junk_views)
        self.calls = 0
        self.end = encoding.end_marker(tokenizer or CharTokenizer())

    def generate(self, requests):
        self.calls += 1
        out = []
        for r in requests:
            k: RequestKey = r.key
            if k.view_index in self.junk_views:
                out.append([Completion([1], "not a grid", -5.0, 1) for _ in range(r.n)])
                continue
            truth = self.tasks[k.task_id].test[k.test_index].output
            text = encoding.get_format(self.fmt).render(augment.apply_grid(k.view, truth))
            out.append([Completion([1, 2], text + self.end, -1.0, 2) for _ in range(r.n)])
        return out

    def score_many(self, items):
        return [-1.0 for _ in items]

    def close(self):
        pass


@pytest.mark.parametrize("fmt", ["digits", "shaped"])
def test_views_invert_end_to_end(fmt):
    tasks = [make_task("a", n_tests=2), make_task("b")]
    be = TruthBackend(tasks, fmt)
    cfg = InferConfig(views=8, samples=1, rescore=0)
    sels = selection.predict_tasks(tasks, be, CharTokenizer(), cfg, fmt, {"a": "/x/a", "b": None})
    assert be.calls == 1  # every prompt of every task in one call
    assert [len(sels[t.id]) for t in tasks] == [2, 1]
    for t in tasks:
        for ti, s in enumerate(sels[t.id]):
            assert s.test_index == ti and s.samples == 8 and s.invalid == 0
            assert len(s.candidates) == 1 and s.candidates[0].count == 8
            np.testing.assert_array_equal(s.top(1)[0], t.test[ti].output)
            a1, a2 = s.attempts(t, ti)
            assert a1 == t.test[ti].output.tolist()
            assert a2 != a1  # the gap is filled with a fallback, never a repeat
            json.dumps(s.to_dict())


def test_views_are_distinct_and_identity_first():
    t = make_task()
    views = selection.task_views(t, 8, seed=3)
    assert views[0].is_identity
    assert len({(v.transform, v.colours, v.order) for v in views}) == 8
    assert selection.task_views(t, 8, seed=3) == views  # reproducible
    keyed, skipped = selection.build_requests(
        [t], {t.id: views}, "digits", CharTokenizer(), {t.id: "/ad"}, InferConfig(views=8)
    )
    assert len(keyed) == 8 and skipped == {(t.id, 0): 0}
    assert all(r.adapter == "/ad" for _, r in keyed)
    # the identity prompt holds the original test input as rendered text
    text = "".join(chr(i) for i in keyed[0][1].prompt_ids)
    assert "123\n456" in text
    assert keyed[0][1].max_new_tokens >= 3 * 3 + len("<|endoftext|>")


def test_invalid_answers_are_dropped_and_counted():
    t = make_task()
    be = TruthBackend([t], junk_views={1, 2, 3})
    sels = selection.predict_tasks(
        [t], be, CharTokenizer(), InferConfig(views=8, rescore=0), "digits"
    )
    s = sels[t.id][0]
    assert s.samples == 8 and s.invalid == 3 and s.candidates[0].count == 5
    assert sorted(s.candidates[0].views) == [0, 4, 5, 6, 7]


def test_too_long_prompts_are_skipped_not_fatal():
    t = make_task()
    cfg = InferConfig(views=4, rescore=0)
    sels = selection.predict_tasks(
        [t], TruthBackend([t]), CharTokenizer(), cfg, "digits", max_seq_len=20
    )
    s = sels[t.id][0]
    assert s.skipped_views == 4 and s.candidates == []
    assert s.attempts(t, 0) == (t.test[0].input.tolist(), [[0]])


def _cand(grid, count, lp, rescore=None):
    return Candidate(grid, count, [0] * count, [lp] * count, rescore)


def test_vote_ranks_by_count_then_logprob():
    a, b, c = _cand([[1]], 3, -2.0), _cand([[2]], 5, -3.0), _cand([[3]], 3, -0.5)
    ranked = selection.vote([a, b, c])
    assert [x.grid for x in ranked] == [[[2]], [[3]], [[1]]]
    s = Selection("t", 0, ranked)
    assert s.attempts() == ([[2]], [[3]])


def test_rescore_ranking_and_vote_weight():
    a = _cand([[1]], 6, -1.0, rescore=-20.0)
    b = _cand([[2]], 2, -1.0, rescore=-19.5)
    # pure product of experts: the likelier grid wins
    assert selection.rank_candidates([a, b], "poe", 4, 0.0)[0] is b
    # with the vote term, 6 votes (log 6 = 1.79) beat 2 (log 2 = 0.69) over a 0.5 gap
    assert selection.rank_candidates([a, b], "poe", 4, 1.0)[0] is a


class ScoringBackend(TruthBackend):
    """Generates two different grids; scores make the minority grid the likelier one."""

    def __init__(self, task, good, bad):
        super().__init__([task])
        self.good, self.bad = good, bad
        self.scored = []

    def generate(self, requests):
        out = []
        for r in requests:
            v = r.key.view
            grid = self.bad if r.key.view_index % 4 else self.good  # 2 good, 6 bad of 8
            text = encoding.get_format("digits").render(augment.apply_grid(v, grid))
            out.append([Completion([1], text + self.end, -1.0, 1)])
        return out

    def score_many(self, items):
        self.scored.append(len(items))
        out = []
        for _, answer_ids, _ in items:
            text = "".join(chr(i) for i in answer_ids)
            # views transpose and recolour, so recognise the good grid by its cell count
            cells = sum(ch.isdigit() for ch in text.split("<")[0])
            out.append(-1.0 if cells == self.good.size else -9.0)
        return out


def test_rescoring_can_overturn_the_vote():
    t = make_task()
    good, bad = g([[1, 1, 1]]), g([[2], [2]])
    be = ScoringBackend(t, good, bad)
    cfg = InferConfig(views=8, rescore=3, rescore_vote_weight=1.0)
    s = selection.predict_tasks([t], be, CharTokenizer(), cfg, "digits")[t.id][0]
    assert be.scored == [3 * 2]  # one call: 3 views x 2 candidates
    assert s.rescored and len(s.rescore_views) == 3
    assert s.attempts(t, 0) == (good.tolist(), bad.tolist())
    assert s.candidates[0].rescore == pytest.approx(-3.0)
    # without re-scoring the majority wins
    s0 = selection.predict_tasks(
        [t], be, CharTokenizer(), InferConfig(views=8, rescore=0), "digits"
    )
    assert s0[t.id][0].attempts(t, 0) == (bad.tolist(), good.tolist())


class FrameScoringBackend(ScoringBackend):
    """Scores an answer as likely only when it is the good grid in the frame of the view
    its prompt was built in (the cell-count fake above cannot tell frames apart)."""

    def __init__(self, task, good, bad, m, seed=0):
        super().__init__(task, good, bad)
        tok, render = CharTokenizer(), encoding.get_format("digits").render
        self.want = {}
        for v in selection.rescore_views(task, m, seed, "dihedral"):
            prompt, _ = selection.view_prompt(task, v, 0, "digits", tok, None)
            answer = render(augment.apply_grid(v, good)) + self.end
            self.want[tuple(selection._prompt_ids(prompt, tok))] = tok(answer)["input_ids"]

    def score_many(self, items):
        self.scored.append(len(items))
        return [-1.0 if self.want[tuple(p)] == list(a) else -9.0 for p, a, _ in items]


def test_rescoring_scores_each_candidate_in_the_views_frame():
    t = make_task()
    good, bad = g([[1, 2, 3]]), g([[2], [2]])
    be = FrameScoringBackend(t, good, bad, m=4)
    assert len({tuple(a) for a in be.want.values()}) == 4  # the frames differ
    cfg = InferConfig(views=8, rescore=4, scorer="poe", rescore_vote_weight=1.0)
    s = selection.predict_tasks([t], be, CharTokenizer(), cfg, "digits")[t.id][0]
    assert s.candidates[0].grid == good.tolist()
    assert s.candidates[0].rescore == pytest.approx(-4.0)  # likely under every view


def test_architects_counts_a_grid_once_per_view_that_found_it():
    """Two token paths (or a base vote) to one grid in one view counted twice."""
    twice_in_one_view = Candidate([[1]], 2, [0, 0], [-0.1, -0.1], nlls=[1.0, 1.0])
    two_views = Candidate([[2]], 2, [0, 1], [-0.1, -0.1], nlls=[1.0, 1.0])
    for c in (twice_in_one_view, two_views):
        c.rescore = -8.0
    one = selection.candidate_score(twice_in_one_view, "architects", 4)
    two = selection.candidate_score(two_views, "architects", 4)
    assert two - one == pytest.approx(selection.ARCHITECTS_OFFSET - 1.0)


def test_a_dfs_walk_stopped_early_is_reported_with_its_reason():
    """DFSResult.stopped never reached the selection: a walk cut at its deadline gave an
    empty answer that looked like nothing above min_prob."""
    from arc_ttft.infer.dfs import DFSResult

    t = make_task()

    class Stopped(TruthBackend):
        def generate(self, requests):
            self.dfs_results = [DFSResult(stopped="deadline") for _ in requests]
            return [[] for _ in requests]

    cfg = InferConfig(views=2, sampling="dfs", rescore=0)
    s = selection.predict_tasks([t], Stopped([t]), CharTokenizer(), cfg, "digits")[t.id][0]
    assert s.dfs_stopped == "deadline" and s.to_dict()["dfs_stopped"] == "deadline"
    assert "deadline" in s.empty_reason(2)
    assert s.sourced_attempts(t, 0, earlier=[[[7]]])[1] == ("earlier", "fallback")


class HangingBackend:
    name = "hang"

    def generate(self, requests):
        time.sleep(60)

    def score_many(self, items):
        time.sleep(60)

    def close(self):
        pass


def test_hanging_backend_is_timed_out_quickly():
    t = make_task()
    t0 = time.monotonic()
    with pytest.raises(B.DeadlineExceeded):  # the one timeout helper the pipeline uses
        B.with_deadline(
            lambda: selection.predict_tasks(
                [t], HangingBackend(), CharTokenizer(), InferConfig(), "digits"
            ),
            0.3,
        )
    assert time.monotonic() - t0 < 3


class StrictScoringBackend(ScoringBackend):
    """Fails the whole call when one item is longer than the engine's context, as vLLM does."""

    def __init__(self, task, good, bad, max_len):
        super().__init__(task, good, bad)
        self.max_len = max_len
        self.items = []

    def score_many(self, items):
        for p, a, _ in items:
            if len(p) + len(a) > self.max_len:
                raise ValueError(f"prompt of {len(p) + len(a)} tokens > max_model_len")
        self.items += list(items)
        return super().score_many(items)


def _rescore_lengths(t, views, grids, max_seq_len):
    """Per view: prompt + answer length of each grid, as rescore builds them."""
    tok = CharTokenizer()
    end = encoding.end_marker(tok)
    render = encoding.get_format("digits").render
    out = []
    for v in views:
        prompt, _ = selection.view_prompt(t, v, 0, "digits", tok, max_seq_len)
        n = len(prompt.text)
        out.append([n + len(render(augment.apply_grid(v, gr)) + end) for gr in grids])
    return out


def test_rescore_leaves_out_views_longer_than_max_seq_len():
    """A candidate too long for some views: those views are left out for the test input
    (every candidate keeps a sum over the same views), counted and logged."""
    from arc_ttft.events import EventLog

    t = make_task()
    good, wide = g([[1, 2, 3]]), g([[5] * 12, [6] * 12])  # 2x12: 26 chars, transposed 36
    views = selection.rescore_views(t, 8, 0)
    probe = _rescore_lengths(t, views, [good, wide], None)
    limit = sorted({max(x) for x in probe})[0]  # the shortest view's longest item fits
    lengths = _rescore_lengths(t, views, [good, wide], limit)
    fits = [max(x) <= limit for x in lengths]
    assert any(fits) and not all(fits)
    be = StrictScoringBackend(t, good, wide, limit)
    cands = [_cand(wide.tolist(), 5, -1.0), _cand(good.tolist(), 3, -1.0)]
    sels = {t.id: [Selection(t.id, 0, cands)]}
    events = EventLog()
    n = selection.rescore([t], sels, be, CharTokenizer(), "digits", {}, 8, max_seq_len=limit,
                       events=events)  # fmt: skip
    s = sels[t.id][0]
    assert n == 2 * sum(fits) == len(be.items)
    assert s.rescored and len(s.rescore_views) == sum(fits)
    assert s.rescore_views == [augment.describe(v) for v, ok in zip(views, fits) if ok]
    assert s.rescore_dropped == 2 * (len(views) - sum(fits))
    [e] = [e for e in events.events if e.get("decision") == "rescore-skipped-too-long"]
    assert e["task"] == t.id and e["items"] == s.rescore_dropped and e["longest"] > limit
    assert s.to_dict()["rescore_dropped"] == s.rescore_dropped


def test_rescore_with_no_view_left_keeps_the_vote():
    t = make_task()
    good, huge = g([[1, 2, 3]]), g([[4] * 20] * 20)
    views = selection.rescore_views(t, 3, 0)
    limit = max(max(x) for x in _rescore_lengths(t, views, [good], None)) + 5
    be = StrictScoringBackend(t, good, huge, limit)
    # the huge grid won the vote; every view is too long for it
    sels = {t.id: [Selection(t.id, 0, selection.vote([_cand(huge.tolist(), 4, -1.0),
                                                   _cand(good.tolist(), 2, -1.0)]))]}  # fmt: skip
    n = selection.rescore([t], sels, be, CharTokenizer(), "digits", {}, 3, max_seq_len=limit)
    s = sels[t.id][0]
    assert n == 0 and be.items == []
    assert not s.rescored and s.rescore_dropped == 6
    assert s.attempts(t, 0) == (huge.tolist(), good.tolist())  # vote order stands
    assert s.candidates[0].rank_score == 4.0  # the vote's score


def test_view_transforms_limit_generation_and_rescoring_views():
    t = make_task()
    be = ScoringBackend(t, g([[1, 1, 1]]), g([[2], [2]]))
    seen: list[int] = []
    real = be.generate
    be.generate = lambda reqs: seen.extend(r.key.view.transform for r in reqs) or real(reqs)
    cfg = InferConfig(views=8, rescore=3, view_transforms="central")
    s = selection.predict_tasks([t], be, CharTokenizer(), cfg, "digits")[t.id][0]
    assert len(seen) == 8 and set(seen) == {0, 2}  # identity and rot180 only
    assert s.rescored and {d.split()[0] for d in s.rescore_views} <= {"id", "rot180"}
    # the default still spreads over the whole group
    seen.clear()
    selection.predict_tasks([t], be, CharTokenizer(), InferConfig(views=8, rescore=0), "digits")
    assert len(set(seen)) == 8


def test_base_votes_pool_answers_with_and_without_the_adapter():
    t = make_task()
    be = TruthBackend([t])
    asked: list[str | None] = []
    real = be.generate
    be.generate = lambda reqs: asked.extend(r.adapter for r in reqs) or real(reqs)
    cfg = InferConfig(views=4, rescore=0, base_votes=True)
    s = selection.predict_tasks([t], be, CharTokenizer(), cfg, "digits", {t.id: "/ad"})[t.id][0]
    assert sorted(asked, key=str) == ["/ad"] * 4 + [None] * 4
    assert s.samples == 8 and s.candidates[0].count == 8  # one vote pool
    # a task without an adapter is asked once: the base model is all there is
    asked.clear()
    selection.predict_tasks([t], be, CharTokenizer(), cfg, "digits", {t.id: None})
    assert asked == [None] * 4


def test_auto_views_ask_an_adapter_in_its_training_views_and_the_base_in_all_eight():
    t, u = make_task("t"), make_task("u")
    be = TruthBackend([t, u])
    seen: dict[str, set[int]] = {"t": set(), "u": set()}
    real = be.generate
    be.generate = lambda reqs: (
        [seen[r.key.task_id].add(r.key.view.transform) for r in reqs] and real(reqs)
    )
    cfg = InferConfig(views=8, rescore=0)
    assert cfg.view_transforms == "auto"
    selection.predict_tasks(
        [t, u],
        be,
        CharTokenizer(),
        cfg,
        "digits",
        {"t": "/ad", "u": None},
        adapter_transforms="none",
    )
    assert seen == {"t": {0}, "u": set(range(8))}
    assert selection.view_transforms("central", "/ad", "none") == "central"  # explicit wins


def test_auto_views_ask_an_own_colour_adapter_in_the_task_colours(tmp_path):
    """The view family saved beside an adapter (ttt_colours=own or fit) wins over the
    run's --ttt-transforms: its views keep the task's colours and vary the geometry."""
    from arc_ttft import augment

    ad = tmp_path / "t"
    ad.mkdir()
    (ad / augment.VIEWS_FILE).write_text('{"views": "dihedral/own-colours"}')
    t = make_task("t")
    be = TruthBackend([t])
    asked: list[augment.View] = []
    real = be.generate
    be.generate = lambda reqs: asked.extend(r.key.view for r in reqs) or real(reqs)
    cfg = InferConfig(views=8, rescore=0)
    selection.predict_tasks(
        [t], be, CharTokenizer(), cfg, "digits", {"t": str(ad)}, adapter_transforms="none"
    )
    assert {v.transform for v in asked} == set(range(8))
    assert {v.colours for v in asked} == {augment.IDENTITY_COLOURS}


# -- scorers: hand-computed numbers -----------------------------------------------------

GRID_A = [[1, 1], [1, 1]]  # found by views 0, 1, 2
GRID_B = [[2, 2, 2], [2, 2, 2], [2, 2, 2]]  # found by view 3 only


class TwoAnswerBackend:
    """Views 0-2 answer A (NLL 1.0, 2.0, 0.5), view 3 answers B (NLL 0.2). Scoring gives
    A -2.0 and B -1.0 under every augmentation (told apart by the answer's length)."""

    name = "fake"

    def __init__(self, fmt="digits"):
        self.fmt = fmt
        self.end = encoding.end_marker(CharTokenizer())
        self.len_a = len(encoding.get_format(fmt).render(np.array(GRID_A)) + self.end)

    def generate(self, requests):
        out = []
        for r in requests:
            v = r.key.view_index
            grid, nll = (GRID_A, (1.0, 2.0, 0.5)[v]) if v < 3 else (GRID_B, 0.2)
            text = encoding.get_format(self.fmt).render(augment.apply_grid(r.key.view, g(grid)))
            out.append([Completion([1, 2], text + self.end, -nll, 2)])
        return out

    def score_many(self, items):
        return [-2.0 if len(a) == self.len_a else -1.0 for _, a, _ in items]


def _two_answer_task():
    t = make_task()
    return Task(t.id, t.train, [Example(g([[1, 2], [3, 4]]), g(GRID_A))])


# A: 3 views, NLLs 1.0 + 2.0 + 0.5, augmented sum -8.0 over 4; B: 1 view, NLL 0.2, sum -4.0
@pytest.mark.parametrize(
    "scorer, best, score_a, score_b",
    [
        ("vote", GRID_A, 3.0, 1.0),  # counts
        ("poe", GRID_B, -8.0 + np.log(3), -4.0),  # sum LL + log(count)
        ("nvarc", GRID_A, 3 - 8.0 / 4, 1 - 4.0 / 4),  # views - mean NLL
        # sum over finders of (3 - NLL) + sum over augmentations of (3 - NLL_j)
        ("architects", GRID_B, (2.0 + 1.0 + 2.5) + (12 - 8.0), 2.8 + (12 - 4.0)),
    ],
)
def test_scorers_rank_with_hand_computed_scores(scorer, best, score_a, score_b):
    t = _two_answer_task()
    cfg = InferConfig(views=4, rescore=4, scorer=scorer, sampling="greedy")
    s = selection.predict_tasks([t], TwoAnswerBackend(), CharTokenizer(), cfg, "digits")[t.id][0]
    assert s.scorer == scorer and s.rescored == (scorer != "vote")
    assert s.candidates[0].grid == best
    got = {json.dumps(c.grid): c.rank_score for c in s.candidates}
    assert got[json.dumps(GRID_A)] == pytest.approx(score_a)
    assert got[json.dumps(GRID_B)] == pytest.approx(score_b)


def test_auto_scorer_and_sampling_follow_the_anchors(monkeypatch):
    """DFS where the anchors ran it (vLLM on a GPU); not with the transformers backend."""
    from arc_ttft import auto

    cfg = InferConfig()
    monkeypatch.setattr(selection, "_local_machine", lambda: auto.Machine("cuda", ("L4",), True))
    assert selection.resolve_sampling(cfg, "vllm") == "dfs"
    assert selection.resolve_sampling(cfg) == "dfs"  # the backend auto picks there: vLLM
    assert selection.resolve_sampling(cfg, "hf") == "greedy"
    assert selection.resolve_scorer(cfg, "dfs") == "architects"
    assert selection.resolve_rescore(cfg) == 8
    monkeypatch.setattr(selection, "_local_machine", lambda: auto.Machine("cpu"))
    assert selection.resolve_sampling(cfg) == "greedy"
    assert selection.resolve_sampling(InferConfig(samples=4, temperature=1.0)) == "sample"
    assert selection.resolve_scorer(cfg, "greedy") == "poe"
    assert selection.resolve_rescore(cfg) == 4
    assert selection.resolve_scorer(InferConfig(rescore=0), "dfs") == "vote"


def test_dfs_requests_carry_the_search_settings():
    t = make_task()
    cfg = InferConfig(views=2, sampling="dfs", min_prob=0.2, dfs_max_candidates=5,
                      dfs_max_nodes=99)  # fmt: skip
    keyed, _ = selection.build_requests(
        [t], {t.id: selection.task_views(t, 2)}, "digits", CharTokenizer(), {}, cfg,
        sampling="dfs", deadline=123.0,
    )  # fmt: skip
    r = keyed[0][1]
    assert (r.min_prob, r.n, r.max_nodes, r.deadline, r.temperature) == (0.2, 5, 99, 123.0, 0.0)
    keyed, _ = selection.build_requests(
        [t],
        {t.id: selection.task_views(t, 2)},
        "digits",
        CharTokenizer(),
        {},
        cfg,
        sampling="greedy",
    )
    assert keyed[0][1].min_prob is None and keyed[0][1].n == 1
