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

Also here: the real Qwen2 / Qwen2.5 tokenizer built offline from the BPE ranks that the
PyPI package ``dashscope`` ships (``qwen2_tokenizer_folder``, ``qwen2_tokenizer_for``), so
random-weight runs of Qwen2 models can count and train on real token ids without a hub.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import importlib.util
import json
import os
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


# ---------------------------------------------------------------------------------------
# The real Qwen2 tokenizer, built offline (dashscope's BPE ranks)
# ---------------------------------------------------------------------------------------
#
# ``qwen.tiktoken`` lists every regular token (151,643 of them) as ``base64(bytes) rank``.
# A byte-level BPE needs merges, not ranks: the merge that creates a token is found by
# running BPE on the token's own bytes with only the lower ranks allowed, which leaves
# exactly two parts. Bytes map to printable characters with the byte-level table (GPT-2
# style); Qwen2Tokenizer adds NFC, Qwen2's split regex (every digit its own piece) and
# byte-level decoding. Special tokens take ids 151643+ like the real ones.

QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN2_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN2_EOS = {"<|endoftext|>": "endoftext", "<|im_end|>": "im_end"}  # eos -> cache suffix
QWEN_TYPES = ("qwen2", "qwen3")  # model types whose tokenizer this is


def qwen2_ranks_path() -> Path | None:
    """dashscope's ``resources/qwen.tiktoken``, or None when dashscope is not installed."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"
    return path if path.is_file() else None


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """``base64 rank`` lines -> {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    if len(ranks) < 1000:
        raise ValueError(f"vocab: {path} has only {len(ranks)} tokens; is it qwen.tiktoken?")
    return ranks


def byte_alphabet() -> dict[int, str]:
    """Byte -> printable character: printable Latin-1 bytes map to themselves, the rest
    to code points from 256 up, in byte order (the byte-level BPE convention)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def recover_merge(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The pair merged last when BPE builds ``token`` using only ranks below its own."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while True:
        best, best_rank = None, limit
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best is None:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {limit}) does not split into one merge: {parts}")
    return parts[0], parts[1]


def qwen2_bpe(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges (in rank order) equal to the tiktoken ranks."""
    table = byte_alphabet()

    def text(b: bytes) -> str:
        return "".join(table[x] for x in b)

    vocab = {text(t): r for t, r in ranks.items()}
    merges = []
    for tok, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) > 1:
            a, b = recover_merge(tok, ranks)
            merges.append((text(a), text(b)))
    return vocab, merges


def save_qwen2_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], out: str | Path, eos: str
):
    """Save a Qwen2Tokenizer (ChatML template, pad ``<|endoftext|>``) to ``out``."""
    from transformers import AddedToken, Qwen2Tokenizer

    if eos not in QWEN2_EOS:
        raise ValueError(f"vocab: eos {eos!r} must be one of {', '.join(QWEN2_EOS)}")
    # Special tokens sit in the vocabulary right after the regular ones, so their ids
    # are 151643+ in this order whatever order transformers registers them in.
    vocab = {**vocab, **{s: len(vocab) + i for i, s in enumerate(QWEN2_SPECIALS)}}
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token=eos,
        pad_token="<|endoftext|>",
        model_max_length=32768,  # the real Qwen2 tokenizers' value
    )
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                AddedToken(s, special=True, normalized=False) for s in QWEN2_SPECIALS
            ]
        }
    )
    tok.chat_template = QWEN2_CHATML
    Path(out).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    return tok


def check_qwen2_tokenizer(folder: str | Path, ranks_path: str | Path | None = None) -> list[str]:
    """Problems found (empty when the tokenizer in ``folder`` behaves like Qwen2's):
    special ids, round trips, H x (W + 1) tokens per digit grid, and ids equal to
    tiktoken's on sample strings (when tiktoken and the ranks are at hand)."""
    from transformers import AutoTokenizer

    problems = []
    loaded = AutoTokenizer.from_pretrained(str(folder))
    for i, s in enumerate(QWEN2_SPECIALS):
        got = loaded.convert_tokens_to_ids(s)
        if got != 151643 + i:
            problems.append(f"{s} has id {got}, expected {151643 + i}")
    samples = [
        "0120\n1201\n0000",
        "Find the rule that maps each input grid to its output grid.\ninput:\n3x4\n1 0120\n",
        "Hello, world! It's 2024; na\u00efve caf\u00e9 \u2014 \u6771\u4eac \U0001f680\n\n\n"
        "  spaced   out\t tabs",
        "<|im_start|>user\n01\n<|im_end|>\n<|im_start|>assistant\noutput:\n",
    ]
    for s in samples:
        ids = loaded(s, add_special_tokens=False)["input_ids"]
        if loaded.decode(ids) != s:
            problems.append(f"round trip changed {s!r} -> {loaded.decode(ids)!r}")
    for h, w in [(1, 1), (3, 4), (30, 30), (7, 19)]:
        grid = "\n".join("".join(str((r * 7 + c) % 10) for c in range(w)) for r in range(h)) + "\n"
        n = len(loaded(grid, add_special_tokens=False)["input_ids"])
        if n != h * (w + 1):
            problems.append(f"{h}x{w} digit grid costs {n} tokens, expected {h * (w + 1)}")
    ranks_path = ranks_path or qwen2_ranks_path()
    if ranks_path is not None and importlib.util.find_spec("tiktoken"):
        import tiktoken

        enc = tiktoken.Encoding(
            "qwen",
            pat_str=encoding.QWEN2_PATTERN,
            mergeable_ranks=read_tiktoken_ranks(ranks_path),
            special_tokens={},
        )
        for s in samples[:3]:
            a = enc.encode(s)
            b = loaded(s, add_special_tokens=False)["input_ids"]
            if a != b:
                problems.append(f"ids differ from tiktoken on {s!r}: {a[:12]} vs {b[:12]}")
    return problems


def qwen2_tokenizer_folder(eos: str = "<|endoftext|>", cache_dir: str | Path | None = None):
    """The offline Qwen2 tokenizer's folder in the arc-ttft cache, built on first use
    (about 10 s): ``<cache>/qwen2-tokenizer-endoftext`` (base models' eos) or
    ``qwen2-tokenizer-im_end`` (instruct models'). None when it is not cached and
    dashscope is not installed. The cache is ``$ARC_TTFT_CACHE`` (default
    ~/.cache/arc-ttft), so a prebuilt folder can travel to an offline machine."""
    from arc_ttft import models

    if eos not in QWEN2_EOS:
        raise ValueError(f"vocab: eos {eos!r} must be one of {', '.join(QWEN2_EOS)}")
    root = models.cache_root(cache_dir)
    final = root / f"qwen2-tokenizer-{QWEN2_EOS[eos]}"
    if (final / "tokenizer_config.json").is_file():
        return final
    ranks_path = qwen2_ranks_path()
    if ranks_path is None:
        return None
    vocab, merges = qwen2_bpe(read_tiktoken_ranks(ranks_path))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".qwen2-tok-", dir=root))
    try:
        save_qwen2_tokenizer(vocab, merges, tmp, eos)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        tmp.rename(final)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "tokenizer_config.json").is_file():
            raise
    return final


def qwen2_tokenizer_for(model: str, cache_dir: str | Path | None = None):
    """The offline Qwen2 tokenizer folder for a registry Qwen2 / Qwen2.5 / Qwen3 model
    (eos as its config says: <|endoftext|> for base models, <|im_end|> for instruct ones),
    or None (not such a model, or dashscope missing). For random-weight runs without the
    real tokenizer on disk; Qwen2.5's and Qwen3's extra special tokens (tools, vision,
    <think>) are absent, regular text tokenizes to the same ids (Qwen3 kept the vocabulary)."""
    from arc_ttft import models

    cand = models.find_candidate(model)
    if cand is None or cand.name == "tiny" or cand.config.get("model_type") not in QWEN_TYPES:
        return None
    eos = "<|im_end|>" if cand.config.get("eos_token_id") == 151645 else "<|endoftext|>"
    return qwen2_tokenizer_folder(eos, cache_dir)
