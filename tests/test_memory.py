"""The transformers backend keeps only the logits it needs (tiny model, vocabulary 1000).

Two things are checked against the old computation, which built every position's
full-vocabulary logits: the outputs are the same (tokens and log-probabilities), and the
largest vocabulary-sized tensor no longer grows with the sequence length. Tensors are
counted with a TorchDispatchMode that sees every aten op's outputs: deterministic and
exact on CPU, where allocator statistics are not.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from arc_ttft import models
from arc_ttft.config import ModelConfig
from arc_ttft.infer import Request, stop_ids
from arc_ttft.infer.hf import HFBackend

VOCAB = 1000  # no other dimension of the tiny architecture is 1000


class LargestVocabTensor(TorchDispatchMode):
    """Largest element count among op outputs whose last dimension is the vocabulary."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.fixture(scope="module")
def backend():
    config = models.build_config({**models.TINY_CONFIG, "vocab_size": VOCAB})
    model = models.build_random_model(ModelConfig(model="tiny"), torch.float32, 0, config)
    model.eval()
    tok = models._tiny_tokenizer()  # ids stay below 512: a padded vocabulary, like Qwen2's
    be = HFBackend(model, tok, batch_size=4)
    yield be
    be.close()


def _prompt(length: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 500, (length,), generator=g).tolist()


def old_scores(be: HFBackend, items) -> list[float]:
    """The computation before the change: full logits, log_softmax over (B, T, V)."""
    seqs = [list(p) + list(a) for p, a, _ in items]
    ids, mask = be._left_pad(seqs)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits = be.base(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    logp = logits[:, :-1].log_softmax(-1)
    tok_lp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    w = ids.shape[1]
    return [
        float(tok_lp[i, w - 1 - len(a) :].sum()) if a else 0.0 for i, (_, a, _) in enumerate(items)
    ]


def old_generate(be: HFBackend, prompts, n: int, temperature: float, max_new: int, stops):
    """The computation before the change: ``output_logits`` stacked over all steps."""
    ids, mask = be._left_pad(prompts)
    kw = dict(top_k=0, top_p=1.0, temperature=temperature) if temperature > 0 else {}
    torch.manual_seed(be.seed)
    with torch.inference_mode():
        out = be.base.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new,
            do_sample=temperature > 0, num_return_sequences=n, eos_token_id=stops,
            pad_token_id=be.pad_id, return_dict_in_generate=True, output_logits=True, **kw,
        )  # fmt: skip
    new = out.sequences[:, ids.shape[1] :]
    logp = torch.stack(out.logits, dim=1).float().log_softmax(-1)
    return new, logp.gather(-1, new.unsqueeze(-1)).squeeze(-1)


def test_scores_equal_the_full_logits_computation(backend):
    items = [
        (_prompt(40, 1), _prompt(7, 2), None),
        (_prompt(90, 3), _prompt(15, 4), None),
        (_prompt(10, 5), _prompt(1, 6), None),
        (_prompt(60, 7), [], None),
    ]
    new = backend.score_many(items)
    assert new == pytest.approx(old_scores(backend, items), abs=1e-4)
    # one at a time (no padding) agrees too
    assert [backend.score(p, a, None) for p, a, _ in items] == pytest.approx(new, abs=1e-4)
    # no prompt: the first answer token has nothing to be predicted from
    a = _prompt(9, 10)
    both = backend.score_many([([], a, None), (_prompt(30, 11), a, None)])
    assert both[0] == pytest.approx(backend.score(a[:1], a[1:], None), abs=1e-4)


@pytest.mark.parametrize("temperature, n", [(0.0, 1), (1.0, 3)])
def test_generation_equals_the_output_logits_computation(backend, temperature, n):
    stops = stop_ids(backend.tokenizer)
    prompts = [_prompt(30, 8), _prompt(55, 9)]
    reqs = [Request(p, None, n, temperature, 12, stops) for p in prompts]
    # generate() sorts each group by prompt length: these already are
    comps = backend.generate(reqs)
    new, lp = old_generate(backend, prompts, n, temperature, 12, stops)
    for i, row in enumerate(comps):
        for j, c in enumerate(row):
            r = i * n + j
            assert c.token_ids == new[r, : len(c.token_ids)].tolist()
            assert c.logprob == pytest.approx(float(lp[r, : c.n_tokens].sum()), abs=1e-4)


def _largest(fn) -> int:
    with LargestVocabTensor(VOCAB) as mode:
        fn()
    return mode.largest


@pytest.mark.parametrize("prompt_len", [64, 400])
def test_scoring_keeps_only_answer_logits(backend, prompt_len):
    k = 6
    items = [(_prompt(prompt_len + i, i), _prompt(k, 50 + i), None) for i in range(3)]
    largest = _largest(lambda: backend.score_many(items))
    # (batch, longest answer + 1, V): nothing of the prompt length
    assert largest <= 3 * (k + 1) * VOCAB
    # the old computation, for scale: (batch, whole sequence, V)
    assert _largest(lambda: old_scores(backend, items)) >= 3 * prompt_len * VOCAB


@pytest.mark.parametrize("max_new", [4, 24])
def test_generation_keeps_one_step_of_logits(backend, max_new):
    n = 2
    prompts = [_prompt(80, 11), _prompt(80, 12)]
    # no stop tokens: every row runs all max_new steps
    reqs = [Request(p, None, n, 1.0, max_new, []) for p in prompts]
    largest = _largest(lambda: backend.generate(reqs))
    assert largest <= len(prompts) * n * VOCAB  # one step's (rows, V)
    old = _largest(lambda: old_generate(backend, prompts, n, 1.0, max_new, []))
    assert old >= len(prompts) * n * max_new * VOCAB  # every step's, stacked


def test_scoring_batches_respect_the_logits_budget(backend):
    """Long answers split a batch so that kept logits stay under max_logits_mb."""
    items = [(_prompt(20, i), _prompt(100, 90 + i), None) for i in range(4)]
    ref = backend.score_many(items)
    small = HFBackend(backend.base, backend.tokenizer, batch_size=4, max_logits_mb=0.9)
    # 101 positions x 1000 x 4 bytes = 0.39 MiB per item: two per batch
    assert small._score_batches(list(range(4)), items) == [[0, 1], [2, 3]]
    largest = _largest(lambda: small.score_many(items))
    assert largest <= 2 * 101 * VOCAB
    assert small.score_many(items) == pytest.approx(ref, abs=1e-4)


def test_answers_of_one_prompt_share_its_forward(backend, monkeypatch):
    """Re-scoring sends every candidate under the same view prompt: those items run the
    prompt once (its KV cache repeated per answer batch) and score exactly as alone."""
    p1, p2 = _prompt(60, 21), _prompt(45, 22)
    answers = [_prompt(k, 30 + k) for k in (1, 5, 17, 9, 2)]
    items = [(p1, a, None) for a in answers] + [(p2, a, None) for a in answers[:3]]
    items.append((_prompt(50, 23), answers[1], None))  # a prompt of its own
    alone = HFBackend(backend.base, backend.tokenizer, batch_size=4, share_prefix=False)
    want = alone.score_many(items)
    calls = []
    shared = HFBackend(backend.base, backend.tokenizer, batch_size=2, max_logits_mb=0.05)
    real = shared._score_shared
    monkeypatch.setattr(shared, "_score_shared", lambda *a: calls.append(a) or real(*a))
    assert shared.score_many(items) == pytest.approx(want, abs=1e-4)
    assert [len(c[1]) for c in calls] == [5, 3]  # the two shared prompts, batched
    # the logits budget still holds: 0.05 MiB is 13 positions x 1000 x 4 bytes, so the
    # 16-position answer goes alone
    largest = _largest(lambda: shared.score_many(items))
    assert largest <= 2 * 16 * VOCAB
