"""Vocabulary shrinking: keep only the tokens ARC prompts can contain.

A Qwen2 model has 151,936 token rows; an ARC prompt uses a few dozen of them (digits,
newline, space, ``x``, the prompt's words, the chat markers). The ``151,936 x hidden``
output layer and the full-vocabulary logits then dominate memory and a good part of the
time of every step at long lengths. Shrinking slices the embedding and output rows down
to the kept tokens and rebuilds the tokenizer over them, so that:

- every prompt text the encoding can produce tokenizes to the same pieces as before,
  with ids mapped through ``VocabMap`` (old id -> new id, order kept);
- the shrunk model's logits equal the original logits restricted to the kept ids (the
  softmax normaliser is the only change: it sums over the kept tokens only);
- the result is an ordinary model folder (safetensors + tokenizer) that transformers and
  vLLM load as is, with ``vocab_size``, eos/pad/bos and the generation config re-numbered.

Which tokens: everything that tokenising ``prompt_corpus`` (prompts in every format,
built with the tokenizer's chat template and eos, grids of every height and width up to
30, every digit) yields, all added/special tokens, then the closure under the BPE merges
(the parts every kept token is merged from). Merges are kept when both parts and the
result are kept. Because BPE applies merges in rank order and the pruned list still holds
every merge the original used on those words, the pruned tokenizer takes exactly the same
steps. ``shrink`` checks this on a held-out corpus and raises when it does not hold (a
tokenizer that merges digit runs, like GPT-2's, cannot be shrunk this way).

Entry points: ``shrink(model, tokenizer)`` in memory, ``shrink_model(src, out)`` to a
folder, ``load_shrunk(cfg)`` for the pipeline (what ``ModelConfig.shrink_vocab`` asks for).
LoRA adapters trained on a shrunk model belong to that shrunk model: serve them with it.
The real Qwen2 tokenizer, built offline for random-weight runs, is ``qwen2_tokenizer``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arc_ttft import encoding

SHRINK_VERSION = "v1"
MAP_FILE = "vocab_map.json"
MAX_SIDE = 30  # ARC grids are at most 30 x 30


# ---------------------------------------------------------------------------------------
# The id map
# ---------------------------------------------------------------------------------------


@dataclass
class VocabMap:
    """Old token id <-> new token id. ``kept[new_id] == old_id`` (ascending old ids)."""

    kept: list[int]
    old_size: int

    def __post_init__(self) -> None:
        self._new = {old: new for new, old in enumerate(self.kept)}

    @property
    def size(self) -> int:
        return len(self.kept)

    def to_new(self, ids: Iterable[int]) -> list[int]:
        """Map old ids to new ids; an id that was not kept raises KeyError naming it."""
        out = []
        for i in ids:
            if i not in self._new:
                raise KeyError(f"token id {i} is not in the shrunk vocabulary ({self.size} kept)")
            out.append(self._new[i])
        return out

    def to_old(self, ids: Iterable[int]) -> list[int]:
        return [self.kept[i] for i in ids]

    def has(self, old_id: int) -> bool:
        return old_id in self._new

    def to_dict(self) -> dict[str, Any]:
        return {"version": SHRINK_VERSION, "old_size": self.old_size, "kept": self.kept}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VocabMap:
        return cls(list(d["kept"]), int(d["old_size"]))


# ---------------------------------------------------------------------------------------
# Which tokens
# ---------------------------------------------------------------------------------------


def _grid(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 10, size=(h, w)).astype(np.int8)


def prompt_corpus(
    tokenizer, formats: Sequence[str] | None = None, n: int = 12, seed: int = 0
) -> list[str]:
    """Texts covering everything a prompt or answer in ``formats`` can contain.

    Prompts and answers built with ``tokenizer`` (its chat template and eos) and without
    one (plain layout, fallback end marker), grids of every height and width 1..30 in
    each format, and all ten digits.
    """
    formats = list(formats or encoding.FORMATS)
    rng = np.random.default_rng(seed)
    texts = list(encoding.sample_corpus(n=2 * n, seed=seed)) + [
        "0123456789",
        "\n".join("0123456789"),
    ]
    for fmt in formats:
        render = encoding.get_format(fmt).render
        # Every height (row numbers) and width (shape header) once, values random.
        for k in range(1, MAX_SIDE + 1):
            texts.append(render(_grid(rng, k, MAX_SIDE + 1 - k)))
            texts.append(render(_grid(rng, k, k)))
        for i in range(n):
            h, w = (int(x) for x in rng.integers(1, 12, size=2))
            grids = [_grid(rng, h, w) for _ in range(6)]
            examples = [(grids[0], grids[1]), (grids[2], grids[3])][: 1 + i % 2]
            for tok in (tokenizer, None):
                p = encoding.build_prompt(examples, grids[4], fmt, tok, answer=grids[5])
                texts += [p.text, p.answer or "", p.text + (p.answer or "")]
    return [t for t in texts if t]


def _bpe_state(tokenizer) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"vocab: {type(tokenizer).__name__} has no fast (tokenizers) backend; vocabulary "
            "shrinking needs a byte-level BPE tokenizer such as Qwen2's"
        )
    state = json.loads(backend.to_str())
    if state.get("model", {}).get("type") != "BPE":
        raise ValueError(
            f"vocab: tokenizer model is {state.get('model', {}).get('type')!r}; vocabulary "
            "shrinking supports BPE tokenizers only (Qwen2, Llama-3, SmolLM)"
        )
    return state


def _merge_pair(m: Any) -> tuple[str, str]:
    if isinstance(m, str):
        a, b = m.split(" ", 1)
        return a, b
    return m[0], m[1]


def kept_token_ids(
    tokenizer,
    formats: Sequence[str] | None = None,
    texts: Iterable[str] | None = None,
) -> list[int]:
    """Ascending ids of the tokens to keep: what ``texts`` (default: ``prompt_corpus``)
    tokenize to, every added/special token, closed under the BPE merges."""
    state = _bpe_state(tokenizer)
    vocab: dict[str, int] = state["model"]["vocab"]
    texts = list(texts) if texts is not None else prompt_corpus(tokenizer, formats)
    ids: set[int] = set()
    for ids_ in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.update(ids_)
    ids.update(int(t["id"]) for t in state.get("added_tokens", []))
    ids.update(i for i in tokenizer.all_special_ids if i is not None)
    # Every all-digit token: Llama 3's tokenizer (Llama 3.2, SmolLM3) cuts digit runs into
    # groups of up to three, so a grid row can need any of its 1,110 digit tokens, not
    # just those the corpus happened to produce. Digit-per-token tokenizers have ten.
    ids.update(i for s, i in vocab.items() if s.isascii() and s.isdigit())
    # Closure: a kept token needs the tokens it is merged from, or the pruned BPE could
    # not rebuild it.
    made_from: dict[str, list[tuple[str, str]]] = {}
    for m in state["model"]["merges"]:
        a, b = _merge_pair(m)
        made_from.setdefault(a + b, []).append((a, b))
    inverse = {i: s for s, i in vocab.items()}
    todo = [inverse[i] for i in ids if i in inverse]
    seen = set(todo)
    while todo:
        s = todo.pop()
        for a, b in made_from.get(s, []):
            for part in (a, b):
                if part not in seen and part in vocab:
                    seen.add(part)
                    ids.add(vocab[part])
                    todo.append(part)
    return sorted(ids)


# ---------------------------------------------------------------------------------------
# Tokenizer and model surgery
# ---------------------------------------------------------------------------------------


def shrink_tokenizer(tokenizer, vmap: VocabMap):
    """A copy of ``tokenizer`` over the kept tokens only, re-numbered 0..K-1.

    Vocabulary and added tokens are re-numbered through ``vmap``; merges are kept when
    both parts and the result are kept. Normaliser, pre-tokenizer and decoder are as
    before. ``vmap.kept`` must be closed under the merges (``kept_token_ids`` is).
    """
    from tokenizers import Tokenizer

    state = _bpe_state(tokenizer)
    model = state["model"]
    new_vocab = {s: vmap._new[i] for s, i in model["vocab"].items() if vmap.has(i)}
    model["vocab"] = new_vocab
    model["merges"] = [
        list(p)
        for p in map(_merge_pair, model["merges"])
        if p[0] in new_vocab and p[1] in new_vocab and p[0] + p[1] in new_vocab
    ]
    added = []
    for t in state.get("added_tokens", []):
        if vmap.has(int(t["id"])):
            added.append({**t, "id": vmap._new[int(t["id"])]})
    state["added_tokens"] = added
    # A template post-processor may name special-token ids (e.g. a bos it adds).
    _remap_post_processor(state.get("post_processor"), vmap)
    backend = Tokenizer.from_str(json.dumps(state))
    new = copy.deepcopy(tokenizer)
    new._tokenizer = backend
    for attr in ("_vocab", "_merges"):  # Qwen2Tokenizer keeps its build inputs around
        if hasattr(new, attr):
            setattr(new, attr, new_vocab if attr == "_vocab" else model["merges"])
    return new


def _remap_post_processor(pp: Any, vmap: VocabMap) -> None:
    if isinstance(pp, dict):
        if "special_tokens" in pp and isinstance(pp["special_tokens"], dict):
            for spec in pp["special_tokens"].values():
                if isinstance(spec, dict) and "ids" in spec:
                    spec["ids"] = vmap.to_new(spec["ids"])
        for v in pp.values():
            if isinstance(v, (dict, list)):
                _remap_post_processor(v, vmap)
    elif isinstance(pp, list):
        for v in pp:
            _remap_post_processor(v, vmap)


def shrink_embeddings(model, vmap: VocabMap) -> None:
    """Slice the input embedding and output rows (tied or not, bias too) to ``vmap.kept``,
    in place, and re-number the config's and generation config's special ids.

    The modules stay (only their weights are cut), so a family's own embedding class
    keeps its behaviour: Gemma 3 multiplies embeddings by sqrt(hidden) in its forward.
    """
    import torch

    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if emb.weight.shape[0] <= max(vmap.kept):
        raise ValueError(
            f"vocab: token id {max(vmap.kept)} is outside the model's {emb.weight.shape[0]} "
            "embedding rows; the tokenizer does not belong to this model"
        )
    tied = head is not None and head.weight is emb.weight
    idx = torch.tensor(vmap.kept, dtype=torch.long, device=emb.weight.device)

    def cut(param):
        return torch.nn.Parameter(
            param.detach().index_select(0, idx).clone(), requires_grad=param.requires_grad
        )

    with torch.no_grad():
        emb.weight = cut(emb.weight)
        emb.num_embeddings = vmap.size
        emb.padding_idx = None  # an old id; LoRA never trains the embedding anyway
        if head is not None:
            head.weight = emb.weight if tied else cut(head.weight)
            if getattr(head, "bias", None) is not None:
                head.bias = cut(head.bias)
            head.out_features = vmap.size
    model.config.vocab_size = vmap.size
    for m in (model, getattr(model, "model", None)):
        if m is not None and hasattr(m, "vocab_size"):
            m.vocab_size = vmap.size
    _remap_special_ids(model.config, vmap)
    if getattr(model, "generation_config", None) is not None:
        _remap_special_ids(model.generation_config, vmap)


def _remap_special_ids(cfg, vmap: VocabMap) -> None:
    for key in ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id"):
        v = getattr(cfg, key, None)
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            kept = [vmap._new[i] for i in v if vmap.has(i)]
            setattr(cfg, key, kept or None)
        else:
            setattr(cfg, key, vmap._new.get(int(v)))


def check_tokenizer(old, new, vmap: VocabMap, texts: Iterable[str]) -> list[str]:
    """Problems (empty when fine): texts whose new ids differ from the mapped old ids, or
    that decode differently."""
    problems = []
    texts = list(texts)
    old_ids = old(texts, add_special_tokens=False)["input_ids"]
    new_ids = new(texts, add_special_tokens=False)["input_ids"]
    for text, a, b in zip(texts, old_ids, new_ids):
        try:
            mapped = vmap.to_new(a)
        except KeyError as e:
            problems.append(f"{text[:40]!r}: {e}")
            continue
        if mapped != list(b):
            i = next(
                (k for k, (x, y) in enumerate(zip(mapped, b)) if x != y), min(len(mapped), len(b))
            )
            problems.append(
                f"{text[:40]!r}: ids differ from position {i} "
                f"(old {vmap.to_old(mapped[i : i + 4])} vs new {vmap.to_old(list(b)[i : i + 4])})"
            )
        elif new.decode(b) != old.decode(a):
            problems.append(f"{text[:40]!r}: decodes differently")
    return problems


def shrink(model, tokenizer, formats: Sequence[str] | None = None, check: bool = True):
    """Shrink ``model`` (in place) and ``tokenizer`` (a copy) to the prompt vocabulary.

    Returns (model, new_tokenizer, vmap). With ``check``, the new tokenizer is compared
    with the old on a held-out corpus (other seed) and a ValueError lists any mismatch.
    """
    rows = int(model.get_input_embeddings().weight.shape[0])
    vmap = VocabMap(kept_token_ids(tokenizer, formats), rows)
    new_tok = shrink_tokenizer(tokenizer, vmap)
    if check:
        problems = check_tokenizer(
            tokenizer, new_tok, vmap, prompt_corpus(tokenizer, formats, n=6, seed=12345)
        )
        if problems:
            raise ValueError(
                "vocab: the shrunk tokenizer tokenizes prompts differently (does this tokenizer "
                "split digits one per token?): " + "; ".join(problems[:5])
            )
    shrink_embeddings(model, vmap)
    return model, new_tok, vmap


def save_shrunk(model, tokenizer, vmap: VocabMap, out: str | Path, source: str = "") -> Path:
    """Write an ordinary model folder (safetensors, config, generation config, tokenizer)
    plus ``vocab_map.json``; into a temporary folder first, then renamed into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MAP_FILE).write_text(json.dumps({**vmap.to_dict(), "source": source}) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def shrink_model(
    src,
    out_folder: str | Path,
    formats: Sequence[str] | None = None,
    tokenizer=None,
) -> Path:
    """Shrink a model folder, registry name or model object and save it to ``out_folder``.

    ``src`` may be a loaded model (then ``tokenizer`` is required) or anything
    ``models.resolve_model_path`` finds. The folder loads with AutoModelForCausalLM and
    AutoTokenizer (and vLLM) as is.
    """
    if isinstance(src, (str, Path)):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from arc_ttft import models

        path = models.resolve_model_path(str(src))
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto", use_safetensors=True)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        source = str(path)
    else:
        if tokenizer is None:
            raise ValueError("shrink_model: a model object needs its tokenizer (tokenizer=...)")
        model, source = src, getattr(getattr(src, "config", None), "_name_or_path", "") or ""
    model, new_tok, vmap = shrink(model, tokenizer, formats)
    return save_shrunk(model, new_tok, vmap, out_folder, source)


def read_map(folder: str | Path) -> VocabMap:
    """The VocabMap saved with a shrunk folder."""
    f = Path(folder) / MAP_FILE
    if not f.is_file():
        raise FileNotFoundError(f"vocab: {f} not found; {folder} is not a shrunk model folder")
    return VocabMap.from_dict(json.loads(f.read_text()))


# ---------------------------------------------------------------------------------------
# For the pipeline
# ---------------------------------------------------------------------------------------


def shrunk_folder(cfg, formats: Sequence[str] | None = None) -> Path:
    """The shrunk copy of ``cfg.model`` in the cache (built on first use), for the
    inference engine and for ``load_shrunk``. Named by a hash of source and formats."""
    from arc_ttft import models

    formats = list(formats or encoding.FORMATS)
    base = dataclasses.replace(cfg, shrink_vocab=False) if hasattr(cfg, "shrink_vocab") else cfg
    if cfg.random_weights:
        # Random weights borrow a tokenizer (the tiny one, or the offline Qwen2 one when
        # dashscope is installed): which one decides the kept ids, so it is in the key.
        tok = models.load_tokenizer(base)
        tok_id = [str(getattr(tok, "name_or_path", "")), len(tok)]
        rope = getattr(cfg, "rope_scaling", None)  # baked into the saved random weights
        key = json.dumps([SHRINK_VERSION, "random", cfg.model, cfg.dtype, formats, tok_id, rope])
    else:
        src = models.resolve_model_path(cfg.model)
        stamp = [(p.name, p.stat().st_size) for p in sorted(src.glob("*.safetensors"))]
        key = json.dumps([SHRINK_VERSION, str(src), stamp, formats])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    final = models.cache_root(None) / f"shrunk-{Path(cfg.model).name}-{digest}"
    if (final / MAP_FILE).is_file():
        return final
    if cfg.random_weights:
        model, tok = models.load_model(dataclasses.replace(base, int4=False), device="cpu")
        model, tok, vmap = shrink(model, tok, formats)
        return save_shrunk(model, tok, vmap, final, f"random:{cfg.model}")
    return shrink_model(cfg.model, final, formats)


def load_shrunk(cfg, device: Any = None, for_training: bool = False, formats=None):
    """(model, tokenizer) like ``models.load_model``, with the vocabulary shrunk.

    Random weights (without int4) are shrunk in memory; everything else goes through the
    cached folder of ``shrunk_folder`` (so 4-bit loading and vLLM see the same weights).
    """
    from arc_ttft import models

    base = dataclasses.replace(cfg, shrink_vocab=False) if hasattr(cfg, "shrink_vocab") else cfg
    if cfg.random_weights and not cfg.int4:
        model, tok = models.load_model(base, device=device, for_training=for_training)
        model, tok, _ = shrink(model, tok, formats)
        return model, tok
    folder = shrunk_folder(cfg, formats)
    return models.load_model(
        dataclasses.replace(base, model=str(folder), random_weights=False),
        device=device,
        for_training=for_training,
    )
