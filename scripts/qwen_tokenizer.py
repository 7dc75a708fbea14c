"""Build the real Qwen2 / Qwen2.5 tokenizer offline, for realistic token counts.

    pip install dashscope          # in requirements.txt; ships the BPE ranks as resources/qwen.tiktoken
    python scripts/qwen_tokenizer.py --out /tmp/qwen2-tokenizer [--ranks PATH]
    arc-ttft tokens --challenges arc1-eval --format digits --tokenizer /tmp/qwen2-tokenizer

    # or into the arc-ttft cache, where random-weight runs of Qwen2 models look for it
    # (arc_ttft.qwen2_tokenizer); copy that cache to an offline machine to take it along:
    ARC_TTFT_CACHE=DIR python scripts/qwen_tokenizer.py --cache

The builder lives in ``arc_ttft.qwen2_tokenizer`` (``qwen2_bpe``, ``save_qwen2_tokenizer``,
``check_qwen2_tokenizer``, ``qwen2_tokenizer_folder``); this is its command line. The
result is a ``Qwen2Tokenizer`` with a plain ChatML chat template (no system prompt),
special tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` at ids 151643+, and
``<|im_end|>`` as eos like the instruct models (``--eos`` to change). The script checks
itself: ids equal tiktoken's (when installed) on sample strings, decode(encode(s)) == s,
and a digit grid of H rows and W columns costs H x (W + 1) tokens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arc_ttft import qwen2_tokenizer as Q

# The names arc_ttft.research.ttt_speed loads this file for (kept as aliases of the library's).
SPECIALS = Q.QWEN2_SPECIALS
CHATML = Q.QWEN2_CHATML
byte_alphabet = Q.byte_alphabet
recover_merge = Q.recover_merge
build = Q.qwen2_bpe
save = Q.save_qwen2_tokenizer
check = Q.check_qwen2_tokenizer


def default_ranks_path() -> Path:
    path = Q.qwen2_ranks_path()
    if path is None:
        raise SystemExit(
            "qwen_tokenizer: dashscope is not installed; `pip install dashscope` or pass "
            "--ranks PATH/qwen.tiktoken"
        )
    return path


def read_ranks(path: Path) -> dict[bytes, int]:
    try:
        return Q.read_tiktoken_ranks(path)
    except ValueError as e:
        raise SystemExit(f"qwen_tokenizer: {e}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="Folder to write the tokenizer to.")
    where.add_argument(
        "--cache",
        action="store_true",
        help="Build into the arc-ttft cache ($ARC_TTFT_CACHE) under the name "
        "qwen2_tokenizer.qwen2_tokenizer_folder uses (no-op when already there).",
    )
    ap.add_argument("--ranks", default=None, help="qwen.tiktoken (default: dashscope's copy).")
    ap.add_argument(
        "--eos",
        default=None,
        choices=list(Q.QWEN2_EOS),
        help="eos token: <|im_end|> like the instruct models (default with --out), "
        "<|endoftext|> like the base ones. --cache builds both unless given.",
    )
    args = ap.parse_args(argv)
    path = Path(args.ranks) if args.ranks else default_ranks_path()
    if args.cache:
        if args.ranks:
            raise SystemExit("qwen_tokenizer: --cache uses dashscope's ranks; drop --ranks")
        problems = []
        for eos in [args.eos] if args.eos else list(Q.QWEN2_EOS):
            folder = Q.qwen2_tokenizer_folder(eos)
            problems += Q.check_qwen2_tokenizer(folder, path)
            print(f"cached {folder} (eos {eos})")
    else:
        vocab, merges = build(read_ranks(path))
        out = Path(args.out)
        save(vocab, merges, out, args.eos or "<|im_end|>")
        problems = check(out, path)
        print(f"wrote {out}: {len(vocab)} tokens, {len(merges)} merges, {len(SPECIALS)} specials")
    for p in problems:
        print("problem:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
