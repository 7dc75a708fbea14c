"""From views to two attempts: prompts per view, one backend call, inversion, ranking.

For each test input of each task:

1. ``N`` views (``augment.make_views``, seeded per task, the identity first). A view's
   prompt shows the view-transformed train pairs (in the view's order) and asks for the
   view-transformed test input. ``InferConfig.sampling`` says what each view returns:
   one greedy answer, ``samples`` random ones, or with ``dfs`` every answer of
   probability >= ``min_prob`` (``infer.dfs``; at most ``dfs_max_candidates``).
2. Every completion is parsed (``encoding.parse_answer``) and mapped back to the task's
   frame (``augment.invert_grid``). Unparsable answers are dropped and counted.
3. Vote: identical grids are grouped; rank by count, ties broken by the mean per-token
   log-probability of the samples that produced the grid.
4. Scoring (``InferConfig.scorer``; ``rescore = M > 0`` views): each distinct candidate
   (the ``RESCORE_MAX_CANDIDATES`` best by vote) is scored under ``M`` views drawn with
   another seed (the same views for every candidate): the candidate is transformed by
   the view and the backend gives log P(answer | view prompt). ``candidate_score``
   turns that into the rank key: ``poe`` (product of experts + vote weight), ``nvarc``
   or ``architects`` (the 2025 and 2024 winners' formulas). Ties fall back to the vote
   order. A view whose prompt plus some candidate exceeds ``max_seq_len`` is left out
   for that test input (one such item would fail a whole vLLM call); a test input left
   with no view keeps the vote order.
5. Attempts 1 and 2 are the two best distinct grids; with fewer than two, the gaps are
   filled with ``submission.fallback_attempts`` (the test input, then ``[[0]]``).

All prompts of all tasks go to the backend in ONE ``generate`` call (and all scoring
in one ``score_many`` call), so vLLM can batch the whole shard across adapters.

Over 500 lines: views, requests, voting, the four scorers and re-scoring are one step of
the run (completions in, two attempts out); each is its own section.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft import augment, encoding
from arc_ttft.infer.base import Request, generation_cap, query_cap, stop_ids
from arc_ttft.submission import fallback_attempts
from arc_ttft.tasks import Task, to_list

RESCORE_MAX_CANDIDATES = 8  # re-score only the best few by vote: cost grows with M x this


@dataclass(frozen=True)
class RequestKey:
    """Which task, test input and view a request belongs to."""

    task_id: str
    test_index: int
    view_index: int
    view: augment.View


@dataclass
class Candidate:
    """One distinct predicted grid (in the task's own frame) and its evidence."""

    grid: list[list[int]]
    count: int = 0
    views: list[int] = field(default_factory=list)  # view index per sample that produced it
    logprobs: list[float] = field(default_factory=list)  # mean per-token logprob per sample
    rescore: float | None = None  # summed log-likelihood under the re-scoring views
    rank_score: float | None = None  # the key it was ranked by (see the module docstring)
    nlls: list[float] = field(default_factory=list)  # whole-answer NLL per sample (the scorers')

    @property
    def mean_logprob(self) -> float:
        return float(np.mean(self.logprobs)) if self.logprobs else -math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "count": self.count,
            "views": self.views,
            "mean_logprob": _finite(self.mean_logprob),
            "rescore": _finite(self.rescore),
            "rank_score": _finite(self.rank_score),
        }


@dataclass
class Selection:
    """The ranked candidates of one test input, with what happened on the way."""

    task_id: str
    test_index: int
    candidates: list[Candidate] = field(default_factory=list)  # best first
    samples: int = 0  # completions received
    invalid: int = 0  # completions that did not parse into a grid
    skipped_views: int = 0  # views whose prompt did not fit max_seq_len
    rescored: bool = False
    rescore_views: list[str] = field(default_factory=list)
    rescore_dropped: int = 0  # (candidate, view) scores left out: longer than max_seq_len
    scorer: str = "vote"  # what ranked the candidates (rank_candidates)
    dfs_stopped: str | None = None  # why a DFS walk of this test input stopped early

    def top(self, k: int = 2) -> list[np.ndarray]:
        """The ``k`` best distinct grids (fewer when there are fewer candidates)."""
        return [np.asarray(c.grid, dtype=np.int8) for c in self.candidates[:k]]

    def attempts(self, task: Task | None = None, test_index: int | None = None) -> tuple:
        """(attempt_1, attempt_2) as lists of lists; gaps filled with the fallback attempts."""
        return self.sourced_attempts(task, test_index)[0]

    def sourced_attempts(
        self,
        task: Task | None = None,
        test_index: int | None = None,
        earlier: Sequence[list[list[int]]] = (),
        source: str = "model",
    ) -> tuple[tuple, tuple[str, str]]:
        """((attempt_1, attempt_2), (source_1, source_2)): this selection's best grids
        (``source``), then the ``earlier`` answers of the same test input (an earlier
        inference, e.g. the probe's: "earlier"), then fallbacks ("fallback"). A real
        answer is never pushed out by a fallback."""
        got = [c.grid for c in self.candidates[:2]]
        sources = [source] * len(got)

        def fill(grids, name: str) -> None:  # up to two distinct attempts, in order
            for g in grids:
                if len(got) < 2 and g not in got:
                    got.append(g)
                    sources.append(name)

        fill(earlier, "earlier")
        if len(got) < 2:
            if task is None:
                raise ValueError(
                    f"{self.task_id}: test {self.test_index}: fewer than two candidates; "
                    "pass the task so the fallback attempts can fill the gap"
                )
            fill(
                _fallbacks(task, self.test_index if test_index is None else test_index), "fallback"
            )
            while len(got) < 2:
                got.append([[0]])
                sources.append("fallback")
        return (got[0], got[1]), (sources[0], sources[1])

    def empty_reason(self, n_views: int | None = None) -> str | None:
        """Why this test input got no candidate (None when it has some)."""
        if self.candidates:
            return None
        if n_views is not None and self.skipped_views >= n_views:
            return "no view fits max_seq_len"
        if self.samples and self.invalid >= self.samples:
            return f"all {self.samples} answers failed to parse"
        if self.dfs_stopped:
            return f"dfs stopped early ({self.dfs_stopped}) before any answer"
        return "no answer (nothing above min_prob, or no completion came back)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "test_index": self.test_index,
            "samples": self.samples,
            "invalid": self.invalid,
            "skipped_views": self.skipped_views,
            "rescored": self.rescored,
            "rescore_views": self.rescore_views,
            "rescore_dropped": self.rescore_dropped,
            "scorer": self.scorer,
            "dfs_stopped": self.dfs_stopped,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def _finite(x: float | None) -> float | None:
    """JSON has no infinities: None instead."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), 6)


def _fallbacks(task: Task, test_index: int) -> list[list[list[int]]]:
    return [to_list(g) for g in fallback_attempts(task, test_index)]


# ---------------------------------------------------------------------------------------
# Views and requests
# ---------------------------------------------------------------------------------------


def task_seed(seed: int, task_id: str) -> int:
    """A per-task seed that does not depend on the task's position in the run."""
    return (seed * 1_000_003 + zlib.crc32(task_id.encode())) % (2**31)


def view_transforms(setting: str, adapter: str | None, adapter_transforms: str) -> str:
    """The view family of a task's views: ``setting``, or for ``auto`` the one its adapter
    was trained under (it learnt the rule in those views; under others a rotation can
    become another rotation, a fixed colour map another map): the family saved beside the
    adapter, else ``adapter_transforms``; all 8 transforms for the base model (more
    diverse votes)."""
    if setting != "auto":
        return setting
    if not adapter:
        return "dihedral"
    saved = Path(adapter) / augment.VIEWS_FILE
    return json.loads(saved.read_text())["views"] if saved.exists() else adapter_transforms


def task_views(
    task: Task, n: int, seed: int = 0, transforms: str = "dihedral"
) -> list[augment.View]:
    """The ``n`` generation views of a task (identity first), reproducible from ``seed``;
    ``transforms`` names their geometric transforms (augment.TRANSFORM_SETS)."""
    return augment.make_views(
        task, n, task_seed(seed, task.id), identity_first=True, transforms=transforms
    )


def rescore_views(
    task: Task, m: int, seed: int = 0, transforms: str = "dihedral"
) -> list[augment.View]:
    """``m`` views for re-scoring, drawn with another seed than the generation views."""
    return augment.make_views(
        task, m, task_seed(seed + 7919, task.id), identity_first=False, transforms=transforms
    )


def view_prompt(
    task: Task,
    view: augment.View,
    test_index: int,
    fmt: str,
    tokenizer: Any,
    max_seq_len: int | None = None,
    max_new_tokens: int | None = None,
) -> tuple[encoding.Prompt, int]:
    """The prompt for one test input of ``task`` as seen under ``view``, and its generation
    cap (``max_new_tokens``, else ``query_cap``). With ``max_seq_len`` train pairs are
    dropped until prompt + cap fit: the rule TTT trims its training prompts with."""
    vt = augment.apply_task(view, task)
    examples = [(ex.input, ex.output) for ex in vt.train]
    query = vt.test[test_index].input
    cap = max_new_tokens or query_cap(examples, query, fmt, tokenizer)
    prompt = encoding.build_prompt(
        examples, query, fmt, tokenizer, max_seq_len=max_seq_len, reserve=cap
    )
    return prompt, cap


def _prompt_ids(prompt: encoding.Prompt, tokenizer: Any) -> list[int]:
    return list(tokenizer(prompt.text, add_special_tokens=False)["input_ids"])


def build_requests(
    tasks: Sequence[Task],
    views_per_task: dict[str, list[augment.View]],
    fmt: str,
    tokenizer: Any,
    adapters: dict[str, str | None],
    cfg: Any,
    max_seq_len: int | None = None,
    sampling: str | None = None,
    deadline: float | None = None,
    predicted_cap: bool = False,
) -> tuple[list[tuple[RequestKey, Request]], dict[tuple[str, int], int]]:
    """One request per (task, test input, view); also the views skipped per test input.

    ``sampling`` (default ``resolve_sampling(cfg)``): greedy asks one argmax answer, sample
    ``cfg.samples`` at ``cfg.temperature``, dfs every answer >= ``cfg.min_prob`` (at most
    ``cfg.dfs_max_candidates``, stopping at ``deadline``, a time.time() value).

    With ``max_seq_len`` the prompt drops train pairs to leave room for ``query_cap`` (as
    TTT did), and a prompt that still leaves no room is skipped (counted) rather than
    failing the batch. The generation cap is ``cfg.max_new_tokens``, else
    ``generation_cap``: a 30x30 answer where the context has room for one; with
    ``predicted_cap`` (a budget that binds), ``query_cap``: the answer the reserve priced.
    """
    stops = stop_ids(tokenizer)
    how = request_fields(cfg, sampling or resolve_sampling(cfg), deadline)
    out: list[tuple[RequestKey, Request]] = []
    skipped: dict[tuple[str, int], int] = {}
    for task in tasks:
        for ti in range(len(task.test)):
            skipped[(task.id, ti)] = 0
            for vi, view in enumerate(views_per_task[task.id]):
                prompt, cap = view_prompt(
                    task, view, ti, fmt, tokenizer, max_seq_len, cfg.max_new_tokens
                )
                ids = _prompt_ids(prompt, tokenizer)
                room = None if max_seq_len is None else max_seq_len - len(ids)
                if cfg.max_new_tokens or predicted_cap:  # the user's cap, or the priced one
                    new = cap if room is None else min(cap, room)
                else:
                    new = generation_cap(cap, room, fmt, tokenizer)
                if new < 1:
                    skipped[(task.id, ti)] += 1
                    continue
                req = Request(
                    prompt_ids=ids,
                    adapter=adapters.get(task.id),
                    max_new_tokens=new,
                    stop_token_ids=stops,
                    key=RequestKey(task.id, ti, vi, view),
                    grid_alphabet=encoding.get_format(fmt).alphabet,
                    **how,
                )
                out.append((req.key, req))
    return out, skipped


def request_fields(cfg: Any, sampling: str, deadline: float | None = None) -> dict[str, Any]:
    """The Request fields that say how a view's answers are generated."""
    if sampling == "dfs":
        return dict(
            n=cfg.dfs_max_candidates,
            temperature=0.0,
            min_prob=cfg.min_prob,
            max_nodes=cfg.dfs_max_nodes,
            deadline=deadline,
        )
    if sampling == "sample":
        return dict(n=cfg.samples, temperature=cfg.temperature)
    if sampling == "greedy":
        return dict(n=1, temperature=0.0)
    raise ValueError(f"sampling: {sampling!r} unknown; use one of {', '.join(SAMPLINGS)}")


# ---------------------------------------------------------------------------------------
# Vote and re-score
# ---------------------------------------------------------------------------------------


def collect(
    tasks: Sequence[Task],
    keyed: Sequence[tuple[RequestKey, Any]],
    completions: Sequence[Sequence[Any]],
    fmt: str,
    tokenizer: Any = None,
    skipped: dict[tuple[str, int], int] | None = None,
    stats: encoding.ParseStats | None = None,
) -> dict[str, list[Selection]]:
    """Parse, invert and vote every completion; Selections per task in test order."""
    end = encoding.end_marker(tokenizer) if tokenizer is not None else None
    found: dict[tuple[str, int], dict[bytes, Candidate]] = {}
    sel: dict[tuple[str, int], Selection] = {}
    for t in tasks:
        for ti in range(len(t.test)):
            sel[(t.id, ti)] = Selection(t.id, ti, skipped_views=(skipped or {}).get((t.id, ti), 0))
            found[(t.id, ti)] = {}
    for (key, _), comps in zip(keyed, completions):
        s = sel[(key.task_id, key.test_index)]
        for c in comps:
            s.samples += 1
            g = encoding.parse_answer(c.text, fmt, stats, end=end)
            if g is None or not _valid(g):
                s.invalid += 1
                continue
            g = augment.invert_grid(key.view, np.asarray(g, dtype=np.int8))
            h = _grid_key(g)
            cand = found[(key.task_id, key.test_index)].get(h)
            if cand is None:
                cand = found[(key.task_id, key.test_index)][h] = Candidate(to_list(g))
            cand.count += 1
            cand.views.append(key.view_index)
            cand.logprobs.append(c.logprob / max(1, c.n_tokens))
            cand.nlls.append(-c.logprob)
    for k, s in sel.items():
        s.candidates = vote(list(found[k].values()))
    out: dict[str, list[Selection]] = {t.id: [] for t in tasks}
    for (tid, _), s in sorted(sel.items(), key=lambda kv: kv[0][1]):
        out[tid].append(s)
    return out


def _valid(g: Any) -> bool:
    a = np.asarray(g)
    return (
        a.ndim == 2
        and 1 <= a.shape[0] <= 30
        and 1 <= a.shape[1] <= 30
        and bool(((a >= 0) & (a <= 9)).all())
    )


def _grid_key(g: np.ndarray) -> bytes:
    return np.asarray(g.shape, dtype=np.int32).tobytes() + np.asarray(g, dtype=np.int8).tobytes()


def vote(cands: list[Candidate]) -> list[Candidate]:
    """Rank by count, then by mean per-token log-probability (higher first)."""
    for c in cands:
        c.rank_score = float(c.count)
    return sorted(cands, key=lambda c: (-c.count, -c.mean_logprob))


ARCHITECTS_OFFSET = 3.0  # the ARChitects' per-score offset: 3 - NLL


def candidate_score(c: Candidate, scorer: str, m: int, vote_weight: float = 1.0) -> float:
    """A candidate's rank key under ``scorer`` (higher is better); ``c.rescore`` is its
    summed log-likelihood over the ``m`` scoring views (augmentations).

    - ``poe``: product of experts, sum of the m log-likelihoods + vote_weight x log(count)
      (Franzen et al., "Product of Experts with LLMs: Boosting Performance on ARC Is a
      Matter of Perspective", 2025, plus this package's vote weight).
    - ``nvarc``: the number of distinct views whose search found it, minus its mean NLL
      under the m augmentations (NVARC, ARC Prize 2025 winning solution write-up).
    - ``architects``: the sum over the views that found it of (3 - its best NLL there),
      plus the mean over them of the sum over augmentations j of (3 - NLL_j) (the
      ARChitects, "The LLM ARChitect: Solving ARC-AGI Is A Matter of Perspective", 2024).
      Here the m augmentations are the same for every finding view, so that mean is the
      one sum.
    """
    ll = c.rescore if c.rescore is not None else -math.inf
    if scorer == "poe":
        return ll + vote_weight * math.log(max(1, c.count))
    if scorer == "nvarc":
        return len(set(c.views)) + ll / max(1, m)
    if scorer == "architects":
        # once per view that found it (its likeliest path): two token paths or a base
        # vote to the same grid in one view are one finding
        best: dict[int, float] = {}
        for v, nll in zip(c.views, c.nlls):
            best[v] = min(best.get(v, math.inf), nll)
        found = sum(ARCHITECTS_OFFSET - nll for nll in best.values())
        return found + ARCHITECTS_OFFSET * m + ll
    raise ValueError(f"scorer: {scorer!r} unknown; use one of {', '.join(SCORERS)}")


def rank_candidates(
    cands: list[Candidate], scorer: str, m: int, vote_weight: float = 1.0
) -> list[Candidate]:
    """Rank by ``candidate_score`` (higher first); the vote order breaks ties."""
    order = {id(c): i for i, c in enumerate(cands)}
    for c in cands:
        c.rank_score = candidate_score(c, scorer, m, vote_weight)
    return sorted(cands, key=lambda c: (-c.rank_score, order[id(c)]))


SCORERS = ("vote", "poe", "nvarc", "architects")
SAMPLINGS = ("greedy", "sample", "dfs")


def _local_machine() -> Any:
    from arc_ttft import auto

    return auto.machine_for("auto")


def resolve_sampling(cfg: Any, backend: str | None = None) -> str:
    """``cfg.sampling``, with ``auto`` made concrete for this machine and ``backend``
    (``auto.sampling_for``: DFS with vLLM on a CUDA GPU, else greedy, or sampling when
    --samples > 1). ``pipeline.run`` resolves it once up front; this serves library calls."""
    if cfg.sampling != "auto":
        return cfg.sampling
    from arc_ttft import auto

    machine = _local_machine()
    kind = backend or auto.backend_for(machine, getattr(cfg, "backend", "auto"))
    return auto.sampling_for(machine, kind, cfg.samples, cfg.temperature)


def resolve_rescore(cfg: Any) -> int:
    """``cfg.rescore``, with None made concrete (``auto.rescore_for``: 8 on a GPU, 4 on CPU)."""
    if cfg.rescore is not None:
        return cfg.rescore
    from arc_ttft import auto

    return auto.rescore_for(_local_machine())


def resolve_scorer(cfg: Any, sampling: str) -> str:
    """``cfg.scorer``, with ``auto`` made concrete: architects after DFS, poe after greedy or
    sampling, vote when there are no scoring views (--rescore 0)."""
    if cfg.scorer != "auto":
        return cfg.scorer
    from arc_ttft import auto

    return auto.scorer_for(sampling, resolve_rescore(cfg))


def rescore(
    tasks: Sequence[Task],
    selections: dict[str, list[Selection]],
    backend: Any,
    tokenizer: Any,
    fmt: str,
    adapters: dict[str, str | None],
    m: int,
    seed: int = 0,
    vote_weight: float = 1.0,
    max_seq_len: int | None = None,
    events: Any = None,
    transforms: dict[str, str] | str = "dihedral",
    scorer: str = "poe",
) -> int:
    """Re-score the top candidates of every selection with ``m`` views in one call, then
    rank them by ``scorer`` (``rank_candidates``).

    Only selections with two or more candidates are re-scored (one candidate has nothing
    to beat). With ``max_seq_len``, a view where prompt + any candidate is longer is left
    out of that selection (its items counted in ``rescore_dropped``, and logged to
    ``events``): every candidate keeps a sum over the same views. Returns the number of
    (candidate, view) scores computed. ``transforms`` names the views' geometric
    transforms (augment.TRANSFORM_SETS), for all tasks or per task id.
    """
    if m < 1:
        return 0
    end = encoding.end_marker(tokenizer)
    render = encoding.get_format(fmt).render
    items: list[tuple[list[int], list[int], str | None]] = []
    owners: list[Candidate] = []
    todo: list[Selection] = []
    for task in tasks:
        views = None
        for s in selections[task.id]:
            top = s.candidates[:RESCORE_MAX_CANDIDATES]
            if len(top) < 2:
                continue
            kind = transforms if isinstance(transforms, str) else transforms[task.id]
            views = views or rescore_views(task, m, seed, kind)
            used = []
            lengths = []  # prompt + answer of the items left out
            for v in views:
                prompt, _ = view_prompt(task, v, s.test_index, fmt, tokenizer, max_seq_len)
                ids = _prompt_ids(prompt, tokenizer)
                answers = []
                for c in top:
                    answer = render(augment.apply_grid(v, np.asarray(c.grid, dtype=np.int8))) + end
                    answers.append(list(tokenizer(answer, add_special_tokens=False)["input_ids"]))
                if max_seq_len is not None and any(
                    len(ids) + len(a) > max_seq_len for a in answers
                ):
                    lengths += [len(ids) + len(a) for a in answers]
                    continue
                used.append(v)
                for c, a_ids in zip(top, answers):
                    items.append((ids, a_ids, adapters.get(task.id)))
                    owners.append(c)
            s.rescore_dropped = len(lengths)
            if lengths and events is not None:
                events.log(
                    "select",
                    task=task.id,
                    test_index=s.test_index,
                    decision="rescore-skipped-too-long",
                    views=len(views) - len(used),
                    items=len(lengths),
                    longest=max(lengths),
                    max_seq_len=max_seq_len,
                )
            if not used:
                continue  # the vote order stands
            for c in top:
                c.rescore = 0.0
            s.rescored = True
            s.rescore_views = [augment.describe(v) for v in used]
            s.scorer = scorer
            todo.append(s)
    if not items:
        return 0
    for c, v in zip(owners, backend.score_many(items)):
        c.rescore += v
    for s in todo:
        m_used = len(s.rescore_views)
        top = rank_candidates(s.candidates[:RESCORE_MAX_CANDIDATES], scorer, m_used, vote_weight)
        s.candidates = top + s.candidates[RESCORE_MAX_CANDIDATES:]
    return len(items)


# ---------------------------------------------------------------------------------------
# The whole step
# ---------------------------------------------------------------------------------------


def predict_tasks(
    tasks: Sequence[Task],
    backend: Any,
    tokenizer: Any,
    cfg: Any,
    fmt: str,
    adapters: dict[str, str | None] | None = None,
    max_seq_len: int | None = None,
    *,
    seed: int = 0,
    events: Any = None,
    adapter_transforms: str = "dihedral",
    deadline: float | None = None,
    measured: dict[str, Any] | None = None,
    predicted_cap: bool = False,
) -> dict[str, list[Selection]]:
    """Views -> one generate call -> parse/invert/vote -> (re-score) for ``tasks``.

    ``cfg`` is an InferConfig (views, view_transforms, base_votes, sampling and its knobs,
    scorer, rescore, rescore_vote_weight, max_new_tokens). ``adapters`` maps task id ->
    adapter folder (None or missing: base model). ``adapter_transforms``: the transforms
    the adapters were trained under, which ``view_transforms="auto"`` asks them in.
    ``deadline`` (time.time()): DFS stops there and keeps what it found. Returns task id ->
    one Selection per test input, in test order. ``measured`` (a dict) receives
    ``answer_tokens``: the mean length of the generated answers (under DFS, the tokens
    walked per view: the backend's nodes), what the budget's cost model measures
    inference against. ``predicted_cap``: answers stop at the predicted grid's tokens
    (``build_requests``).
    """
    adapters = adapters or {}
    t0 = time.monotonic()
    sampling = resolve_sampling(cfg, getattr(backend, "name", None))
    scorer = resolve_scorer(cfg, sampling)
    transforms = {
        t.id: view_transforms(cfg.view_transforms, adapters.get(t.id), adapter_transforms)
        for t in tasks
    }
    views = {t.id: task_views(t, cfg.views, seed, transforms[t.id]) for t in tasks}
    keyed, skipped = build_requests(
        tasks, views, fmt, tokenizer, adapters, cfg, max_seq_len, sampling, deadline, predicted_cap
    )
    if cfg.base_votes:
        # The same prompts without the adapter; same keys, so collect() pools the votes.
        keyed += [(k, dataclasses.replace(r, adapter=None)) for k, r in keyed if r.adapter]
    t1 = time.monotonic()
    nodes0 = _dfs_nodes(backend)
    completions = backend.generate([r for _, r in keyed]) if keyed else []
    t2 = time.monotonic()
    stats = encoding.ParseStats()
    selections = collect(tasks, keyed, completions, fmt, tokenizer, skipped, stats)
    # Why a walk stopped early (node cap, deadline, candidate cap): the backend keeps each
    # request's DFSResult; a test input reports its views' first reason.
    walks = getattr(backend, "dfs_results", None) or []
    for (key, _), res in zip(keyed, walks):
        if res is not None and res.stopped:
            s = selections[key.task_id][key.test_index]
            s.dfs_stopped = s.dfs_stopped or res.stopped
    # the vote order stands without scoring views; a scorer that needs them re-scores
    m = resolve_rescore(cfg) if scorer != "vote" else 0
    n_scores = rescore(
        tasks, selections, backend, tokenizer, fmt, adapters, m, seed,
        cfg.rescore_vote_weight, max_seq_len, events, transforms, scorer,
    )  # fmt: skip
    t3 = time.monotonic()
    lengths = [x.n_tokens for c in completions for x in c]
    answer_tokens = sum(lengths) / len(lengths) if lengths else None
    if sampling == "dfs":  # a walk's cost is its nodes: tokens walked per view
        answer_tokens = (_dfs_nodes(backend) - nodes0) / len(keyed) if keyed else None
    if measured is not None:
        measured["answer_tokens"] = answer_tokens
    if events is not None:
        events.log(
            "infer",
            tasks=len(tasks),
            requests=len(keyed),
            completions=sum(len(c) for c in completions),
            invalid=stats.failed,
            scores=n_scores,
            scores_dropped=sum(s.rescore_dropped for sels in selections.values() for s in sels),
            prompt_seconds=round(t1 - t0, 3),
            generate_seconds=round(t2 - t1, 3),
            select_seconds=round(t3 - t2, 3),
            sampling=sampling,
            scorer=scorer,
            dfs_nodes=_dfs_nodes(backend) - nodes0 if sampling == "dfs" else None,
            answer_tokens=None if answer_tokens is None else round(answer_tokens, 1),
            predicted_cap=predicted_cap,
            backend=getattr(backend, "name", type(backend).__name__),
        )
    return selections


def _dfs_nodes(backend: Any) -> int:
    """Nodes the backend's DFS expanded so far (its ``stats``; fakes have none)."""
    return int(getattr(backend, "stats", {}).get("dfs_nodes", 0))
