"""Depth-first search over answer tokens: every answer whose probability stays >= P.

Greedy decoding gives one answer per view and sampling gives random ones; DFS returns all
answers the model finds at least P likely, each with its exact log-probability. The
ARChitects (ARC Prize 2024, the ``explore``/``dfs`` functions of their inference tools)
and NVARC (2025) decode this way; their papers report it as the larger of their two
inference gains.

The walk keeps a branch while its total negative log-likelihood stays <= -log(P). Only
grid tokens (those whose text is made of the format's alphabet: digits, newline) and the
stop tokens are followed: that keeps the tree small, and an answer with any other token
could not parse anyway. Children are visited most likely first, so the first answer found
is the greedy one and a backend's KV cache is extended rather than rebuilt.

``DFSWalk`` is the search itself, with no model in it: the caller feeds it the
log-probabilities after each prefix it asks for. That way one walk serves both
backends: the transformers backend steps one token at a time on a KV cache it crops when
the walk backtracks; the vLLM backend advances many walks in lockstep, one batched call
per round, with prefix caching. Log-probabilities are the raw model's (full-vocabulary
softmax, no renormalisation over the grid tokens), as everywhere else in this package.

Exactness of a top-k backend: a child is kept only if its own probability is >= P
(the prefix's is <= 1), and at most floor(1/P) tokens can have that probability. So a
backend that reports only its top ``k >= floor(1/P) + 1`` log-probabilities per step
(vLLM) loses nothing (``top_k_needed``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DFSResult:
    """What one walk found: (token ids with the stop token, log-probability), best first."""

    found: list[tuple[list[int], float]] = field(default_factory=list)
    nodes: int = 0  # expansions: one forward of one token each
    stopped: str | None = None  # why the walk ended early: candidates, nodes or deadline


def top_k_needed(min_prob: float) -> int:
    """How many top log-probabilities per step make a top-k DFS exact (module docstring)."""
    return int(math.floor(1.0 / min_prob)) + 1


def grid_token_ids(tokenizer: Any, alphabet: str, vocab_rows: int | None = None) -> list[int]:
    """Ids whose decoded text is non-empty and made only of ``alphabet`` characters."""
    allowed = set(alphabet)
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = [i for i, t in enumerate(texts) if t and i not in special and set(t) <= allowed]
    if vocab_rows is not None:
        out = [i for i in out if i < vocab_rows]
    return out


class DFSWalk:
    """One depth-first search over a prompt's answer tokens.

    Drive it like this::

        walk.push(logprobs_after_prompt)
        while (tok := walk.next()) is not None:
            # walk.prefix now ends with tok: give the log-probs after prompt + walk.prefix
            walk.push(logprobs_after(prompt + walk.prefix))
        result = walk.result()

    ``logprobs`` is a mapping token id -> raw log-probability covering (at least) every
    allowed and stop token with a chance to pass; missing ids count as impossible.
    """

    def __init__(
        self,
        min_prob: float,
        max_new_tokens: int,
        allowed_ids: Sequence[int],
        stop_ids: Sequence[int],
        max_candidates: int = 8,
        max_nodes: int = 4096,
        deadline: float | None = None,
    ):
        if not stop_ids:
            raise ValueError("DFS needs stop token ids: an answer is complete at its stop token")
        self.max_nll = -math.log(min_prob)
        self.max_new_tokens = max_new_tokens
        self.allowed = list(dict.fromkeys([*allowed_ids, *stop_ids]))
        self.stops = set(stop_ids)
        self.max_candidates = max_candidates
        self.max_nodes = max_nodes
        self.deadline = deadline  # time.time() value
        self.prefix: list[int] = []  # the path to the node being expanded
        self._stack: list[list[tuple[float, int]]] = []  # per depth: children left, best last
        self._nll: list[float] = [0.0]  # nll of the path at each depth
        self._result = DFSResult()
        self._done = False

    def push(self, logprobs: Mapping[int, float]) -> None:
        """The log-probs of the next token after ``prefix``: queue its children."""
        base = self._nll[-1]
        children = []
        for tok in self.allowed:
            lp = logprobs.get(tok)
            if lp is None or not math.isfinite(lp):
                continue
            nll = base - lp
            if nll <= self.max_nll:
                children.append((nll, tok))
        children.sort(reverse=True)  # pop() from the end takes the most likely
        self._stack.append(children)
        if self.prefix:
            self._result.nodes += 1

    def next(self) -> int | None:
        """The next token to expand (``prefix`` then ends with it), or None when done.
        Finished answers (a stop token) are recorded on the way."""
        if self._done:
            return None
        while self._stack:
            children = self._stack[-1]
            if not children:
                self._stack.pop()  # every child done: backtrack
                self._nll.pop()
                if self._stack:
                    self.prefix.pop()
                continue
            nll, tok = children.pop()
            if tok in self.stops:
                self._result.found.append(([*self.prefix, tok], -nll))
                if len(self._result.found) >= self.max_candidates:
                    return self._finish("candidates")
                continue
            if len(self.prefix) + 2 > self.max_new_tokens:
                continue  # no room left for this token and a stop token after it
            if self._result.nodes >= self.max_nodes:
                return self._finish("nodes")
            if self.deadline is not None and time.time() > self.deadline:
                return self._finish("deadline")
            self.prefix.append(tok)
            self._nll.append(nll)
            return tok
        return self._finish(None)

    def _finish(self, why: str | None) -> None:
        self._done = True
        self._result.stopped = why
        if why in ("nodes", "deadline"):
            # Stop tokens still queued are finished answers that need no forward pass.
            for depth, children in enumerate(self._stack):
                for nll, tok in children:
                    if tok in self.stops:
                        self._result.found.append(([*self.prefix[:depth], tok], -nll))
        return None

    def result(self) -> DFSResult:
        """The answers found, most likely first."""
        self._result.found.sort(key=lambda f: -f[1])
        del self._result.found[self.max_candidates :]
        return self._result


def walk_for(r: Any, allowed_ids: Sequence[int]) -> DFSWalk:
    """The walk a DFS ``Request`` asks for (``infer.base.Request``: min_prob, n answers,
    max_new_tokens, max_nodes, deadline) over ``allowed_ids``."""
    return DFSWalk(
        r.min_prob,
        r.max_new_tokens,
        allowed_ids,
        r.stop_token_ids,
        max_candidates=r.n,
        max_nodes=r.max_nodes,
        deadline=r.deadline,
    )


def to_completions(res: DFSResult, tokenizer: Any, stop_ids: Sequence[int]) -> list:
    """The answers a walk found as ``Completion``s (best first), as both backends return."""
    from arc_ttft.infer.base import Completion, decode_answer

    return [
        Completion(toks, decode_answer(tokenizer, toks, stop_ids), lp, len(toks))
        for toks, lp in res.found
    ]


def logprob_map(row: Any, ids: Sequence[int], index: Any = None) -> dict[int, float]:
    """{id: log-prob} for ``ids`` from a full-vocabulary log-prob row (a torch tensor);
    ``index`` is ``ids`` as a tensor on the row's device, to save the conversion."""
    import torch

    if index is None:
        index = torch.tensor(list(ids), dtype=torch.long, device=row.device)
    return dict(zip(ids, row.index_select(0, index).tolist()))
