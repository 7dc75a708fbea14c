"""Grid formats, answer parsing, prompts, labels and token accounting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arc_ttft import encoding as E
from arc_ttft.tasks import Example, Task

grids = st.tuples(st.integers(1, 30), st.integers(1, 30)).flatmap(
    lambda hw: arrays(np.int8, hw, elements=st.integers(0, 9))
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    """A byte-level BPE trained on sample_corpus() with Qwen2's split, eos <|endoftext|>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(E.QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(E.sample_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


@pytest.fixture()
def chat_tok(tok):
    import copy

    t = copy.deepcopy(tok)
    t.chat_template = CHATML
    t.eos_token = "<|im_end|>"
    return t


# ---------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(E.FORMATS))
@settings(max_examples=150, deadline=None)
@given(g=grids)
def test_round_trip(name, g):
    fmt = E.get_format(name)
    text = fmt.render(g)
    back = fmt.parse(text)
    assert back is not None and back.dtype == np.int8 and np.array_equal(back, g)
    # Tolerates trailing whitespace and anything after an end marker.
    assert np.array_equal(fmt.parse(text + "  \n\n"), g)
    assert np.array_equal(fmt.parse(text + "\n</answer> junk 123"), g)
    assert np.array_equal(fmt.parse(text + "<|im_end|>\ninput:\n12"), g)
    assert np.array_equal(fmt.parse(text.replace("\n", "\r\n")), g)


def test_render_examples():
    g = np.array([[0, 1, 2, 0], [1, 2, 0, 1], [0, 0, 0, 0]], dtype=np.int8)
    assert E.get_format("digits").render(g) == "0120\n1201\n0000"
    assert E.get_format("shaped").render(g) == "3x4\n1 0120\n2 1201\n3 0000"
    with pytest.raises(ValueError, match="0-9"):
        E.get_format("digits").render(np.array([[10]]))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (None, "empty"),
        ("012\n12", "truncated"),
        ("012\n1234\n012", "ragged"),
        ("01\n12\n0", "truncated"),
        ("012\n1a2", "non_digit"),
        ("the answer is\n012", "non_digit"),
        ("01\n\n01", "blank_line"),
        ("-1", "non_digit"),
        ("</answer>", "empty"),
        ("<|im_end|>\n012\n345", "empty"),
        ("012\r\n\r\n345", "blank_line"),
        ("012\r\n34", "truncated"),
        ("01 2\n012", "non_digit"),
        ("[[0, 1], [1, 0]]", "non_digit"),
    ],
)
def test_digits_failures(text, reason):
    stats = E.ParseStats()
    assert E.parse_answer(text, "digits", stats) is None
    assert stats.failed == 1 and stats.reasons[reason] == 1, stats.reasons


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("012\n120", "bad_header"),
        ("0x3\n", "bad_header"),
        ("2x3", "truncated"),
        ("2x3\n1 012", "truncated"),
        ("2x3\n1 012\n2 01", "truncated"),
        ("2x3\n1 012\n2 0123", "header_mismatch"),
        ("2x3\n1 012\n2 012\n3 012", "header_mismatch"),
        ("2x3\n1 012\n3 012", "bad_row_number"),
        ("2x3\n1 012\n2 0b2", "non_digit"),
        ("2x3\n012\n012", "non_digit"),
        ("2x3\n1 0123\n2 012", "header_mismatch"),
    ],
)
def test_shaped_failures(text, reason):
    stats = E.ParseStats()
    assert E.parse_answer(text, "shaped", stats) is None
    assert stats.reasons[reason] == 1, stats.reasons


# Every reason each parser can give (encoding.parse_digits / parse_shaped).
REASONS = {
    "digits": {"empty", "blank_line", "non_digit", "truncated", "ragged"},
    "shaped": {
        "empty", "bad_header", "blank_line", "non_digit", "bad_row_number",
        "truncated", "header_mismatch",
    },
}  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("0123456789x \n\r:ab<|>/")), max_size=60))
def test_parse_accepts_only_rendered_grids_and_names_every_failure(text):
    # No end marker can be spelled with this alphabet: the parser sees the text with its
    # line ends normalised, outer whitespace and each row's trailing blanks dropped.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    normalised = "\n".join(line.rstrip(" \t") for line in lines)
    for name in E.FORMATS:
        stats = E.ParseStats()
        g = E.parse_answer(text, name, stats)
        if g is None:
            # A failure is recorded once, under one of the parser's own reasons (a parser
            # bug would show as "error: <exception>").
            assert (stats.ok, stats.failed) == (0, 1)
            assert set(stats.reasons) <= REASONS[name], stats.reasons
        else:
            assert (stats.ok, stats.failed) == (1, 0)
            assert E.get_format(name).render(g) == normalised


def test_a_parser_bug_is_counted_not_raised():
    def broken(text):
        return 1 / 0

    fmt = E.GridFormat("broken", E.render_digits, broken)
    stats = E.ParseStats()
    assert E.parse_answer("01\n10", fmt, stats) is None
    assert stats.failed == 1 and stats.reasons == {"error: ZeroDivisionError": 1}


def test_parse_stats_and_custom_end():
    stats = E.ParseStats()
    assert E.parse_answer("01\n10<eos>", "digits", stats) is not None
    assert E.parse_answer("01\n10[END]garbage", "digits", stats, end="[END]") is not None
    assert E.parse_answer("01\n1", "digits", stats) is None
    assert (stats.ok, stats.failed) == (2, 1)
    assert stats.summary() == "parsed 2/3 (truncated: 1)"


def test_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match="digits, shaped"):
        E.get_format("nope")


# ---------------------------------------------------------------------------------------
# Prompts and labels
# ---------------------------------------------------------------------------------------


def _pairs(n=3, seed=0, shape=(3, 4)):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, 10, size=shape).astype(np.int8),
            rng.integers(0, 10, size=shape).astype(np.int8),
        )
        for _ in range(n)
    ]


def test_prompt_layout_without_tokenizer():
    pairs = _pairs(2)
    q, a = _pairs(1, seed=1)[0]
    p = E.build_prompt(pairs, q, "digits", answer=a)
    r = E.get_format("digits").render
    expected = (
        E.INSTRUCTION
        + "\n"
        + "".join(f"input:\n{r(i)}\noutput:\n{r(o)}\n" for i, o in pairs)
        + f"input:\n{r(q)}\noutput:\n"
    )
    assert p.text == expected
    assert p.answer == r(a) + "\n</answer>" and p.dropped == [] and p.fits
    assert E.build_prompt(pairs, q, "digits").answer is None
    assert np.array_equal(E.parse_answer(p.answer, "digits"), a)


@pytest.mark.parametrize("fmt", list(E.FORMATS))
def test_labels_cover_exactly_the_answer(tok, fmt):
    pairs = _pairs(3)
    q, a = _pairs(1, seed=2)[0]
    p = E.build_prompt(pairs, q, fmt, tok, answer=a)
    assert p.answer.endswith("<|endoftext|>") and E.end_marker(tok) == "<|endoftext|>"
    ids, labels = E.tokenize_prompt(p, tok)
    n_prompt = len(tok(p.text, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and all(x != -100 for x in labels[n_prompt:])
    assert tok.decode(ids[n_prompt:]) == p.answer
    assert tok.decode(ids[:n_prompt]) == p.text
    assert ids[-1] == tok.eos_token_id
    assert np.array_equal(E.parse_answer(tok.decode(ids[n_prompt:]), fmt), a)
    # Inference: no answer, no labels, and the prompt ids are the same.
    ids2, labels2 = E.tokenize_prompt(E.build_prompt(pairs, q, fmt, tok), tok)
    assert ids2 == ids[:n_prompt] and set(labels2) == {-100}


def test_tiny_tokenizer_splits_digits(tok):
    g = np.arange(12, dtype=np.int8).reshape(3, 4) % 10
    text = E.get_format("digits").render(g) + "\n"
    assert E.count_tokens(text, tok) == 3 * (4 + 1) == E.count_tokens(text)


def test_chat_template_wraps_user_and_primes_answer(chat_tok):
    pairs = _pairs(2)
    q, a = _pairs(1, seed=3)[0]
    p = E.build_prompt(pairs, q, "shaped", chat_tok, answer=a)
    r = E.get_format("shaped").render
    assert p.text.startswith("<|im_start|>user\n" + E.INSTRUCTION)
    assert p.text.endswith(f"input:\n{r(q)}\n<|im_end|>\n<|im_start|>assistant\noutput:\n")
    assert p.answer == r(a) + "<|im_end|>"
    ids, labels = E.tokenize_prompt(p, chat_tok)
    n_answer = sum(x != -100 for x in labels)
    assert chat_tok.decode(ids[-n_answer:]) == p.answer
    assert chat_tok.convert_tokens_to_ids("<|im_start|>") in ids  # a special token, not text


@pytest.mark.parametrize("use_tok", [False, True])
def test_max_seq_len_drops_largest_pairs_first(tok, use_tok):
    t = tok if use_tok else None
    small = _pairs(3, seed=4, shape=(2, 2))
    big = _pairs(1, seed=5, shape=(8, 8))[0]
    pairs = [small[0], big, small[1], small[2]]
    q, a = _pairs(1, seed=6, shape=(2, 2))[0]
    full = E.build_prompt(pairs, q, "digits", t, answer=a)
    n_full = E.count_tokens(full.text, t) + E.count_tokens(full.answer, t)
    assert E.build_prompt(pairs, q, "digits", t, answer=a, max_seq_len=n_full).dropped == []
    p = E.build_prompt(pairs, q, "digits", t, answer=a, max_seq_len=n_full - 1)
    assert p.dropped == [1] and p.fits
    assert E.count_tokens(p.text, t) + E.count_tokens(p.answer, t) <= n_full - 1
    assert E.get_format("digits").render(big[0]) not in p.text
    # Far too short: keep one pair, flag it, never raise.
    p = E.build_prompt(pairs, q, "digits", t, answer=a, max_seq_len=20)
    assert len(p.dropped) == 3 and not p.fits and p.text.count("input:") == 2


# ---------------------------------------------------------------------------------------
# Token accounting
# ---------------------------------------------------------------------------------------


def test_count_tokens_estimate():
    assert E.count_tokens("") == 0 and E.count_tokens(None) == 0
    assert E.count_tokens("0120\n1201\n") == 10
    assert E.count_tokens("0120\n\n\n1201") == 9  # a newline run is one token
    assert E.count_tokens("output:\n") == 2
    assert E.count_tokens("<|im_start|>user\nhi<|im_end|>") == 5


def _task(with_output=True):
    pairs = _pairs(2, shape=(3, 4))
    q, a = _pairs(1, seed=9, shape=(5, 2))[0]
    test = Example(q, a if with_output else None)
    return Task("t1", [Example(i, o) for i, o in pairs], [test])


def test_task_tokens_and_lower_bound(tok):
    task = _task()
    lb = E.grid_lower_bound(task)
    assert lb == 4 * 3 * 5 + 2 * 5 * 3
    n = E.task_tokens(task, "digits")
    assert lb < n < lb + 60
    assert E.task_tokens(task, "shaped") > n
    assert abs(E.task_tokens(task, "digits", tok) - n) <= 10
    # Unknown output: estimated as the size of the input.
    unknown = _task(with_output=False)
    assert E.grid_lower_bound(unknown) == 4 * 3 * 5 + 2 * 5 * 3
    assert E.task_tokens(unknown, "digits") == n


def test_token_report():
    tasks = [_task(), Task("t2", _task().train * 20, _task().test)]
    rep = E.token_report(tasks, "digits", lengths=[4096, 300])
    assert rep.counts["t2"] > 300 > rep.counts["t1"]
    assert rep.fit(300) == 50.0 and rep.fit(4096) == 100.0
    assert rep.dropped == {4096: 0, 300: 1} and rep.overflow == {4096: 0, 300: 0}
    assert rep.percentile(100) == rep.counts["t2"]


def test_sample_corpus_covers_prompt_words():
    corpus = "\n".join(E.sample_corpus())
    for w in E.PROMPT_WORDS:
        assert w in corpus
    for name in E.FORMATS:
        assert any(
            E.get_format(name).parse(c.split("output:\n")[-1]) is not None
            for c in E.sample_corpus()
        )


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(E.FORMATS))
def test_cli_tokens(capsys, fmt):
    import re

    from arc_ttft.cli import main

    rc = main(["tokens", "--challenges", "arc1-eval", "--max-tasks", "20", "--format", fmt])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert re.fullmatch(r"median: \d+ tokens, fit4096: \d+\.\d%, fit8192: \d+\.\d%", lines[-1])
    assert lines[0].startswith("tasks: 20 from arc1-eval; format: " + fmt)
    assert any(ln.startswith("lower bound (cells + row ends): median ") for ln in lines)


def test_cli_tokens_with_tokenizer_and_length(capsys, tok, tmp_path):
    from arc_ttft.cli import main

    tok.save_pretrained(str(tmp_path / "tok"))
    args = ["tokens", "--challenges", "arc1-eval", "--max-tasks", "10", "--max-seq-len", "512"]
    assert main([*args, "--tokenizer", str(tmp_path / "tok")]) == 0
    out = capsys.readouterr().out
    assert "at 512: fit " in out and "tasks need train pairs dropped" in out
    assert f"tokenizer: {tmp_path / 'tok'}" in out
    assert main([*args, "--tokenizer", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["tokens", "--max-tasks", "1", "--format", "nope"]) == 2
