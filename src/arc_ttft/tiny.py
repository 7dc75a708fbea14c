"""The tiny offline model (tests, dry runs): its BPE tokenizer, corpus and cached folder.

Also the cache helpers shared with ``models.random_weights_folder``: ``cache_root``
(``$ARC_TTFT_CACHE``), ``quiet_progress`` and ``publish_folder`` (atomic, race-safe builds).
torch, tokenizers and transformers are imported only when a model is built.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from arc_ttft.registry import TINY_CONFIG, TINY_VERSION, build_config

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_TINY_BPE_VOCAB = 400  # 256 bytes + 3 special + ~140 merges; the model's table is 512


def _base_corpus() -> list[str]:
    """Digit grids and prompt words, so the BPE learns the shapes ARC prompts have."""
    import random

    rng = random.Random(0)
    out = []
    for _ in range(200):
        h, w = rng.randint(1, 12), rng.randint(1, 12)
        rows = ["".join(str(rng.randint(0, 9)) for _ in range(w)) for _ in range(h)]
        out.append("input:\n" + "\n".join(rows) + "\noutput:\n" + "\n".join(rows[::-1]) + "\n\n")
    words = (
        "Solve the puzzle. Each example maps an input grid to an output grid. "
        "Find the rule and apply it to the test input. Example 1 Example 2 Test\n"
        "input output Input Output grid rows columns colour color shape size answer\n\n\n"
    )
    return out + [words] * 20


def _tiny_corpus() -> list[str]:
    corpus = _base_corpus()
    try:
        from arc_ttft.encoding import sample_corpus  # representative prompts, when present

        corpus += list(sample_corpus())
    except (ImportError, AttributeError):
        pass
    return corpus


@functools.lru_cache(maxsize=1)
def _tiny_corpus_cached() -> tuple[str, ...]:
    """The corpus is rebuilt from encoding's samples; once per process is enough."""
    return tuple(_tiny_corpus())


def _tiny_folder_name(corpus: list[str]) -> str:
    """tiny-v1-<hash of recipe + corpus>: a changed recipe or corpus builds a new folder."""
    digest = hashlib.sha256()
    recipe = [TINY_VERSION, TINY_CONFIG, _TINY_BPE_VOCAB, CHAT_TEMPLATE, SPECIAL_TOKENS]
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for text in corpus:
        digest.update(text.encode())
    return f"tiny-{TINY_VERSION}-{digest.hexdigest()[:10]}"


def build_tiny_tokenizer(corpus: list[str]):
    """A byte-level BPE Qwen2Tokenizer trained offline on ``corpus``.

    It uses Qwen2's pre-tokenizer, so each digit is its own token and a newline run
    stays one piece. Built as Qwen2Tokenizer(vocab, merges) because AutoTokenizer rebuilds
    a Qwen2Tokenizer from vocab and merges for model_type qwen2 anyway.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.trainers import BpeTrainer
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=_TINY_BPE_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tok = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def cache_root(cache_dir: str | Path | None) -> Path:
    root = cache_dir or os.environ.get("ARC_TTFT_CACHE") or os.path.join("~", ".cache", "arc-ttft")
    return Path(root).expanduser()


@contextlib.contextmanager
def quiet_progress():
    """No transformers progress bars while saving/loading small internal models."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def publish_folder(tmp: Path, final: Path) -> Path:
    """Move a finished build into place atomically; if another process won, keep theirs."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "config.json").is_file():
            raise
    return final


def ensure_tiny_model(cache_dir: str | Path | None = None) -> Path:
    """The tiny offline model's folder, built on first use (a few seconds).

    Qwen2 architecture: hidden 256, 4 heads, 2 kv heads (head_dim 64), 2 layers, MLP 512,
    a 512-entry embedding table and a ~400-token byte-level BPE tokenizer with ChatML
    special tokens and chat template. Random weights with a fixed seed (deterministic),
    saved as safetensors under ``$ARC_TTFT_CACHE`` (default ~/.cache/arc-ttft). Concurrent
    builders are safe: each builds into a temporary folder, then renames it into place.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    corpus = _tiny_corpus_cached()
    root = cache_root(cache_dir)
    final = root / _tiny_folder_name(corpus)
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root))
    try:
        tok = build_tiny_tokenizer(corpus)
        eos = tok.convert_tokens_to_ids("<|endoftext|>")
        # No pad_token_id in the model config: with pad == eos, Qwen2 builds the embedding
        # with padding_idx=eos, whose row is zero, and with tied embeddings the eos logit is
        # then stuck at 0 (LoRA can never learn to stop). Padding is the tokenizer's job.
        config = build_config({**TINY_CONFIG, "eos_token_id": eos})
        fork = torch.random.fork_rng(devices=[])
        with fork:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
        with quiet_progress():
            model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_folder(tmp, final)
