"""Vocabulary shrinking on the tiny model: same tokens, same logits, loadable folder."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from arc_ttft import encoding, models, qwen2_tokenizer, tasks, ttt, ttt_samples
from arc_ttft import shrunk_vocab as vocab
from arc_ttft.config import ModelConfig, TTTConfig


@pytest.fixture(scope="module")
def tiny():
    model, tok = models.load_model(ModelConfig(model="tiny"), device="cpu")
    return model, tok


@pytest.fixture(scope="module")
def shrunk(tiny):
    model, tok = tiny
    return vocab.shrink(copy.deepcopy(model), tok)


@pytest.fixture(scope="module")
def arc_prompts(tiny):
    """Prompt and answer texts of 40 arc1-eval tasks in both formats, chat template on."""
    _, tok = tiny
    texts = []
    for fmt in encoding.FORMATS:
        for task in tasks.load_tasks("arc1-eval").tasks[:40]:
            p = encoding.task_prompt(task, fmt, tok)
            texts += [p.text, p.answer]
    return texts


def test_kept_vocabulary_is_small_and_has_the_pieces(tiny, shrunk):
    _, tok = tiny
    _, new, vmap = shrunk
    assert vmap.size < 150 and len(new) == vmap.size
    kept = set(vmap.kept)
    for piece in [*"0123456789", "\n", " ", *tok.all_special_tokens]:
        (i,) = tok(piece, add_special_tokens=False)["input_ids"]
        assert i in kept, piece
    assert new.eos_token == tok.eos_token
    assert new.eos_token_id == vmap.to_new([tok.eos_token_id])[0]


def test_tokenizer_equal_on_arc_prompts(tiny, shrunk, arc_prompts):
    _, tok = tiny
    _, new, vmap = shrunk
    assert vocab.check_tokenizer(tok, new, vmap, arc_prompts) == []
    # Spot check by hand on the longest one.
    text = max(arc_prompts, key=len)
    old_ids = tok(text, add_special_tokens=False)["input_ids"]
    assert new(text, add_special_tokens=False)["input_ids"] == vmap.to_new(old_ids)
    assert new.decode(vmap.to_new(old_ids)) == text


def test_check_tokenizer_catches_a_missing_token(tiny):
    _, tok = tiny
    kept = vocab.kept_token_ids(tok)
    (out_id,) = tok("output", add_special_tokens=False)["input_ids"]
    vmap = vocab.VocabMap([i for i in kept if i != out_id], 512)
    bad = vocab.shrink_tokenizer(tok, vmap)
    problems = vocab.check_tokenizer(tok, bad, vmap, ["input:\n01\noutput:\n10"])
    assert problems and "not in the shrunk vocabulary" in problems[0]


def test_logits_equal_original_restricted_to_kept(tiny, shrunk, arc_prompts):
    model, tok = tiny
    small, _, vmap = shrunk
    ids = tok(arc_prompts[0] + arc_prompts[1], add_special_tokens=False)["input_ids"][:600]
    with torch.no_grad():
        full = model(torch.tensor([ids])).logits[0][:, vmap.kept]
        cut = small(torch.tensor([vmap.to_new(ids)])).logits[0]
    assert cut.shape[-1] == vmap.size
    torch.testing.assert_close(cut, full, rtol=0, atol=1e-5)


class _OnlyKept:
    """Logits processor: the original model restricted to the kept ids."""

    def __init__(self, kept):
        self.mask = torch.full((512,), float("-inf"))
        self.mask[kept] = 0.0

    def __call__(self, input_ids, scores):
        return scores + self.mask[: scores.shape[-1]]


def test_saved_folder_reloads_and_generates_the_same(tiny, tmp_path, arc_prompts):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    model, tok = tiny
    out = vocab.shrink_model(models.ensure_tiny_model(), tmp_path / "shrunk")
    m2 = AutoModelForCausalLM.from_pretrained(out)
    t2 = AutoTokenizer.from_pretrained(out)
    vmap = vocab.read_map(out)
    assert m2.config.vocab_size == vmap.size == len(t2)
    assert m2.get_input_embeddings().weight.shape[0] == vmap.size
    assert m2.config.eos_token_id == t2.eos_token_id == vmap.to_new([tok.eos_token_id])[0]
    assert m2.generation_config.pad_token_id == t2.pad_token_id
    assert sorted(p.name for p in out.glob("*.safetensors"))
    assert vocab.check_tokenizer(tok, t2, vmap, arc_prompts[:20]) == []

    prompt = arc_prompts[0]
    old_ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    new_ids = t2(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    kw = {"max_new_tokens": 12, "do_sample": False}
    ref = model.generate(
        old_ids, logits_processor=LogitsProcessorList([_OnlyKept(vmap.kept)]), **kw
    )
    got = m2.generate(new_ids, **kw)
    assert got[0].tolist() == vmap.to_new(ref[0].tolist())
    assert t2.decode(got[0]) == tok.decode(ref[0])


def test_answer_parses_back_through_shrunk_tokenizer(shrunk):
    _, new, _ = shrunk
    rng = np.random.default_rng(3)
    for fmt in encoding.FORMATS:
        for h, w in [(1, 1), (3, 7), (30, 30), (12, 5)]:
            g = rng.integers(0, 10, size=(h, w)).astype(np.int8)
            p = encoding.build_prompt([(g, g)], g, fmt, new, answer=g)
            _, labels = encoding.tokenize_prompt(p, new)
            text = new.decode([t for t in labels if t != -100])
            assert np.array_equal(encoding.parse_answer(text, fmt), g)


def test_ttt_loss_runs_on_shrunk_model(shrunk):
    small, new, _ = shrunk
    model = copy.deepcopy(small)
    rng = np.random.default_rng(0)
    pairs = [rng.integers(0, 10, size=(3, 4)).astype(np.int8) for _ in range(3)]
    task = tasks.Task("flip", [tasks.Example(g, g[:, ::-1].copy()) for g in pairs], [])
    cfg = TTTConfig(ttt_steps=3, lora_rank=4, learning_rate=1e-3, lora_targets=["q_proj", "v_proj"])
    samples = ttt_samples.make_samples(task, "shaped", new, 3, seed=0)
    assert all(max(s.input_ids) < len(new) for s in samples)
    pm = ttt.prepare_peft_model(model, cfg)
    losses, reason, tokens, _ = ttt.train_steps(pm, samples, cfg, 3)
    assert reason == "max_steps" and len(losses) == 3 and tokens > 0
    assert all(np.isfinite(losses)) and losses[0] < np.log(len(new)) + 3


def test_load_shrunk_random_weights_in_memory():
    cfg = ModelConfig(model="tiny", random_weights=True, shrink_vocab=True)
    model, tok = vocab.load_shrunk(cfg, device="cpu", for_training=True)
    assert model.config.vocab_size == len(tok) < 150
    assert model.config.use_cache is False
    ids = tok("input:\n0123\n", add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tok)


def test_shrunk_folder_is_cached_and_loads(tmp_path):
    cfg = ModelConfig(model="tiny", shrink_vocab=True)
    a = vocab.shrunk_folder(cfg)
    b = vocab.shrunk_folder(cfg)
    assert a == b and (a / vocab.MAP_FILE).is_file()
    model, tok = vocab.load_shrunk(cfg, device="cpu")
    assert model.config.vocab_size == len(tok) == vocab.read_map(a).size


def test_vocab_map_names_the_missing_id():
    vmap = vocab.VocabMap([3, 5, 9], 10)
    assert vmap.to_new([9, 3]) == [2, 0] and vmap.to_old([1]) == [5]
    with pytest.raises(KeyError, match="token id 4"):
        vmap.to_new([4])


def test_random_weights_shrunk_folder_names_its_tokenizer():
    cfg = ModelConfig(model="tiny", random_weights=True, shrink_vocab=True)
    folder = vocab.shrunk_folder(cfg)
    assert vocab.shrunk_folder(cfg) == folder
    assert vocab.read_map(folder).size == len(AutoTokenizer.from_pretrained(folder))


# ---------------------------------------------------------------------------------------
# The real Qwen2 tokenizer, built offline from dashscope's ranks (dashscope is in
# requirements.txt; these skip only where it is truly absent, and CI fails on that skip).
# ---------------------------------------------------------------------------------------

needs_dashscope = pytest.mark.skipif(
    importlib.util.find_spec("dashscope") is None,
    reason="dashscope not installed: it ships the Qwen2 BPE ranks (pip install -r requirements.txt)",
)


@pytest.fixture(scope="module")
def qwen2_folder():
    folder = qwen2_tokenizer.qwen2_tokenizer_folder("<|endoftext|>")
    assert folder is not None, "dashscope is installed but no tokenizer was built"
    return folder


@pytest.fixture(scope="module")
def qwen2_tok(qwen2_folder):
    return AutoTokenizer.from_pretrained(qwen2_folder)


def test_qwen2_tokenizer_none_without_ranks(tmp_path, monkeypatch):
    monkeypatch.setattr(qwen2_tokenizer, "qwen2_ranks_path", lambda: None)
    assert qwen2_tokenizer.qwen2_tokenizer_folder(cache_dir=tmp_path) is None
    assert qwen2_tokenizer.qwen2_tokenizer_for("Qwen2-0.5B", cache_dir=tmp_path) is None
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="eos"):
        qwen2_tokenizer.qwen2_tokenizer_folder("</s>", cache_dir=tmp_path)


def test_qwen2_tokenizer_for_other_models_is_none():
    for name in ("tiny", "SmolLM2-135M-Instruct", "Phi-2", "/no/such/folder"):
        assert qwen2_tokenizer.qwen2_tokenizer_for(name) is None, name


@pytest.mark.slow
@needs_dashscope
def test_real_qwen2_tokenizer_matches_tiktoken(qwen2_folder, qwen2_tok):
    assert qwen2_tokenizer.check_qwen2_tokenizer(qwen2_folder) == []
    assert len(qwen2_tok) == 151646 and qwen2_tok.eos_token == "<|endoftext|>"
    assert qwen2_tok.pad_token_id == qwen2_tok.eos_token_id == 151643
    assert qwen2_tok.convert_tokens_to_ids("<|im_end|>") == 151645
    assert qwen2_tok("Hello world", add_special_tokens=False)["input_ids"] == [9707, 1879]


@pytest.mark.slow
@needs_dashscope
def test_qwen2_tokenizer_for_registry_models(qwen2_folder):
    base = models.REGISTRY["Qwen2-0.5B"]
    assert qwen2_tokenizer.qwen2_tokenizer_for("Qwen2-0.5B") == qwen2_folder
    assert qwen2_tokenizer.qwen2_tokenizer_for("qwen/qwen2.5-1.5b") == qwen2_folder
    inst = qwen2_tokenizer.qwen2_tokenizer_for("Qwen2.5-0.5B-Instruct")
    assert inst is not None and inst != qwen2_folder
    tok = AutoTokenizer.from_pretrained(inst)
    assert (
        tok.eos_token_id
        == 151645
        == models.REGISTRY["Qwen2.5-0.5B-Instruct"].config["eos_token_id"]
    )
    # Every id a prompt can produce fits the registry model's embedding table.
    task = tasks.load_tasks("arc1-eval").tasks[0]
    p = encoding.task_prompt(task, "digits", tok)
    ids = tok(p.text + p.answer, add_special_tokens=False)["input_ids"]
    assert max(ids) < base.config["vocab_size"]
    assert p.text.startswith("<|im_start|>")  # the chat template is used


@pytest.mark.slow
@needs_dashscope
def test_qwen_tokenizer_script_fills_the_cache(qwen2_folder, capsys):
    spec = importlib.util.spec_from_file_location(
        "qwen_tokenizer_script",
        Path(__file__).resolve().parents[1] / "scripts" / "qwen_tokenizer.py",
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--cache", "--eos", "<|endoftext|>"]) == 0
    assert str(qwen2_folder) in capsys.readouterr().out
    # arc_ttft.research.ttt_speed loads the script for these names.
    assert all(
        callable(getattr(mod, n)) for n in ("build", "read_ranks", "default_ranks_path", "save")
    )


@pytest.mark.slow
@needs_dashscope
def test_real_qwen2_tokenizer_shrinks_exactly(qwen2_tok):
    tok = qwen2_tok
    vmap = vocab.VocabMap(vocab.kept_token_ids(tok), 151936)
    assert vmap.size < 200
    new = vocab.shrink_tokenizer(tok, vmap)
    texts = []
    for fmt in encoding.FORMATS:
        for task in tasks.load_tasks("arc1-eval").tasks[:100]:
            p = encoding.task_prompt(task, fmt, tok)
            texts += [p.text, p.answer]
    assert vocab.check_tokenizer(tok, new, vmap, texts) == []


# ---------------------------------------------------------------------------------------
# The 2025 families, scaled down (models.scaled_down): their tokenizers are not available
# offline, so the tiny tokenizer stands in (as for random-weight runs); what is checked is
# the model side: Gemma's scaled embedding, tying, the full-size vocabulary cut down.
# ---------------------------------------------------------------------------------------

NEW_FAMILIES = ["Qwen3-0.6B", "Gemma-3-270M", "Llama-3.2-1B", "SmolLM3-3B"]


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_shrink_scaled_down_family(name, tiny, arc_prompts):
    from transformers import AutoModelForCausalLM

    _, tok = tiny
    small = models.scaled_down(models.REGISTRY[name].config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(models.build_config(small)).eval()
    emb_type = type(model.get_input_embeddings())
    ids = tok(arc_prompts[0], add_special_tokens=False)["input_ids"][:120]
    with torch.no_grad():
        full = model(torch.tensor([ids])).logits[0]
    model, new, vmap = vocab.shrink(model, tok)
    assert type(model.get_input_embeddings()) is emb_type  # Gemma keeps its sqrt(d) scale
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.config.vocab_size == vmap.size < 150
    with torch.no_grad():
        cut = model(torch.tensor([vmap.to_new(ids)])).logits[0]
    torch.testing.assert_close(cut, full[:, vmap.kept], rtol=0, atol=1e-4)
    # Grid answers still come back through the shrunk tokenizer.
    g = np.arange(12, dtype=np.int8).reshape(3, 4) % 10
    p = encoding.build_prompt([(g, g)], g, "digits", new, answer=g)
    _, labels = encoding.tokenize_prompt(p, new)
    assert np.array_equal(
        encoding.parse_answer(new.decode([t for t in labels if t != -100]), "digits"), g
    )


def _llama3_style_tokenizer():
    """A byte-level BPE with Llama 3's split rule (digit runs cut into groups of up to
    three), trained offline on digit grids so that multi-digit tokens exist."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tm
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    bpe = Tokenizer(tm.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    rng = np.random.default_rng(0)
    corpus = [
        "\n".join("".join(map(str, r)) for r in rng.integers(0, 10, (8, 9))) for _ in range(300)
    ]
    corpus += ["input output Example Test grid rows"] * 5
    trainer = BpeTrainer(
        vocab_size=1200, special_tokens=["<|eot|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|eot|>")


def test_digit_grouping_tokenizer_shrinks_exactly():
    tok = _llama3_style_tokenizer()
    digit_tokens = [i for s, i in tok.get_vocab().items() if s.isascii() and s.isdigit()]
    assert any(len(tok.convert_ids_to_tokens(i)) == 3 for i in digit_tokens)  # groups exist
    kept = set(vocab.kept_token_ids(tok))
    assert set(digit_tokens) <= kept  # every group, not only those the corpus produced
    vmap = vocab.VocabMap(sorted(kept), len(tok))
    new = vocab.shrink_tokenizer(tok, vmap)
    rng = np.random.default_rng(7)
    grids = [
        "\n".join("".join(map(str, r)) for r in rng.integers(0, 10, (30, 30))) for _ in range(5)
    ]
    assert vocab.check_tokenizer(tok, new, vmap, grids) == []


def test_qwen3_uses_the_offline_qwen2_tokenizer(monkeypatch):
    asked = []
    monkeypatch.setattr(
        qwen2_tokenizer,
        "qwen2_tokenizer_folder",
        lambda eos, cache_dir=None: asked.append(eos) or "f",
    )
    assert qwen2_tokenizer.qwen2_tokenizer_for("Qwen3-0.6B") == "f"
    assert asked == ["<|im_end|>"]  # the post-trained Qwen3 ends turns with <|im_end|>
    assert qwen2_tokenizer.qwen2_tokenizer_for("Gemma-3-270M") is None
