"""DFS on the transformers backend, for every registry family (scaled-down configs).

Gemma 3 and Phi-3 attend through a sliding window; transformers gives them a cache whose
sliding layers keep only the last window and cannot be cropped past it, so DFS (which
crops the cache when it backtracks) crashed on any prompt longer than the window. Here the
window is 16 tokens and the prompt about 50: every DFS step is past it. The answers and
log-probs must equal the model's own under its window, from full forwards without a cache.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_dfs import peak_head  # the head that makes a tree of many likely answers
from transformers import AutoModelForCausalLM, DynamicCache

from arc_ttft import models
from arc_ttft.infer.base import Request
from arc_ttft.infer.hf import HFBackend

ALPHABET = "01\n"
MAX_NEW = 4  # answers of at most 3 grid tokens and the stop token
WINDOW = 16
PROMPT = "0 1\n1 0\n\n" * 6  # about 50 tokens: three windows
SLIDING = {"gemma3_text", "phi3"}  # the registry families that attend through a window


def _families() -> list[str]:
    """One registry entry per model_type."""
    first: dict[str, str] = {}
    for name in sorted(models.REGISTRY):
        first.setdefault(models.REGISTRY[name].config["model_type"], name)
    return sorted(first.values())


def _backend(name: str) -> HFBackend:
    """A scaled-down copy of ``name`` on the tiny tokenizer, with a window of WINDOW where
    the family has one and a head that puts its mass on the grid tokens and eos."""
    tok = models._tiny_tokenizer()
    small = models.scaled_down(models.REGISTRY[name].config)
    # the tiny tokenizer's ids and specials: a 512-row vocabulary is enough
    small.update(
        vocab_size=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if small.get("sliding_window"):
        small["sliding_window"] = WINDOW
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(models.build_config(small), attn_implementation="sdpa")
    be = HFBackend(model, tok)
    peak_head(model, be._grid_ids(ALPHABET) + [tok.eos_token_id], tok)
    return be


def _reference(be: HFBackend, prompt: list[int], min_prob: float) -> dict[tuple, float]:
    """Every answer of probability >= min_prob, scored by full forwards with no cache:
    one batch per answer length, so no padding either."""
    grid = be._grid_ids(ALPHABET)
    eos = be.tokenizer.eos_token_id
    out = {}
    with torch.inference_mode():
        for n in range(MAX_NEW):
            answers = [[*body, eos] for body in itertools.product(grid, repeat=n)]
            ids = torch.tensor([prompt + a for a in answers])
            logits = be.base(input_ids=ids, use_cache=False).logits
            logp = logits[:, len(prompt) - 1 : -1].float().log_softmax(-1)
            lp = logp.gather(-1, ids[:, len(prompt) :].unsqueeze(-1)).sum((1, 2))
            out.update({tuple(a): float(v) for a, v in zip(answers, lp)})
    return {k: v for k, v in out.items() if v >= math.log(min_prob)}


@pytest.mark.parametrize("name", _families())
def test_dfs_matches_full_forwards_on_every_family(name):
    be = _backend(name)
    family = models.REGISTRY[name].config["model_type"]
    if family in SLIDING:
        # the cache transformers would build has window layers: the case that crashed
        assert any(DynamicCache(config=be.base.config).is_sliding)
    prompt = be.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert len(prompt) > 2 * WINDOW
    p = 0.003
    want = _reference(be, prompt, p)
    if family in SLIDING:
        # the window changes the answers' log-probs: a DFS that lost it would not match
        be.base.config.sliding_window = 10_000
        unwindowed = _reference(be, prompt, 1e-12)
        be.base.config.sliding_window = WINDOW
        assert max(abs(unwindowed[k] - v) for k, v in want.items()) > 1e-2
    req = Request(
        prompt, n=10_000, max_new_tokens=MAX_NEW, stop_token_ids=[be.tokenizer.eos_token_id],
        grid_alphabet=ALPHABET, min_prob=p, max_nodes=100_000,
    )  # fmt: skip
    (comps,) = be.generate([req])
    got = {tuple(c.token_ids): c.logprob for c in comps}
    assert set(got) == set(want), name
    for k, lp in got.items():
        assert lp == pytest.approx(want[k], abs=1e-4), (name, k)
    # not vacuous: the walk branched and backtracked over answers of several lengths
    assert len(want) >= 10 and len({len(k) for k in want}) == MAX_NEW, (name, len(want))
    assert be.dfs_results[0].stopped is None and be.dfs_results[0].nodes > len(want) // 2
