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

The candidate cap keeps the most likely answers, not the first found: once the cap is
full, a branch is followed only while its prefix is more likely than the worst answer
kept (every answer below a prefix is at most as likely as it), so the walk returns the
exact top ``max_candidates`` of the answers >= P, and the cap also prunes the tree.

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

import heapq
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STOP_REASONS = ("nodes", "deadline", "candidates")


@dataclass
class DFSResult:
    """What one walk found: (token ids with the stop token, log-probability), best first.

    ``stopped`` says why the answers may not be every answer >= P (None: they are):
    "nodes" (``max_nodes`` expansions) or "deadline" ended the walk early, so the answers
    are the best of the part searched; "candidates": the walk finished, but the candidate
    cap pruned branches above P, so the answers are the exact top ``max_candidates`` and
    more answers >= P may exist.
    """

    found: list[tuple[list[int], float]] = field(default_factory=list)
    nodes: int = 0  # expansions: one forward of one token each
    stopped: str | None = None  # None or one of STOP_REASONS


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
        if max_candidates < 1:
            raise ValueError(f"max_candidates: {max_candidates}; DFS keeps at least one answer")
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
        # the best answers so far, (log-prob, -order, ids): a min-heap, [0] is the worst kept
        self._kept: list[tuple[float, int, list[int]]] = []
        self._order = 0  # heap tie-break: earlier answers first
        self._capped = False  # the full cap pruned something above P
        self._done = False

    def _passes(self, nll: float) -> bool:
        """Whether a prefix (or answer) of this nll is worth following: >= P, and with the
        cap full, more likely than the worst answer kept (no answer below a prefix is more
        likely than it, so nothing under a worse one could replace it)."""
        if nll > self.max_nll:
            return False
        if len(self._kept) >= self.max_candidates and -nll <= self._kept[0][0]:
            self._capped = True  # above P, but cannot beat the answers kept
            return False
        return True

    def _keep(self, toks: list[int], nll: float) -> None:
        """Record a finished answer, dropping the worst kept one when the cap is full."""
        if not self._passes(nll):
            return
        item = (-nll, -self._order, toks)
        self._order += 1
        if len(self._kept) < self.max_candidates:
            heapq.heappush(self._kept, item)
        else:
            heapq.heapreplace(self._kept, item)
            self._capped = True  # an answer >= P dropped for the cap

    def _best_first(self) -> list[tuple[list[int], float]]:
        return [(toks, lp) for lp, _, toks in sorted(self._kept, reverse=True)]

    def push(self, logprobs: Mapping[int, float]) -> None:
        """The log-probs of the next token after ``prefix``: queue its children."""
        base = self._nll[-1]
        children = []
        for tok in self.allowed:
            lp = logprobs.get(tok)
            if lp is None or not math.isfinite(lp):
                continue
            nll = base - lp
            if self._passes(nll):
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
            if not self._passes(nll):
                continue  # the cap filled since it was queued
            if tok in self.stops:
                self._keep([*self.prefix, tok], nll)
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
        return self._finish("candidates" if self._capped else None)

    def _finish(self, why: str | None) -> None:
        self._done = True
        if why in ("nodes", "deadline"):
            # Stop tokens still queued are finished answers that need no forward pass.
            for depth, children in enumerate(self._stack):
                for nll, tok in children:
                    if tok in self.stops:
                        self._keep([*self.prefix[:depth], tok], nll)
        self._result.stopped = why
        self._result.found = self._best_first()
        return None

    def result(self) -> DFSResult:
        """The answers found, most likely first (at most ``max_candidates``); ``stopped``
        says whether they may be fewer than every answer >= P (``DFSResult``)."""
        if not self._done:  # read mid-walk: what is kept so far
            self._result.found = self._best_first()
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


def record_walk(stats: dict, res: DFSResult) -> None:
    """Add a walk to a backend's ``stats``: ``dfs_nodes`` (expansions) and ``dfs_stopped``
    (stop reason -> walks, for the walks that did not return every answer >= P)."""
    stats["dfs_nodes"] = stats.get("dfs_nodes", 0) + res.nodes
    if res.stopped is not None:
        stopped = stats.setdefault("dfs_stopped", {})
        stopped[res.stopped] = stopped.get(res.stopped, 0) + 1


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
