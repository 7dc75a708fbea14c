"""Transformers backend: batched ``generate`` with left padding, one peft adapter at a time.

Requests are grouped by adapter; each group runs in batches of ``batch_size`` prompts
(left-padded, KV cache on). Adapters load once per folder (``PeftModel.load_adapter``,
cached by path, least recently used ones dropped beyond ``max_cached_adapters``); base
requests run with the adapters disabled. Log-probabilities come from the raw logits,
before temperature, as vLLM reports them.

Memory: with a 150k vocabulary, full logits are the largest tensors by far (one 2048-token
sequence: 1.2 GB in fp32). Generation keeps one step's log-probs at a time
(``_StepLogprobs``) instead of every step's logits; scoring asks the model for the answer
positions only (``logits_to_keep``) and sizes its batches so those stay under
``max_logits_mb``.

DFS steps one token at a time on a KV cache it crops when the walk backtracks. That cache
is a plain ``DynamicCache`` with full layers even for sliding-window models (Gemma 3,
Phi-3): transformers gives those models sliding layers that keep only the last window
and cannot be cropped once a sequence is longer than it. The window still applies, as
the mask (built from the model's config on absolute positions) hides what lies outside.

Over 500 lines: generation, DFS on a cropped cache and shared-prompt scoring are the
backend protocol's three calls, each with the memory care it needs.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

from arc_ttft import encoding
from arc_ttft.infer.base import (
    Completion,
    Request,
    ScoreItem,
    check_cancel,
    cut_at_stop,
    decode_answer,
)
from arc_ttft.infer.dfs import (
    DFSResult,
    grid_token_ids,
    logprob_map,
    record_walk,
    to_completions,
    walk_for,
)


class HFBackend:
    """The Backend protocol on transformers + peft (CPU or one GPU)."""

    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 16,
        max_cached_adapters: int = 8,
        seed: int = 0,
        max_logits_mb: float = 512.0,
        share_prefix: bool = True,
    ):
        self.base = model
        self.model = model  # becomes a PeftModel at the first adapter request
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.max_cached_adapters = max(1, max_cached_adapters)
        self.seed = seed
        # fp32 answer logits one scoring batch may hold (at least one item per batch)
        self.max_logits_bytes = max_logits_mb * 2**20
        self.share_prefix = share_prefix  # score answers of one prompt on its KV cache
        self._adapters: OrderedDict[str, str] = OrderedDict()  # resolved path -> adapter name
        self._counter = 0
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id
        self.stats = {"generate_s": 0.0, "score_s": 0.0, "sequences": 0}
        self._texts: list[str] | None = None  # token id -> text, for _AnswerOver
        # the last generate call's DFS walks, one per request (None: not a DFS request)
        self.dfs_results: list[DFSResult | None] = []
        self._grid_id_cache: dict[str, list[int]] = {}
        self.cancel: Any = None  # a threading.Event: stop at the next token (infer.base)

    @classmethod
    def from_path(
        cls, model_path: str | Path, dtype: Any = None, device: str = "cpu", **kw: Any
    ) -> HFBackend:
        """Load a model folder (safetensors) and its tokenizer."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype or torch.float32, use_safetensors=True
        ).to(device)
        model.eval()
        return cls(model, tok, **kw)

    # -- adapters ---------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    def _activate(self, adapter: str | None) -> bool:
        """Make ``adapter`` the active one; return False for base-model requests."""
        if adapter is None:
            return False
        from peft import PeftModel

        path = str(Path(adapter).resolve())
        if path in self._adapters:
            self._adapters.move_to_end(path)
        else:
            if not (Path(path) / "adapter_config.json").is_file():
                raise FileNotFoundError(
                    f"adapter {adapter}: no adapter_config.json there; "
                    "pass a folder written by save_pretrained (or None for the base model)"
                )
            name = f"a{self._counter}"
            self._counter += 1
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.base, path, adapter_name=name)
            self.model.eval()
            self._adapters[path] = name
            while len(self._adapters) > self.max_cached_adapters:
                _, old = self._adapters.popitem(last=False)
                self.model.delete_adapter(old)
        self.model.set_adapter(self._adapters[path])
        return True

    def _run(self, adapter: str | None, fn):
        """Call ``fn(model)`` with the adapter active, or with adapters disabled for base."""
        from peft import PeftModel

        if self._activate(adapter):
            return fn(self.model)
        if isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                return fn(self.model)
        return fn(self.model)

    # -- generation -------------------------------------------------------------------

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _generate_batch(self, batch: list[Request]) -> list[list[Completion]]:
        """Requests of one adapter and one sampling setting, as one generate call."""
        first = batch[0]
        n = first.n
        ids, mask = self._left_pad([r.prompt_ids for r in batch])
        stops = list(first.stop_token_ids)
        sample = first.temperature > 0
        kwargs: dict[str, Any] = dict(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max(r.max_new_tokens for r in batch),
            do_sample=sample,
            num_return_sequences=n,
            eos_token_id=stops or None,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
        )
        check_cancel(self.cancel)
        over = None
        criteria = StoppingCriteriaList()
        if first.grid_alphabet:
            over = _AnswerOver(self._token_texts(), first.grid_alphabet, self.tokenizer.eos_token)
            criteria.append(over)
        if self.cancel is not None:
            criteria.append(_OnCancel(self.cancel))
        if criteria:
            kwargs["stopping_criteria"] = criteria
        if sample:
            kwargs.update(temperature=first.temperature, top_k=0, top_p=1.0)
        else:  # plain argmax: clear sampling knobs the model's generation_config may carry
            kwargs.update(temperature=None, top_k=None, top_p=None)

        def go(model):
            with torch.inference_mode(), _StepLogprobs(self.base) as rec:
                out = model.generate(**kwargs)
            return out, rec

        out, rec = self._run(first.adapter, go)
        check_cancel(self.cancel)  # generate stopped early for it: the answers are cut
        new = out.sequences[:, ids.shape[1] :]
        chosen = rec.result(new).cpu()  # (B*n, T): log-prob of each generated token
        new = new.cpu()
        results: list[list[Completion]] = []
        for i, r in enumerate(batch):
            comps = []
            for j in range(n):
                row = i * n + j
                toks = new[row].tolist()[: r.max_new_tokens]
                if over is not None and over.lengths and over.lengths[row] is not None:
                    toks = toks[: over.lengths[row]]  # what follows is padding
                toks = cut_at_stop(toks, stops)
                lp = float(chosen[row, : len(toks)].sum())
                text = decode_answer(self.tokenizer, toks, stops)
                comps.append(Completion(toks, text, lp, len(toks)))
            results.append(comps)
        self.stats["sequences"] += len(batch) * n
        return results

    # -- depth-first search -------------------------------------------------------------

    def _grid_ids(self, alphabet: str) -> list[int]:
        """Token ids DFS may follow for ``alphabet`` (computed once per alphabet)."""
        if alphabet not in self._grid_id_cache:
            rows = self.base.get_output_embeddings().weight.shape[0]
            self._grid_id_cache[alphabet] = grid_token_ids(self.tokenizer, alphabet, rows)
        return self._grid_id_cache[alphabet]

    def _cache_name(self) -> str:
        """The forward's KV-cache argument (and output field): transformers renamed
        past_key_values to cache in 5.2x; ask the model which it takes."""
        params = inspect.signature(type(self.base).forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _dfs_one(self, model: Any, r: Request) -> DFSResult:
        """One prompt's DFS on a KV cache: prefill once, then one token per expansion;
        when the walk backtracks the cache is cropped back to the node's depth."""
        walk = walk_for(r, self._grid_ids(r.grid_alphabet or "0123456789\n"))
        if r.deadline is not None and time.time() > r.deadline:
            return DFSResult(stopped="deadline")  # not even the prompt's forward
        index = torch.tensor(walk.allowed, dtype=torch.long, device=self.device)
        n_prompt = len(r.prompt_ids)
        ids = torch.tensor([r.prompt_ids], dtype=torch.long, device=self.device)
        name = self._cache_name()
        # no config: full layers, croppable past a sliding window (module docstring)
        cache = DynamicCache()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{name: cache})
        cache = getattr(out, name)
        walk.push(logprob_map(out.logits[0, -1].float().log_softmax(-1), walk.allowed, index))
        while (tok := walk.next()) is not None:
            check_cancel(self.cancel)
            # the cache must hold exactly prompt + prefix before tok
            crop_cache(cache, n_prompt + len(walk.prefix) - 1)
            step = torch.tensor([[tok]], dtype=torch.long, device=self.device)
            out = model(input_ids=step, use_cache=True, logits_to_keep=1, **{name: cache})
            walk.push(logprob_map(out.logits[0, -1].float().log_softmax(-1), walk.allowed, index))
        return walk.result()

    def _dfs(self, requests: Sequence[Request]) -> list[DFSResult]:
        """DFS requests one after another, grouped by adapter (each activated once)."""
        groups: dict[str | None, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.adapter, []).append(i)
        results: list[DFSResult] = [DFSResult() for _ in requests]
        for adapter, idx in groups.items():

            def go(model, idx=idx):
                with torch.inference_mode():
                    for i in idx:
                        results[i] = self._dfs_one(model, requests[i])

            self._run(adapter, go)
        for res in results:
            record_walk(self.stats, res)
        self.stats["sequences"] += sum(len(res.found) for res in results)
        return results

    def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        """Completions per request; groups by (adapter, n, temperature, stops), batches each.
        Requests with ``min_prob`` set are answered by depth-first search instead; their
        walks (``DFSResult``: nodes, stop reason) stay in ``dfs_results``, one per request
        (None for the others), until the next call."""
        t0 = time.monotonic()
        results: list[list[Completion] | None] = [None] * len(requests)
        self.dfs_results = [None] * len(requests)
        dfs = [i for i, r in enumerate(requests) if r.min_prob is not None]
        if dfs:
            for i, res in zip(dfs, self._dfs([requests[i] for i in dfs])):
                self.dfs_results[i] = res
                results[i] = to_completions(res, self.tokenizer, requests[i].stop_token_ids)
        if any(r.temperature > 0 for r in requests):
            torch.manual_seed(self.seed)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            if r.min_prob is not None:
                continue
            key = (r.adapter, r.n, r.temperature, tuple(r.stop_token_ids), r.grid_alphabet)
            groups.setdefault(key, []).append(i)
        for idx in groups.values():
            # similar lengths together: less padding
            idx = sorted(idx, key=lambda i: len(requests[i].prompt_ids))
            for s in range(0, len(idx), self.batch_size):
                part = idx[s : s + self.batch_size]
                for i, comps in zip(part, self._generate_batch([requests[i] for i in part])):
                    results[i] = comps
        self.stats["generate_s"] += time.monotonic() - t0
        return [r or [] for r in results]

    def _token_texts(self) -> list[str]:
        """Every token id's text, decoded once per backend. Ids past the tokenizer's (the
        model's table may have more rows) decode to nothing, in answers too."""
        if self._texts is None:
            n = len(self.tokenizer)
            rows = self.base.get_output_embeddings().weight.shape[0]
            self._texts = self.tokenizer.batch_decode([[i] for i in range(n)])
            self._texts += [""] * max(0, rows - n)
        return self._texts

    # -- scoring ----------------------------------------------------------------------

    def _score_batch(self, items: list[ScoreItem]) -> list[float]:
        check_cancel(self.cancel)
        seqs = [list(p) + list(a) for p, a, _ in items]
        ids, mask = self._left_pad(seqs)
        width = ids.shape[1]
        # Left padding puts every answer at the end: the last max(k) + 1 positions hold all
        # the logits any item needs (position p predicts token p + 1).
        keep = min(width, max(len(a) for _, a, _ in items) + 1)

        # positions count from each sequence's first real token, as in unpadded runs
        pos = (mask.cumsum(-1) - 1).clamp(min=0)

        def fwd(model):
            with torch.inference_mode():
                out = model(
                    input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep
                )
                return out.logits  # (B, keep, V)

        logits = self._run(items[0][2], fwd)
        out = []
        for i, (p, a, _) in enumerate(items):
            k = len(a)
            if not k:
                out.append(0.0)
                continue
            # fp32 log-softmax on this item's answer rows only (kept row j predicts token
            # width - keep + j + 1; with no prompt the first answer token has no row)
            lo = keep - k - min(1, len(p))
            logp = logits[i, lo : keep - 1].float().log_softmax(-1)
            target = ids[i, width - keep + lo + 1 :]
            out.append(float(logp.gather(-1, target.unsqueeze(-1)).sum()))
        return out

    def _vocab_size(self) -> int:
        head = self.base.get_output_embeddings()
        return int(head.weight.shape[0]) if head is not None else int(self.base.config.vocab_size)

    def _score_batches(self, idx: list[int], items: Sequence[ScoreItem]) -> list[list[int]]:
        """Consecutive runs of ``idx`` of at most ``batch_size`` items whose kept logits
        (items x (longest answer + 1) x vocab, counted in fp32) stay under the budget."""
        per_row = 4 * self._vocab_size()
        batches: list[list[int]] = []
        part: list[int] = []
        keep = 0  # the logits positions the current batch keeps
        for i in idx:
            k = len(items[i][1]) + 1
            wider = max(keep, k)
            full = len(part) == self.batch_size
            if part and (full or (len(part) + 1) * wider * per_row > self.max_logits_bytes):
                batches.append(part)
                part, wider = [], k
            part.append(i)
            keep = wider
        if part:
            batches.append(part)
        return batches

    def _score_shared(self, prompt: list[int], answers: list[list[int]], adapter) -> list[float]:
        """Several answers after one prompt: the prompt's forward runs once and its KV cache
        is repeated for each batch of answers (right-padded: causal attention keeps the
        padding out of every real position). Re-scoring asks every candidate under the
        same view prompt, so this saves all but one prompt forward per view."""
        check_cancel(self.cancel)
        name = self._cache_name()
        dev = self.device
        per_row = 4 * self._vocab_size()  # fp32 log-probs of one position

        def fwd(model):
            with torch.inference_mode():
                ids = torch.tensor([prompt], device=dev)
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                cache = getattr(out, name)
                first = out.logits[0, -1].float().log_softmax(-1)  # predicts each answer[0]
                scores = [float(first[a[0]]) if a else 0.0 for a in answers]
                rest = [i for i, a in enumerate(answers) if len(a) > 1]
                width = max((len(answers[i]) - 1 for i in rest), default=1)
                rows = int(self.max_logits_bytes // (width * per_row))
                rows = max(1, min(self.batch_size, rows))
                for s in range(0, len(rest), rows):
                    part = rest[s : s + rows]
                    w = max(len(answers[i]) for i in part) - 1
                    x = torch.full((len(part), w), self.pad_id, dtype=torch.long)
                    for j, i in enumerate(part):
                        x[j, : len(answers[i]) - 1] = torch.tensor(answers[i][:-1])
                    c = copy.deepcopy(cache)
                    c.batch_repeat_interleave(len(part))
                    logits = model(input_ids=x.to(dev), use_cache=True, **{name: c}).logits
                    logp = logits.float().log_softmax(-1)
                    for j, i in enumerate(part):
                        k = len(answers[i]) - 1
                        target = torch.tensor(answers[i][1:], device=dev).unsqueeze(-1)
                        scores[i] += float(logp[j, :k].gather(-1, target).sum())
                return scores

        return self._run(adapter, fwd)

    def score_many(self, items: Sequence[ScoreItem]) -> list[float]:
        """Sum of answer-token log-probs for each (prompt_ids, answer_ids, adapter). Items
        that share a prompt (and adapter) reuse its forward (``_score_shared``) when
        ``share_prefix``; the others go in padded batches."""
        t0 = time.monotonic()
        out = [0.0] * len(items)
        single = list(range(len(items)))
        if self.share_prefix:
            by_prompt: dict[tuple, list[int]] = {}
            for i, (p, _, ad) in enumerate(items):
                by_prompt.setdefault((ad, tuple(p)), []).append(i)
            single = []
            for (ad, p), idx in by_prompt.items():
                if len(idx) == 1 or not p:
                    single += idx
                    continue
                for i, v in zip(idx, self._score_shared(list(p), [items[i][1] for i in idx], ad)):
                    out[i] = v
        groups: dict[str | None, list[int]] = {}
        for i in single:
            groups.setdefault(items[i][2], []).append(i)
        for idx in groups.values():
            idx = sorted(idx, key=lambda i: len(items[i][0]) + len(items[i][1]))
            for part in self._score_batches(idx, items):
                for i, v in zip(part, self._score_batch([items[i] for i in part])):
                    out[i] = v
        self.stats["score_s"] += time.monotonic() - t0
        return out

    def score(self, prompt_ids: list[int], answer_ids: list[int], adapter: str | None) -> float:
        """log P(answer | prompt): one forward pass over prompt + answer."""
        return self.score_many([(prompt_ids, answer_ids, adapter)])[0]

    def close(self) -> None:
        """Drop the model references (the caller frees GPU memory with gc/empty_cache)."""
        self.model = None
        self.base = None
        self._adapters.clear()


class _OnCancel(StoppingCriteria):
    """Stops every sequence once the caller's cancel event is set."""

    def __init__(self, cancel: Any):
        self.cancel = cancel

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        stop = self.cancel.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _AnswerOver(StoppingCriteria):
    """Stops each sequence once its answer can no longer change what parsing returns
    (``encoding.answer_is_over``): a finished answer, or one that can never parse. The
    answers that come out are the same; a model that derails stops paying for it."""

    def __init__(self, token_texts: list[str], alphabet: str, end: str | None):
        self.texts, self.alphabet, self.end = token_texts, alphabet, end
        self.step = 0  # tokens generated so far
        self.answers: list[str] = []
        self.lengths: list[int | None] = []  # per row: tokens generated when it was over

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        self.step += 1
        if not self.answers:
            self.answers, self.lengths = [""] * len(last), [None] * len(last)
        for i, t in enumerate(last):
            if self.lengths[i] is not None:
                continue  # over: generate pads this row from here on
            self.answers[i] += self.texts[t] if t < len(self.texts) else ""
            if encoding.answer_is_over(self.answers[i], self.alphabet, self.end):
                self.lengths[i] = self.step
        done = [n is not None for n in self.lengths]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _StepLogprobs:
    """Records, during ``generate``, the raw log-probability of every chosen token.

    Hooks on the transformers model (under any peft wrapper): after each forward the last
    position's logits become log-probs (fp32, before any logits processor or temperature,
    as ``output_logits`` gave them); before the next forward, its input (the token just
    chosen) picks one value per row. Only one step's (rows, vocab) is held at a time,
    where ``output_logits`` kept every step's. Generated token t comes from forward t.
    """

    def __init__(self, model: Any):
        self.model = model
        self.pending: torch.Tensor | None = None  # (rows, V) log-probs of the last forward
        self.steps: list[torch.Tensor] = []  # per forward, the chosen token's log-prob
        self._hooks: list[Any] = []

    def __enter__(self) -> _StepLogprobs:
        self._hooks = [
            self.model.register_forward_pre_hook(self._before, with_kwargs=True),
            self.model.register_forward_hook(self._after),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _take(self, chosen: torch.Tensor) -> None:
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, chosen.view(-1, 1)).squeeze(-1))
            self.pending = None

    def _before(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and self.pending is not None:
            self._take(ids[:, -1].to(self.pending.device))

    def _after(self, module: Any, args: tuple, output: Any) -> None:
        self.pending = output.logits[:, -1].float().log_softmax(-1)

    def result(self, new: torch.Tensor) -> torch.Tensor:
        """(rows, T) log-probs of the generated ids ``new`` (rows, T)."""
        t = new.shape[1]
        if len(self.steps) < t and self.pending is not None:  # last token: known only now
            self._take(new[:, len(self.steps)].to(self.pending.device))
        if not self.steps:
            return torch.zeros(new.shape, dtype=torch.float32)
        return torch.stack(self.steps[:t], dim=1)


def crop_cache(cache: Any, length: int) -> None:
    """Drop the cached positions past ``length`` (DFS backtracking). transformers 5's
    ``crop`` takes the number of positions to remove, as a negative int. The cache must
    have full layers: a sliding-window layer past its window has dropped what it would
    need (``_dfs_one`` builds it so)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)
