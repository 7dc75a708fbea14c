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
- ``cancel``: a ``threading.Event`` the caller may set on a backend (or None); once it is
  set, the backend stops at its next token, DFS node or batch and raises ``Cancelled``,
  so that a call past its deadline ends and frees what it holds instead of running on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class Cancelled(RuntimeError):
    """The backend's ``cancel`` event was set: the call stopped before it finished."""


def check_cancel(cancel: Any) -> None:
    """Raise ``Cancelled`` when ``cancel`` (a threading.Event or None) is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("the caller's deadline passed: the call was cancelled")


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
    # Depth-first search (infer.dfs) instead of sampling: every answer of probability
    # >= min_prob over grid_alphabet tokens, at most ``n`` of them, at most ``max_nodes``
    # one-token expansions, stopping at ``deadline`` (time.time()) with what it found.
    min_prob: float | None = None
    max_nodes: int = 4096
    deadline: float | None = None


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
    """What selection.py and the pipeline need from an inference engine."""

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


def _side(g: Any, axis: int) -> int:
    """Height (axis 0) or width (axis 1) of a grid: an array's shape, else list rows."""
    shape = getattr(g, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[axis])
    return len(g) if axis == 0 else max((len(r) for r in g), default=0)


def answer_shape(examples: Sequence[tuple[Any, Any]], query: Any) -> tuple[int, int]:
    """An upper bound on the shape of the answer to ``query``, per side: the largest of
    the examples' outputs, the query itself, and what a size rule the examples all follow
    predicts: output = k x input (scale-ups, k may be a fraction) or output = input + d
    (borders). Without the rules a scale-up task whose query is its largest input gets a
    cap below its answer, which can then never be right. At most 30 per side."""
    pairs = [(i, o) for i, o in examples if o is not None]
    bound = []
    for axis in (0, 1):
        q = _side(query, axis)
        ins = [_side(i, axis) for i, _ in pairs]
        outs = [_side(o, axis) for _, o in pairs]
        side = max([q, *outs])
        if pairs and all(ins):
            i0, o0 = ins[0], outs[0]
            if all(o * i0 == o0 * i for i, o in zip(ins, outs)):  # one ratio o0 / i0
                side = max(side, -(-o0 * q // i0))  # ceil
            if all(o - i == o0 - i0 for i, o in zip(ins, outs)):  # one difference
                side = max(side, q + o0 - i0)
        bound.append(min(MAX_GRID_SIDE, max(1, side)))
    return bound[0], bound[1]


def query_cap(
    examples: Sequence[tuple[Any, Any]], query: Any, fmt: str, tokenizer: Any = None
) -> int:
    """The room one prompt keeps for its answer: ``max_new_tokens_for`` the grid of
    ``answer_shape``. TTT keeps the same room free when it trims its training prompts, so
    training and inference drop the same train pairs from the same prompt. Generation may
    go further where the context has room (``generation_cap``)."""
    h, w = answer_shape(examples, query)
    return max_new_tokens_for([[[0] * w] * h], fmt, tokenizer)


def generation_cap(reserve: int, room: int | None, fmt: str, tokenizer: Any = None) -> int:
    """Tokens a request may generate: up to a 30x30 answer where the context has ``room``
    (None: unbounded) for it, at least ``reserve`` (the prompt was trimmed to leave that),
    and never past ``room``. The end token stops a finished answer; the cap only decides
    whether a larger answer than predicted can still come out whole."""
    largest = max_new_tokens_for([[[0] * MAX_GRID_SIDE] * MAX_GRID_SIDE], fmt, tokenizer)
    cap = max(reserve, largest)
    return cap if room is None else min(cap, room)


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
