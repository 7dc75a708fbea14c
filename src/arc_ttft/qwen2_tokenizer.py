"""The real Qwen2 / Qwen2.5 / Qwen3 tokenizer, built offline.

The PyPI package ``dashscope`` ships Qwen's BPE ranks (``resources/qwen.tiktoken``);
``qwen2_tokenizer_folder`` turns them into a transformers tokenizer folder (cached) and
``qwen2_tokenizer_for`` picks it for a Qwen-family registry model, so random-weight runs
count and train on real token ids without a hub. ``scripts/qwen_tokenizer.py`` builds it
by hand; ``check_qwen2_tokenizer`` compares it with tiktoken on sample texts.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from arc_ttft import encoding

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
        raise ValueError(
            f"qwen2_tokenizer: {path} has only {len(ranks)} tokens; is it qwen.tiktoken?"
        )
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
        raise ValueError(f"qwen2_tokenizer: eos {eos!r} must be one of {', '.join(QWEN2_EOS)}")
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
    from arc_ttft.tiny import cache_root

    if eos not in QWEN2_EOS:
        raise ValueError(f"qwen2_tokenizer: eos {eos!r} must be one of {', '.join(QWEN2_EOS)}")
    root = cache_root(cache_dir)
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
    from arc_ttft.registry import find_candidate

    cand = find_candidate(model)
    if cand is None or cand.name == "tiny" or cand.config.get("model_type") not in QWEN_TYPES:
        return None
    eos = "<|im_end|>" if cand.config.get("eos_token_id") == 151645 else "<|endoftext|>"
    return qwen2_tokenizer_folder(eos, cache_dir)
