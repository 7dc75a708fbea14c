"""Grids as text: formats, prompts, answer parsing and token accounting.

Formats (``FORMATS``):

- ``digits``: one character per cell, rows separated by ``\\n``. Qwen2's pre-tokenizer
  splits every digit into its own token and a newline is one token, so a grid costs
  H x (W + 1) tokens, the lower bound for a cell-by-cell text encoding.
- ``shaped``: a shape header ``HxW`` then each row prefixed with its 1-based row number
  and a space (``3x4`` / ``1 0120`` / ``2 1201`` / ``3 0000``). The header tells the
  model the output size before it writes a cell, and the row numbers let it keep count
  in tall grids; the 2024 ARC Prize reference solution found both raised accuracy.
  Every piece is a single Qwen2 token (digits, ``x``, space), so it costs about 20%
  more than ``digits``; the parser checks the header against the rows, which catches
  truncated and miscounted answers.

Prompt layout (``build_prompt``)::

    <INSTRUCTION>
    input:
    <grid>
    output:
    <grid>
    ...                       (one block per example)
    input:
    <query grid>
    output:                   <- the answer prime; the model continues with the grid

With a chat template, everything up to the query grid is the user message and
``output:\\n`` is appended after the generation prompt (the answer is the assistant
turn). The answer is the rendered output grid plus ``end_marker(tokenizer)``.

Prompt and answer are tokenised separately and concatenated (``tokenize_prompt``);
training and inference share that contract, so inference feeds exactly the prompt ids.

Over 500 lines: the two grid formats, their parsers with a reason per failure, the stop
rules for generation and the prompt builder share one text contract.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from arc_ttft.tasks import Task

Grid = np.ndarray

INSTRUCTION = (
    "Find the rule that maps each input grid to its output grid. Apply it to the last input."
)
INPUT_LABEL = "input:\n"
OUTPUT_LABEL = "output:\n"
FALLBACK_END = "\n</answer>"
# Every fixed word a prompt can contain (tiny test tokenizers are trained to cover them).
PROMPT_WORDS: tuple[str, ...] = tuple(
    sorted(set(re.findall(r"[A-Za-z]+", INSTRUCTION + INPUT_LABEL + OUTPUT_LABEL + FALLBACK_END)))
) + ("x",)
# Where a generated answer ends; text from the first of these on is ignored by the parser.
END_MARKERS: tuple[str, ...] = (
    "</answer>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
    "<eos>",
)


# ---------------------------------------------------------------------------------------
# Grid formats
# ---------------------------------------------------------------------------------------


@dataclass
class ParseStats:
    """How many answers parsed, and why the others did not (reason -> count)."""

    ok: int = 0
    failed: int = 0
    reasons: Counter = field(default_factory=Counter)

    def add(self, reason: str | None) -> None:
        """Record one parse: ``None`` for success, else the failure reason."""
        if reason is None:
            self.ok += 1
        else:
            self.failed += 1
            self.reasons[reason] += 1

    def summary(self) -> str:
        """One line for logs, e.g. ``parsed 7/9 (ragged: 1, truncated: 1)``."""
        total = self.ok + self.failed
        why = ", ".join(f"{k}: {v}" for k, v in self.reasons.most_common())
        return f"parsed {self.ok}/{total}" + (f" ({why})" if why else "")


# A parser returns (grid, None) on success and (None, reason) on failure; it never raises.
ParseResult = tuple["Grid | None", "str | None"]


@dataclass(frozen=True)
class GridFormat:
    """A grid <-> text encoding. ``parse`` never raises; it returns None on bad text."""

    name: str
    render: Callable[[Grid], str]
    parse_reason: Callable[[str], ParseResult]
    doc: str = ""
    alphabet: str = "0123456789\n"  # every character a rendered grid can contain
    # (complete lines of an answer) -> True when no continuation can make them parse
    lines_fail: Callable[[list[str]], bool] | None = None

    def parse(self, text: str) -> Grid | None:
        """The grid in ``text`` (end marker and trailing text cut), or None."""
        return self.parse_reason(_clean(text))[0]


def _clean(text: Any) -> str:
    """Cut at the first end marker, normalise line ends, strip surrounding whitespace."""
    if not isinstance(text, str):
        return ""
    for m in END_MARKERS:
        i = text.find(m)
        if i >= 0:
            text = text[:i]
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _row_digits(g: Grid) -> list[str]:
    a = np.asarray(g)
    if a.ndim != 2:
        raise ValueError(f"render: expected a 2-D grid, got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() > 9):
        raise ValueError(f"render: grid values must be 0-9, got {int(a.min())}..{int(a.max())}")
    return ["".join(str(int(v)) for v in row) for row in a]


def _to_grid(rows: list[str]) -> Grid:
    return np.array([[ord(c) - 48 for c in r] for r in rows], dtype=np.int8)


_DIGITS = re.compile(r"[0-9]+")


def _check_rows(rows: list[str], width: int | None = None) -> str | None:
    """Failure reason for digit rows (None when they form a rectangle)."""
    if not rows:
        return "empty"
    for r in rows:
        if not r:
            return "blank_line"
        if not _DIGITS.fullmatch(r):
            return "non_digit"
    w = len(rows[0]) if width is None else width
    widths = [len(r) for r in rows]
    if all(x == w for x in widths):
        return None
    # Only the last row short and the rest fine: generation stopped mid-row.
    if all(x == w for x in widths[:-1]) and widths[-1] < w:
        return "truncated"
    return "ragged" if width is None else "header_mismatch"


def render_digits(g: Grid) -> str:
    """``digits``: rows of digits separated by newlines (no trailing newline)."""
    return "\n".join(_row_digits(g))


def parse_digits(text: str) -> ParseResult:
    """Inverse of ``render_digits`` on cleaned text; (None, reason) on failure."""
    if not text:
        return None, "empty"
    rows = [r.rstrip(" \t") for r in text.split("\n")]
    reason = _check_rows(rows)
    return (None, reason) if reason else (_to_grid(rows), None)


MAX_SIDE = 30  # ARC grids are at most 30 x 30


def digit_lines_fail(lines: list[str]) -> bool:
    """Complete rows of a ``digits`` answer that no continuation can make a valid grid: a
    non-digit row, rows of different widths, a blank line before another row, or more
    than 30 rows or cells per row (ARC's limit; such a grid is dropped anyway)."""
    rows = [r.rstrip(" \t") for r in lines]
    while rows and not rows[-1]:
        rows.pop()  # trailing blank lines: parsing strips them
    if any(not r or not _DIGITS.fullmatch(r) for r in rows):
        return True
    return (
        len({len(r) for r in rows}) > 1
        or len(rows) > MAX_SIDE
        or (bool(rows) and len(rows[0]) > MAX_SIDE)
    )


_HEADER = re.compile(r"(\d+)x(\d+)")
_NUMBERED = re.compile(r"(\d+) (.*)")


def render_shaped(g: Grid) -> str:
    """``shaped``: header ``HxW``, then ``<row number> <digits>`` per row (1-based)."""
    rows = _row_digits(g)
    h, w = np.asarray(g).shape
    return "\n".join([f"{h}x{w}"] + [f"{i} {r}" for i, r in enumerate(rows, 1)])


def shaped_lines_fail(lines: list[str]) -> bool:
    """Complete lines of a ``shaped`` answer that no continuation can make parse: a bad
    header, a row that is not ``<number> <digits>`` with the next number and the header's
    width, or more rows than the header says."""
    lines = [ln.rstrip(" \t") for ln in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return False
    m = _HEADER.fullmatch(lines[0])
    if not m:
        return True
    h, w = int(m.group(1)), int(m.group(2))
    if len(lines) - 1 > h or h > MAX_SIDE or w > MAX_SIDE:
        return True
    for i, line in enumerate(lines[1:], 1):
        row = _NUMBERED.fullmatch(line)
        if not row or int(row.group(1)) != i or len(row.group(2)) != w:
            return True
        if not _DIGITS.fullmatch(row.group(2)):
            return True
    return False


def parse_shaped(text: str) -> ParseResult:
    """Inverse of ``render_shaped`` on cleaned text; checks header, numbering and sizes."""
    if not text:
        return None, "empty"
    lines = [ln.rstrip(" \t") for ln in text.split("\n")]
    m = _HEADER.fullmatch(lines[0])
    if not m:
        return None, "bad_header"
    h, w = int(m.group(1)), int(m.group(2))
    if h < 1 or w < 1:
        return None, "bad_header"
    rows = []
    for i, line in enumerate(lines[1:], 1):
        m = _NUMBERED.fullmatch(line)
        if not m:
            return None, "non_digit" if line else "blank_line"
        if int(m.group(1)) != i:
            return None, "bad_row_number"
        rows.append(m.group(2))
    if not rows:
        return None, "truncated"
    reason = _check_rows(rows, width=w)
    if reason:
        return None, reason
    if len(rows) < h:
        return None, "truncated"
    if len(rows) > h:
        return None, "header_mismatch"
    return _to_grid(rows), None


FORMATS: dict[str, GridFormat] = {
    "digits": GridFormat(
        "digits",
        render_digits,
        parse_digits,
        "one digit per cell, newline per row",
        lines_fail=digit_lines_fail,
    ),
    "shaped": GridFormat(
        "shaped",
        render_shaped,
        parse_shaped,
        "HxW header, rows prefixed with 1-based numbers",
        alphabet="0123456789x \n",
        lines_fail=shaped_lines_fail,
    ),
}


def get_format(name: str | GridFormat) -> GridFormat:
    """The format named ``name`` (a GridFormat passes through)."""
    if isinstance(name, GridFormat):
        return name
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"format: unknown grid format {name!r}; choose one of {', '.join(FORMATS)}"
        ) from None


def parse_answer(
    text: str, fmt: str | GridFormat, stats: ParseStats | None = None, end: str | None = None
) -> Grid | None:
    """The grid in a generated answer, or None (never raises); records the outcome in ``stats``.

    Text from the first end marker on (``end``, the tokenizer's eos, or a known one) is
    ignored, as is surrounding whitespace.
    """
    if end and isinstance(text, str) and end in text:
        text = text[: text.index(end)]
    try:
        grid, reason = get_format(fmt).parse_reason(_clean(text))
    except Exception as e:  # a parser bug must not take a run down; count it instead
        grid, reason = None, f"error: {type(e).__name__}"
    if stats is not None:
        stats.add(reason)
    return grid


def answer_is_over(text: str, alphabet: str, end: str | None = None) -> bool:
    """True once no continuation of ``text`` can change what ``parse_answer`` returns.

    Either an end marker is already there (parsing ignores what follows), or the text
    holds a character that no grid of the format contains (``alphabet``, plus
    whitespace) and that does not start an end marker, or its finished lines can never
    form a valid grid (the format's ``lines_fail``: rows of different widths, a blank
    line between rows, more than 30 rows or cells): such an answer never becomes a
    usable grid. A generator may stop the sequence there; an untrained or derailed model
    would otherwise run to the cap for nothing.
    """
    markers = END_MARKERS + ((end,) if end else ())
    if any(m in text for m in markers):
        return True
    allowed = set(alphabet) | set(" \t\r\n")
    bad = next((i for i, ch in enumerate(text) if ch not in allowed), None)
    if bad is not None:
        tail = text[bad:]
        return not any(m.startswith(tail) for m in markers)
    # Only grid characters: the lines already ended can still rule a parse out (rows of
    # different widths, a blank line between rows), which the format knows.
    fmt = next((f for f in FORMATS.values() if f.alphabet == alphabet), None)
    if fmt is None or fmt.lines_fail is None:
        return False
    lines = text.replace("\r\n", "\n").replace("\r", "\n").lstrip().split("\n")[:-1]
    return fmt.lines_fail(lines)


# ---------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """A prompt ready to tokenise: ``text`` ends with the answer prime.

    ``dropped``: original indices of train pairs left out to fit ``max_seq_len``;
    ``fits``: False when even one pair is longer than ``max_seq_len`` (kept anyway).
    """

    text: str
    answer: str | None
    dropped: list[int] = field(default_factory=list)
    fits: bool = True


def end_marker(tokenizer=None) -> str:
    """What ends an answer: the tokenizer's eos token, or ``"\\n</answer>"`` without one."""
    eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else None
    return eos if isinstance(eos, str) and eos else FALLBACK_END


def _has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def _example_block(render: Callable[[Grid], str], inp: Grid, out: Grid) -> str:
    return f"{INPUT_LABEL}{render(inp)}\n{OUTPUT_LABEL}{render(out)}\n"


def _assemble(blocks: list[str], query_text: str, tokenizer) -> str:
    user = f"{INSTRUCTION}\n" + "".join(blocks) + f"{INPUT_LABEL}{query_text}\n"
    if _has_chat_template(tokenizer):
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        return head + OUTPUT_LABEL
    return user + OUTPUT_LABEL


def build_prompt(
    examples: Sequence[tuple[Grid, Grid]],
    query: Grid,
    fmt: str | GridFormat,
    tokenizer=None,
    answer: Grid | None = None,
    max_seq_len: int | None = None,
    reserve: int | None = None,
) -> Prompt:
    """The prompt for ``query`` given demonstration ``examples`` (see the module docstring).

    With ``max_seq_len``, train pairs are dropped largest first until the prompt plus
    ``reserve`` tokens (default: the answer's own length) fit, keeping at least one; if
    even one does not fit it is kept and ``fits`` is False. Training and inference pass
    the same ``reserve`` (``infer.query_cap``) so that both drop the same pairs.
    Token counts use ``tokenizer`` when given, else the Qwen2-like approximation.
    """
    render = get_format(fmt).render
    blocks = [_example_block(render, i, o) for i, o in examples]
    query_text = render(query)
    answer_text = None if answer is None else render(answer) + end_marker(tokenizer)
    kept = list(range(len(blocks)))

    def text_of(idx: list[int]) -> str:
        return _assemble([blocks[i] for i in idx], query_text, tokenizer)

    text = text_of(kept)
    if max_seq_len is None:
        return Prompt(text, answer_text)

    n_answer = count_tokens(answer_text, tokenizer) if answer_text else 0
    if reserve is not None:
        n_answer = max(n_answer, reserve)
    total = count_tokens(text, tokenizer) + n_answer
    if total <= max_seq_len:
        return Prompt(text, answer_text)
    # Drop the largest blocks first (cost estimated per block), re-counting the real
    # text after each drop: block boundaries can shift a token either way.
    cost = {i: count_tokens(b, tokenizer) for i, b in enumerate(blocks)}
    dropped: list[int] = []
    while total > max_seq_len and len(kept) > 1:
        worst = max(kept, key=lambda i: (cost[i], i))
        kept.remove(worst)
        dropped.append(worst)
        text = text_of(kept)
        total = count_tokens(text, tokenizer) + n_answer
    return Prompt(text, answer_text, sorted(dropped), fits=total <= max_seq_len)


def tokenize_prompt(prompt: Prompt, tokenizer) -> tuple[list[int], list[int]]:
    """(input_ids, labels): prompt and answer tokenised separately, then concatenated.

    Labels are -100 on every prompt token and the answer ids on the answer. Inference
    feeds exactly the prompt ids, so training and generation see the same tokens.
    """
    p = list(tokenizer(prompt.text, add_special_tokens=False)["input_ids"])
    if prompt.answer is None:
        return p, [-100] * len(p)
    a = list(tokenizer(prompt.answer, add_special_tokens=False)["input_ids"])
    return p + a, [-100] * len(p) + a


# ---------------------------------------------------------------------------------------
# Token accounting
# ---------------------------------------------------------------------------------------

# Qwen2's pre-tokenizer pattern: single digits, newline runs, words with one leading
# non-letter, punctuation runs. Each piece is roughly one token in its vocabulary.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPECIAL = re.compile(r"<\|[^|<>\s]{1,40}\|>")
_qwen2_re = None


def _pretokens(text: str) -> list[str]:
    global _qwen2_re
    if _qwen2_re is None:
        import regex  # a transformers dependency; supports \p{L}

        _qwen2_re = regex.compile(QWEN2_PATTERN)
    return _qwen2_re.findall(text)


def count_tokens(text: str | None, tokenizer=None) -> int:
    """Tokens in ``text``: exact with ``tokenizer``, else a Qwen2-like estimate.

    The estimate splits with Qwen2's pre-tokenizer regex (each digit one token, a
    newline run one token) and counts one token per piece, one more per 8 letters for
    long words; ``<|...|>`` special tokens count one each.
    """
    if not text:
        return 0
    if tokenizer is not None:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    n = 0
    pos = 0
    for m in _SPECIAL.finditer(text):
        n += _estimate(text[pos : m.start()]) + 1
        pos = m.end()
    return n + _estimate(text[pos:])


def _estimate(text: str) -> int:
    return sum(max(1, math.ceil(len(p.strip() or p) / 8)) for p in _pretokens(text))


def grid_lower_bound(task: Task) -> int:
    """Cells + row ends of the grids ``task_tokens`` counts: sum of H x (W + 1)."""
    grids = [g for ex in task.train for g in (ex.input, ex.output)]
    if task.test:
        t = task.test[0]
        grids += [t.input, t.output if t.output is not None else t.input]
    return int(sum(np.asarray(g).shape[0] * (np.asarray(g).shape[1] + 1) for g in grids))


def task_prompt(task: Task, fmt: str | GridFormat, tokenizer=None, max_seq_len: int | None = None):
    """The full prompt of ``task``: all train pairs, first test input, its output as answer.

    An unknown test output is stood in for by a blank grid the size of the input.
    """
    if not task.test:
        raise ValueError(f"{task.id}: test: no test input; a task needs at least one")
    t = task.test[0]
    out = t.output if t.output is not None else np.zeros_like(np.asarray(t.input))
    examples = [(ex.input, ex.output) for ex in task.train]
    return build_prompt(examples, t.input, fmt, tokenizer, answer=out, max_seq_len=max_seq_len)


def task_tokens(task: Task, fmt: str | GridFormat, tokenizer=None) -> int:
    """Tokens of ``task_prompt``: prompt + answer, all train pairs, first test pair."""
    p = task_prompt(task, fmt, tokenizer)
    return count_tokens(p.text, tokenizer) + count_tokens(p.answer, tokenizer)


@dataclass
class TokenReport:
    """Token statistics of a task set in one format."""

    fmt: str
    counts: dict[str, int]
    lower_bounds: dict[str, int]
    dropped: dict[int, int]  # max_seq_len -> tasks that needed train pairs dropped
    overflow: dict[int, int]  # max_seq_len -> tasks that do not fit even with one pair

    def percentile(self, q: float, lower_bound: bool = False) -> int:
        vals = list((self.lower_bounds if lower_bound else self.counts).values())
        return int(round(float(np.percentile(vals, q)))) if vals else 0

    def fit(self, length: int, lower_bound: bool = False) -> float:
        """Share of tasks (percent) whose full prompt fits ``length`` tokens."""
        vals = list((self.lower_bounds if lower_bound else self.counts).values())
        return 100.0 * sum(v <= length for v in vals) / len(vals) if vals else 0.0


def token_report(
    tasks: Sequence[Task],
    fmt: str | GridFormat,
    tokenizer=None,
    lengths: Sequence[int] = (4096, 8192),
) -> TokenReport:
    """Tokens per task, the grid lower bound, and per length how many tasks need dropping."""
    counts = {t.id: task_tokens(t, fmt, tokenizer) for t in tasks}
    bounds = {t.id: grid_lower_bound(t) for t in tasks}
    dropped: dict[int, int] = {}
    overflow: dict[int, int] = {}
    for length in lengths:
        over = [t for t in tasks if counts[t.id] > length]
        prompts = [task_prompt(t, fmt, tokenizer, max_seq_len=length) for t in over]
        dropped[length] = sum(1 for p in prompts if p.dropped)
        overflow[length] = sum(1 for p in prompts if not p.fits)
    return TokenReport(get_format(fmt).name, counts, bounds, dropped, overflow)


# ---------------------------------------------------------------------------------------
# Corpus for tiny test tokenizers
# ---------------------------------------------------------------------------------------


def sample_corpus(n: int = 24, seed: int = 0) -> list[str]:
    """Representative prompt + answer strings in every format (no tokenizer, so the
    fallback end marker), with grids of varied shapes: train tiny tokenizers on these."""
    rng = np.random.default_rng(seed)
    out = [INSTRUCTION, " ".join(PROMPT_WORDS)]
    for k in range(n):
        fmt = list(FORMATS)[k % len(FORMATS)]
        h, w = (int(x) for x in rng.integers(1, 31 if k % 6 == 0 else 8, size=2))
        grids = [rng.integers(0, 10, size=(h, w)) for _ in range(4)]
        p = build_prompt([(grids[0], grids[1])], grids[2], fmt, answer=grids[3])
        out.append(p.text + (p.answer or ""))
    return out
