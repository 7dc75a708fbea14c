"""The Backend contract shared by the transformers (hf) and vLLM backends.

A backend turns token-id prompts into completions and scores answers. It is a small
Protocol (duck typing), not a base class: ``infer.hf.HFBackend`` and
``infer.vllm.VLLMBackend`` implement it, and tests use fakes that do too.

Conventions both backends follow:
- ``Completion.token_ids`` are the generated ids, the stop token included when one was
  generated; ``logprob`` is the sum of the raw model log-probabilities (before
  temperature) of exactly those ids; ``text`` is the decoded text (special tokens kept)
  cut before the first stop token.
- ``adapter`` is a LoRA adapter folder (adapter_config.json + adapter_model.safetensors)
  or None for the base model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

END_MARGIN_TOKENS = 8  # room for the end marker's tokens and a stray newline
MAX_GRID_SIDE = 30


@dataclass
class Request:
    """One prompt to complete ``n`` times."""

    prompt_ids: list[int]
    adapter: str | None = None
    n: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 256
    stop_token_ids: list[int] = field(default_factory=list)
    key: Any = None  # the caller's tag (task id, test index, view index, ...)
    # Characters a grid answer can contain: a backend may stop a sequence as soon as it
    # can no longer parse (encoding.answer_is_over). None: generate to a stop or the cap.
    grid_alphabet: str | None = None


@dataclass
class Completion:
    """One generated answer."""

    token_ids: list[int]
    text: str
    logprob: float  # cumulative log-probability of token_ids
    n_tokens: int

    @property
    def mean_logprob(self) -> float:
        """Log-probability per token (the vote's tie-break)."""
        return self.logprob / max(1, self.n_tokens)


# (prompt_ids, answer_ids, adapter)
ScoreItem = tuple[list[int], list[int], "str | None"]


@runtime_checkable
class Backend(Protocol):
    """What select.py and the pipeline need from an inference engine."""

    name: str
    tokenizer: Any

    def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        """Per request, its ``n`` completions (in request order)."""
        ...

    def score(self, prompt_ids: list[int], answer_ids: list[int], adapter: str | None) -> float:
        """log P(answer | prompt) under the base model or the adapter."""
        ...

    def score_many(self, items: Sequence[ScoreItem]) -> list[float]:
        """``score`` for many items in as few forward passes as the backend can."""
        ...

    def close(self) -> None:
        """Free the model / engine (idempotent)."""
        ...


def _shapes(task_or_grids: Any) -> list[tuple[int, int]]:
    """(H, W) of a task's train outputs and test inputs, or of a list of grids."""
    if hasattr(task_or_grids, "train") and hasattr(task_or_grids, "test"):
        grids = [ex.output for ex in task_or_grids.train if ex.output is not None]
        grids += [ex.input for ex in task_or_grids.test]
    else:
        grids = list(task_or_grids)
    out = []
    for g in grids:
        rows = len(g)
        cols = max((len(r) for r in g), default=0)
        out.append((rows, cols))
    return out


def max_new_tokens_for(
    task_or_grids: Any, fmt: str, tokenizer: Any = None, margin: float = 0.1
) -> int:
    """A generation cap from the largest plausible output grid.

    The grid is max height x max width over the task's train outputs and test inputs
    (or the given grids), bounded by 30x30. Its worst-case rendering (every cell a
    different digit than its neighbour) is counted in the format and tokenizer, plus
    the end marker, plus ``margin`` (share) and a few tokens of slack.
    """
    import numpy as np

    from arc_ttft import encoding

    shapes = _shapes(task_or_grids) or [(MAX_GRID_SIDE, MAX_GRID_SIDE)]
    h = min(MAX_GRID_SIDE, max(1, max(s[0] for s in shapes)))
    w = min(MAX_GRID_SIDE, max(1, max(s[1] for s in shapes)))
    worst = (np.add.outer(np.arange(h), np.arange(w)) % 10).astype(np.int8)
    text = encoding.get_format(fmt).render(worst) + encoding.end_marker(tokenizer)
    n = encoding.count_tokens(text, tokenizer)
    return int(math.ceil(n * (1 + margin))) + END_MARGIN_TOKENS


def query_cap(
    examples: Sequence[tuple[Any, Any]], query: Any, fmt: str, tokenizer: Any = None
) -> int:
    """The generation cap of one prompt: ``max_new_tokens_for`` its examples' outputs and
    its query input. TTT keeps the same room free when it trims its training prompts, so
    training and inference drop the same train pairs from the same prompt."""
    return max_new_tokens_for([o for _, o in examples] + [query], fmt, tokenizer)


def stop_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an answer: eos, plus ChatML's <|im_end|> when the vocabulary has it."""
    out: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        out.append(eos)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
        tid = vocab.get(tok)
        if tid is not None and tid not in out:
            out.append(tid)
    return out


def cut_at_stop(token_ids: list[int], stop_token_ids: Sequence[int]) -> list[int]:
    """``token_ids`` up to and including the first stop token."""
    stops = set(stop_token_ids)
    for i, t in enumerate(token_ids):
        if t in stops:
            return list(token_ids[: i + 1])
    return list(token_ids)


def decode_answer(tokenizer: Any, token_ids: list[int], stop_token_ids: Sequence[int]) -> str:
    """Decode with special tokens kept, then cut before the first stop token."""
    stops = set(stop_token_ids)
    body = []
    for t in token_ids:
        if t in stops:
            break
        body.append(t)
    return tokenizer.decode(body, skip_special_tokens=False)
