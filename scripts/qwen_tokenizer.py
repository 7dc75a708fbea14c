"""Build the real Qwen2 / Qwen2.5 tokenizer offline, for realistic token counts.

    pip install dashscope          # optional; ships the BPE ranks as resources/qwen.tiktoken
    python scripts/qwen_tokenizer.py --out /tmp/qwen2-tokenizer [--ranks PATH]
    arc-ttft tokens --challenges arc1-eval --format digits --tokenizer /tmp/qwen2-tokenizer

``qwen.tiktoken`` lists every regular token (151,643 of them) as ``base64(bytes) rank``.
A byte-level BPE needs merges, not ranks: the merge that creates a token is found by
running BPE on the token's own bytes with only the lower ranks allowed, which leaves
exactly two parts. Bytes map to printable characters with the usual byte-level table
(GPT-2 style), the pre-tokenizer is Qwen2's regex (every digit its own piece), and the
special tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` take ids 151643+.

The result is saved as a ``Qwen2Tokenizer`` with a plain ChatML chat template (no
system prompt) and ``<|im_end|>`` as eos, like the instruct models. The script checks
itself: ids equal tiktoken's (when installed) on sample strings, decode(encode(s)) == s,
and a digit grid of H rows and W columns costs H x (W + 1) tokens.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import sys
from pathlib import Path

from arc_ttft.encoding import QWEN2_PATTERN

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def default_ranks_path() -> Path:
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "qwen_tokenizer: dashscope is not installed; `pip install dashscope` or pass "
            "--ranks PATH/qwen.tiktoken"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"


def read_ranks(path: Path) -> dict[bytes, int]:
    """``base64 rank`` lines -> {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    if len(ranks) < 1000:
        raise SystemExit(
            f"qwen_tokenizer: {path} has only {len(ranks)} tokens; is it qwen.tiktoken?"
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


def build(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges (in rank order) equal to the tiktoken ranks.

    Qwen2Tokenizer supplies the rest (NFC, Qwen2's split regex, byte-level decoding);
    ``check`` compares the result with tiktoken itself.
    """
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


def save(vocab: dict[str, int], merges: list[tuple[str, str]], out: Path, eos: str):
    from transformers import AddedToken, Qwen2Tokenizer

    # Special tokens sit in the vocabulary right after the regular ones, so their ids
    # are 151643+ in this order whatever order transformers registers them in.
    vocab = {**vocab, **{s: len(vocab) + i for i, s in enumerate(SPECIALS)}}
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token=eos,
        pad_token="<|endoftext|>",
    )
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                AddedToken(s, special=True, normalized=False) for s in SPECIALS
            ]
        }
    )
    tok.chat_template = CHATML
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    return tok


def check(folder: Path, ranks_path: Path) -> list[str]:
    """Problems found (empty when the tokenizer behaves like Qwen2's)."""
    from transformers import AutoTokenizer

    problems = []
    loaded = AutoTokenizer.from_pretrained(str(folder))
    for i, s in enumerate(SPECIALS):
        got = loaded.convert_tokens_to_ids(s)
        if got != 151643 + i:
            problems.append(f"{s} has id {got}, expected {151643 + i}")
    samples = [
        "0120\n1201\n0000",
        "Find the rule that maps each input grid to its output grid.\ninput:\n3x4\n1 0120\n",
        "Hello, world! It's 2024; naïve café — 東京 🚀\n\n\n  spaced   out\t tabs",
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
    if importlib.util.find_spec("tiktoken"):
        import tiktoken

        enc = tiktoken.Encoding(
            "qwen", pat_str=QWEN2_PATTERN, mergeable_ranks=read_ranks(ranks_path), special_tokens={}
        )
        for s in samples[:3]:
            a = enc.encode(s)
            b = loaded(s, add_special_tokens=False)["input_ids"]
            if a != b:
                problems.append(f"ids differ from tiktoken on {s!r}: {a[:12]} vs {b[:12]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="Folder to write the tokenizer to.")
    ap.add_argument("--ranks", default=None, help="qwen.tiktoken (default: dashscope's copy).")
    ap.add_argument(
        "--eos",
        default="<|im_end|>",
        choices=["<|im_end|>", "<|endoftext|>"],
        help="eos token: <|im_end|> like the instruct models, <|endoftext|> like the base ones.",
    )
    args = ap.parse_args(argv)
    path = Path(args.ranks) if args.ranks else default_ranks_path()
    ranks = read_ranks(path)
    vocab, merges = build(ranks)
    out = Path(args.out)
    save(vocab, merges, out, args.eos)
    problems = check(out, path)
    for p in problems:
        print("problem:", p, file=sys.stderr)
    print(f"wrote {out}: {len(vocab)} tokens, {len(merges)} merges, {len(SPECIALS)} special tokens")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
