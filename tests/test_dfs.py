"""Depth-first search: the walk itself, and the transformers backend against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from arc_ttft import models
from arc_ttft.config import ModelConfig
from arc_ttft.infer import hf
from arc_ttft.infer.base import Request
from arc_ttft.infer.dfs import DFSWalk, top_k_needed
from arc_ttft.infer.hf import HFBackend

ALPHABET = "01\n"  # the tiny tokenizer: "0", "1", "\n", "\n\n", "\n\n\n", plus eos
MAX_NEW = 5  # answers of at most 4 tokens and the stop token


# -- the walk alone, on a hand-made tree ---------------------------------------------------


def _drive(walk: DFSWalk, table: dict[tuple[int, ...], dict[int, float]]) -> list:
    walk.push(table[()])
    while walk.next() is not None:
        walk.push(table.get(tuple(walk.prefix), {}))
    return walk.result().found


def test_walk_keeps_exactly_the_answers_above_the_threshold():
    # tokens 1, 2 are grid tokens, 9 is the stop token
    ln = math.log
    table = {
        (): {1: ln(0.6), 2: ln(0.4)},
        (1,): {9: ln(0.5), 1: ln(0.5)},  # "1" + stop: 0.30
        (1, 1): {9: ln(0.9), 2: ln(0.1)},  # "11" + stop: 0.27
        (2,): {9: ln(0.2), 1: ln(0.8)},  # "2" + stop: 0.08 (dropped at 0.1)
        (2, 1): {9: ln(1.0)},  # "21" + stop: 0.32
    }
    found = _drive(DFSWalk(0.1, 5, [1, 2], [9]), table)
    assert [ids for ids, _ in found] == [[2, 1, 9], [1, 9], [1, 1, 9]]
    assert [round(math.exp(lp), 6) for _, lp in found] == [0.32, 0.3, 0.27]
    # a lower threshold lets the 0.08 answer in; a higher one leaves only 0.32 and 0.30
    assert len(_drive(DFSWalk(0.05, 5, [1, 2], [9]), table)) == 4
    assert len(_drive(DFSWalk(0.29, 5, [1, 2], [9]), table)) == 2


def test_walk_caps_candidates_nodes_and_depth():
    ln = math.log
    flat = {(): {1: ln(0.5), 9: ln(0.5)}}
    for depth in range(1, 10):
        flat[(1,) * depth] = {1: ln(0.5), 9: ln(0.5)}
    # with P tiny every "1"*k + stop qualifies: depth, node and candidate caps bound it
    walk = DFSWalk(1e-6, 4, [1], [9], max_candidates=100)
    assert [len(ids) for ids, _ in _drive(walk, flat)] == [1, 2, 3, 4]
    assert walk.result().stopped is None  # every answer >= P, within the depth
    walk = DFSWalk(1e-6, 50, [1], [9], max_candidates=2)
    # the walk dives down the 1s first, yet keeps the two shortest (most likely) answers
    assert _drive(walk, flat) == [([9], ln(0.5)), ([1, 9], ln(0.25))]
    assert walk.result().stopped == "candidates"
    walk = DFSWalk(1e-6, 50, [1], [9], max_candidates=100, max_nodes=3)
    assert len(_drive(walk, flat)) == 4 and walk.result().stopped == "nodes"
    walk = DFSWalk(1e-6, 50, [1], [9], deadline=0.0)
    assert len(_drive(walk, flat)) == 1 and walk.result().stopped == "deadline"


def test_candidate_cap_keeps_the_most_likely_not_the_first_found():
    """The issue's case: P 0.05, cap 2. The most likely branch (0.6) holds two answers at
    0.24, found first; the best answer (0.40) is under the other branch. A walk that
    stopped at the cap kept the two 0.24s; pruning by the worst kept finds the 0.40."""
    ln = math.log
    table = {
        (): {1: ln(0.6), 2: ln(0.4)},
        (1,): {1: ln(0.4), 2: ln(0.4), 9: ln(0.2)},  # 0.24, 0.24 and 0.12
        (1, 1): {9: 0.0},
        (1, 2): {9: 0.0},
        (2,): {9: 0.0},  # 0.40
    }
    walk = DFSWalk(0.05, 5, [1, 2], [9], max_candidates=2)
    found = _drive(walk, table)
    assert [ids for ids, _ in found] == [[2, 9], [1, 1, 9]]
    assert [round(math.exp(lp), 6) for _, lp in found] == [0.4, 0.24]
    assert walk.result().stopped == "candidates"
    # without the cap: all four, best first, and no stop reason
    walk = DFSWalk(0.05, 5, [1, 2], [9], max_candidates=10)
    assert [round(math.exp(lp), 6) for _, lp in _drive(walk, table)] == [0.4, 0.24, 0.24, 0.12]
    assert walk.result().stopped is None


def test_full_cap_prunes_branches_that_cannot_beat_the_answers_kept():
    """Once the cap holds answers more likely than a branch's prefix, the branch is not
    expanded: the cap bounds the work, not only the output."""
    ln = math.log
    table = {
        (): {9: ln(0.5), 1: ln(0.3), 2: ln(0.2)},
        (1,): {9: ln(0.9), 1: ln(0.1)},  # 0.27
        (2,): {9: ln(0.9), 1: ln(0.1)},  # 0.18: its prefix (0.2) is below 0.27
    }
    walk = DFSWalk(0.01, 5, [1, 2], [9], max_candidates=2)
    assert [round(math.exp(lp), 6) for _, lp in _drive(walk, table)] == [0.5, 0.27]
    assert walk.result().nodes == 1  # (1,) only; (1, 1) at 0.03 and (2,) at 0.2 pruned


def test_top_k_needed_covers_every_token_that_can_pass():
    assert top_k_needed(0.1) == 11
    assert top_k_needed(0.17) == 6
    assert top_k_needed(0.07) == 15


# -- the transformers backend against brute-force enumeration ------------------------------


def _peaked_backend(seed: int) -> HFBackend:
    """The tiny model with a head that puts most of the mass on the grid tokens and eos,
    spread differently in every context: a tree with many answers above 0.05."""
    torch.manual_seed(seed)
    model = models.build_random_model(ModelConfig(model="tiny"), torch.float32, seed)
    tok = models._tiny_tokenizer()
    peak_head(model, HFBackend(model, tok)._grid_ids(ALPHABET) + [tok.eos_token_id], tok)
    return HFBackend(model, tok, batch_size=64)


def peak_head(model, keep: list[int], tok) -> None:
    """Replace the output head with one that puts most of the mass on ``keep`` (the grid
    tokens and eos), spread differently in every context."""
    head = model.get_output_embeddings()
    new = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        new.weight.normal_(0, 0.02)
        new.bias.fill_(-30.0)
        new.weight[keep] = torch.randn(len(keep), head.in_features) * 0.1
        new.bias[keep] = 0.0
        new.bias[tok.eos_token_id] = 1.0  # short answers likely too: a tree of many depths
    model.lm_head = new
    model.config.tie_word_embeddings = False
    model.eval()


def _brute_force(be: HFBackend, prompt: list[int], min_prob: float) -> dict[tuple, float]:
    """Every answer (grid tokens then eos, at most MAX_NEW tokens) of probability >=
    min_prob, scored by full forward passes (no cache)."""
    grid = be._grid_ids(ALPHABET)
    eos = be.tokenizer.eos_token_id
    answers = [[*body, eos] for n in range(MAX_NEW) for body in itertools.product(grid, repeat=n)]
    scores = be.score_many([(prompt, a, None) for a in answers])
    return {tuple(a): s for a, s in zip(answers, scores) if s >= math.log(min_prob)}


def _dfs(be: HFBackend, prompt: list[int], min_prob: float) -> dict[tuple, float]:
    req = Request(
        prompt,
        n=10_000,
        max_new_tokens=MAX_NEW,
        stop_token_ids=[be.tokenizer.eos_token_id],
        grid_alphabet=ALPHABET,
        min_prob=min_prob,
        max_nodes=100_000,
    )
    (comps,) = be.generate([req])
    return {tuple(c.token_ids): c.logprob for c in comps}


PROMPT = "0 1\n1 0\n\n"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dfs_returns_exactly_the_answers_above_p_with_their_logprobs(seed):
    be = _peaked_backend(seed)
    prompt = be.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    sizes, lengths = [], set()
    for p in (0.01, 0.02, 0.05, 0.1):
        want = _brute_force(be, prompt, p)
        got = _dfs(be, prompt, p)
        assert set(got) == set(want), (seed, p)
        for k, lp in got.items():
            assert lp == pytest.approx(want[k], abs=1e-4)
        sizes.append(len(want))
        lengths |= {len(k) for k in want}
    # the oracle is not vacuous: many answers at the low threshold, of several lengths
    assert sizes[0] >= 5 and sizes[0] > sizes[-1] and len(lengths) >= 3


def test_dfs_is_wrong_without_the_cache_crop(monkeypatch):
    """Negative control: a walk that backtracks without cropping the KV cache attends to
    the abandoned branch's tokens, and its answers or log-probs stop matching."""
    be = _peaked_backend(0)
    prompt = be.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    want = _brute_force(be, prompt, 0.01)
    monkeypatch.setattr(hf, "crop_cache", lambda cache, length: None)
    got = _dfs(be, prompt, 0.01)
    same = set(got) == set(want) and all(abs(lp - want[k]) < 1e-4 for k, lp in got.items())
    assert not same


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dfs_candidates_are_the_brute_force_top_k(seed):
    """With a cap of k the walk returns exactly the k most likely answers >= P, best
    first (checked against every answer scored by full forwards), and says "candidates"
    when the cap left answers >= P out."""
    be = _peaked_backend(seed)
    prompt = be.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    eos = be.tokenizer.eos_token_id
    for p in (0.01, 0.02):
        want = sorted(_brute_force(be, prompt, p).items(), key=lambda kv: -kv[1])
        nodes = {}
        for cap in (1, 2, 3, 5, 100):
            req = Request(
                prompt, n=cap, max_new_tokens=MAX_NEW, stop_token_ids=[eos],
                grid_alphabet=ALPHABET, min_prob=p, max_nodes=100_000,
            )  # fmt: skip
            (comps,) = be.generate([req])
            top = want[:cap]
            assert [c.logprob for c in comps] == pytest.approx([v for _, v in top], abs=1e-4)
            if len(want) <= cap or want[cap - 1][1] - want[cap][1] > 1e-3:  # no tie at k
                assert [tuple(c.token_ids) for c in comps] == [k for k, _ in top]
            assert all(c.text == be.tokenizer.decode(c.token_ids[:-1]) for c in comps)
            res = be.dfs_results[0]
            if len(want) > cap:
                assert res.stopped == "candidates", (seed, p, cap)
            elif len(want) < cap:
                assert res.stopped is None, (seed, p, cap)
            nodes[cap] = res.nodes
        assert len(want) >= 5  # the cap cut at every k but the last
        assert nodes[1] < nodes[100]  # the cap prunes the tree


def test_stop_reasons_reach_the_caller():
    """Every early stop is in the backend's ``dfs_results`` (one per request, None for
    non-DFS ones) and counted in ``stats["dfs_stopped"]``."""
    be = _peaked_backend(0)
    prompt = be.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    eos = be.tokenizer.eos_token_id

    def req(**kw):
        base = dict(max_new_tokens=MAX_NEW, stop_token_ids=[eos], grid_alphabet=ALPHABET)
        return Request(prompt, **{**base, **kw})

    reqs = [
        req(n=1000, min_prob=0.01, max_nodes=2),
        req(n=1000, min_prob=0.01, deadline=0.0),  # past: not even the prompt's forward
        req(n=1, min_prob=0.01),
        req(n=1000, min_prob=0.01),
        req(n=1),  # greedy: no walk
    ]
    out = be.generate(reqs)
    stopped = [r and r.stopped for r in be.dfs_results]
    assert stopped == ["nodes", "deadline", "candidates", None, None]
    assert be.dfs_results[-1] is None and be.dfs_results[-2] is not None
    assert be.dfs_results[0].nodes == 2 and out[0] and out[1] == []
    assert be.stats["dfs_stopped"] == {"nodes": 1, "deadline": 1, "candidates": 1}
    assert be.stats["dfs_nodes"] == sum(r.nodes for r in be.dfs_results if r)
