"""Model registry, path resolution, the tiny offline model, loading (fp32, random, 4-bit).

Through `models`, which re-exports `registry`, `rope`, `model_paths` and `tiny`; patches go
to the module that defines the name (`model_paths._download`).

Over 500 lines: every registry model family, every place a model can come from and every
precision has its own test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from arc_ttft import cli, model_paths, models, tiny
from arc_ttft.config import ModelConfig

REQUIRED = [
    "tiny",
    "Qwen2-0.5B",
    "Qwen2-0.5B-Instruct",
    "Qwen2.5-0.5B",
    "Qwen2.5-0.5B-Instruct",
    "Qwen2.5-1.5B",
    "Qwen2.5-1.5B-Instruct",
    "SmolLM-135M-Instruct",
    "SmolLM-360M-Instruct",
    "SmolLM-1.7B-Instruct",
    "Phi-1.5",
    "Phi-2",
    "Phi-3-mini-4k-instruct",
]
# The 2024-25 small models and their published sizes in millions (model cards: "0.6B",
# "270M", "1.24B", ...): the registry configs must land within 10% of them.
PUBLISHED_M = {
    "Qwen3-0.6B": 600,
    "Qwen3-1.7B": 1700,
    "Qwen3-4B": 4000,
    "Qwen3-4B-Thinking-2507": 4000,
    "Gemma-3-270M": 270,
    "Gemma-3-1B": 1000,
    "Llama-3.2-1B": 1240,
    "SmolLM2-1.7B-Instruct": 1700,
    "SmolLM3-3B": 3000,
}


@pytest.fixture(scope="module")
def tiny_path() -> Path:
    return models.ensure_tiny_model()


@pytest.fixture(scope="module")
def tiny_tok(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


# --- registry -----------------------------------------------------------------------------


def test_registry_has_the_candidates():
    assert set(REQUIRED) <= set(models.REGISTRY)
    types = {c.config["model_type"] for c in models.REGISTRY.values()}
    assert {"qwen2", "llama", "phi", "phi3", "qwen3", "gemma3_text", "smollm3"} <= types
    assert set(PUBLISHED_M) <= set(models.REGISTRY)


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_new_entry_matches_its_published_size(name):
    c = models.REGISTRY[name]
    n = models.config_params(c.config) / 1e6
    assert abs(n - PUBLISHED_M[name]) <= 0.10 * PUBLISHED_M[name], (name, n)
    assert c.lora_targets == models.LORA_TARGETS


def _special_features(model, cfg: dict) -> None:
    """The family quirk that the scaled-down copy must still have."""
    mt = cfg["model_type"]
    attn = model.model.layers[0].self_attn
    if mt in ("qwen3", "gemma3_text"):
        assert type(attn.q_norm).__name__.endswith("RMSNorm")
        assert attn.head_dim == cfg["head_dim"]  # its own setting, unlike SmolLM's
    if mt == "gemma3_text":
        assert cfg["head_dim"] != cfg["hidden_size"] // cfg["num_attention_heads"]
        assert set(cfg["layer_types"]) == {"sliding_attention", "full_attention"}
        emb = model.get_input_embeddings()
        assert float(emb.embed_scale) == pytest.approx(cfg["hidden_size"] ** 0.5)
    if mt == "smollm3":
        assert set(cfg["no_rope_layers"]) == {0, 1}
        assert [layer.self_attn.use_rope for layer in model.model.layers] == [1, 0]
    if cfg.get("rope_scaling"):  # Llama 3.2's own scaling survives
        assert model.config.rope_parameters["rope_type"] == "llama3"


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_scaled_down_entry_trains_only_lora(name):
    """A small copy of each new family: random weights, LoRA on its registered targets,
    one AdamW step moves the LoRA weights and nothing else."""
    from transformers import AutoModelForCausalLM

    from arc_ttft import ttt
    from arc_ttft.config import TTTConfig

    cand = models.REGISTRY[name]
    small = models.scaled_down(cand.config)
    assert small["model_type"] == cand.config["model_type"]
    assert small["vocab_size"] == cand.config["vocab_size"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(models.build_config(small), attn_implementation="sdpa")
    assert sum(p.numel() for p in model.parameters()) == models.config_params(small)
    _special_features(model, small)
    model.config.use_cache = False
    tcfg = TTTConfig(lora_rank=4, lora_alpha=8.0, lora_targets=list(cand.lora_targets))
    pm = ttt.prepare_peft_model(model, tcfg)
    adapted = {
        n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in pm.named_parameters() if "lora_A" in n
    }
    assert adapted == set(cand.lora_targets)
    before = {n: p.detach().clone() for n, p in pm.named_parameters()}
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 500, (1, 40))  # longer than Gemma's small 16-token window
    loss = pm(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = {n for n, p in pm.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)


def test_qwen3_4b_thinking_is_qwen3_4b_with_a_longer_context():
    base, thinking = (models.REGISTRY[n] for n in ("Qwen3-4B", "Qwen3-4B-Thinking-2507"))
    a, b = base.config, thinking.config
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {
        "max_position_embeddings",
        "rope_theta",
    }
    assert (b["max_position_embeddings"], b["rope_theta"]) == (262144, 5e6)
    assert thinking.max_context == 262144 and thinking.default_seq_len == base.default_seq_len
    assert models.find_candidate("Qwen/Qwen3-4B-Thinking-2507") is thinking


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_registry_entry_is_consistent(name):
    from transformers import AutoModelForCausalLM

    c = models.REGISTRY[name]
    cfg = c.config
    assert c.name == name
    assert models.find_candidate(c.hub_id) is c and models.find_candidate(name.lower()) is c
    assert 0 < c.default_seq_len <= c.max_context <= cfg["max_position_embeddings"]
    assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0
    assert cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
    # Parameter count: by arithmetic and by building on the meta device (no memory).
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(models.build_config(cfg))
    built = sum(p.numel() for p in model.parameters())
    assert models.config_params(cfg) == built
    assert abs(built / 1e6 - c.params_m) <= 0.10 * c.params_m, (built, c.params_m)


def test_arc_nano_is_bundled_and_matches_its_registry_entry():
    path = models.resolve_model_path("arc-nano", search_roots=[], download=False)
    assert path == models.BUNDLED_MODELS["arc-nano"]
    shipped = json.loads((path / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        assert shipped[key] == models.ARC_NANO_CONFIG[key], key
    card = (path / "README.md").read_text()
    assert "pretrain_base.py" in card and "--seed" in card  # the exact command is kept
    assert models.REGISTRY["arc-nano"].grid_format == "digits"


def test_a_model_with_a_registered_format_rejects_another():
    from arc_ttft import config as C

    ok = C.from_flat(C.RunConfig, {"model": "arc-nano"})
    assert C.problems(ok) == []
    bad = C.from_flat(C.RunConfig, {"model": "arc-nano", "format": "shaped"})
    assert C.problems(bad) == [
        "format: arc-nano was trained on the 'digits' grid format, not 'shaped'; "
        "use --format digits"
    ]
    # A registered format is the default: arc-nano3 runs as `--model arc-nano3` (it was
    # refused in its default digits before), and another format is still refused.
    nano3 = C.from_flat(C.RunConfig, {"model": "arc-nano3"})
    assert nano3.model.format == "shaped" and C.problems(nano3) == []
    assert C.problems(C.from_flat(C.RunConfig, {"model": "arc-nano3", "format": "digits"}))


@pytest.mark.parametrize("name", sorted(models.BUNDLED_MODELS))
def test_every_bundled_model_loads_with_its_registry_entry_and_card(name):
    from transformers import AutoModelForCausalLM

    path = models.resolve_model_path(name, search_roots=[], download=False)
    assert path == models.BUNDLED_MODELS[name]
    model = AutoModelForCausalLM.from_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - models.REGISTRY[name].params_m) < 0.01
    card = (path / "README.md").read_text()
    assert "--seed" in card and f"--format {models.REGISTRY[name].grid_format}" in card


def test_default_seq_len(tmp_path):
    assert models.default_seq_len("Qwen2.5-0.5B-Instruct") == 8192
    assert models.default_seq_len("Qwen/Qwen2.5-0.5B-Instruct") == 8192
    assert models.default_seq_len("tiny") == models.REGISTRY["tiny"].default_seq_len
    assert models.default_seq_len("no-such-model") == 2048
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    assert models.default_seq_len(str(tmp_path)) == 1024


# --- the tiny model -----------------------------------------------------------------------


def test_tiny_model_folder(tiny_path):
    names = {p.name for p in tiny_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    assert not list(tiny_path.glob("*.bin"))
    assert tiny_path.name.startswith(f"tiny-{models.TINY_VERSION}-")
    cfg = json.loads((tiny_path / "config.json").read_text())
    assert cfg["model_type"] == "qwen2"
    shape = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"])
    assert shape == (256, 4, 2)
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64  # vLLM CPU accepts head_dim 64
    assert models.ensure_tiny_model() == tiny_path  # built once


def test_tiny_model_is_deterministic(tmp_path, tiny_path):
    other = models.ensure_tiny_model(tmp_path)
    assert other.name == tiny_path.name

    def digest(p: Path) -> str:
        return hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()

    assert digest(other) == digest(tiny_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny-build-")]


def test_publish_keeps_the_winner_of_a_race(tmp_path):
    final = tmp_path / "tiny-x"
    final.mkdir()
    (final / "config.json").write_text("{}")
    loser = tmp_path / ".tiny-build-1"
    loser.mkdir()
    (loser / "config.json").write_text('{"loser": true}')
    assert tiny.publish_folder(loser, final) == final
    assert not loser.exists()
    assert (final / "config.json").read_text() == "{}"


def test_tiny_tokenizer_round_trips_through_autotokenizer(tiny_tok):
    from transformers import Qwen2Tokenizer

    assert isinstance(tiny_tok, Qwen2Tokenizer)
    assert 300 <= len(tiny_tok) <= 512
    text = "Solve this.\ninput:\n0123456789\n9876543210\n\n\noutput:\n00\n11\n"
    ids = tiny_tok(text, add_special_tokens=False)["input_ids"]
    assert tiny_tok.decode(ids) == text
    pieces = [tiny_tok.decode([i]) for i in ids]
    assert "\n\n\n" in pieces  # a newline run is one token
    # every digit is its own token, never merged with a neighbour
    assert all(len(p) == 1 for p in pieces if any(ch.isdigit() for ch in p))
    assert sum(p.isdigit() for p in pieces) == sum(ch.isdigit() for ch in text)
    digit_ids = [tiny_tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    assert len(set(digit_ids)) == 10


def test_tiny_tokenizer_special_tokens_and_chat_template(tiny_tok):
    assert tiny_tok.eos_token == "<|endoftext|>" and tiny_tok.pad_token == "<|endoftext|>"
    for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        ids = tiny_tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tiny_tok.decode(ids) == t
    msgs = [{"role": "user", "content": "input:\n12\n"}]
    text = tiny_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\ninput:\n12\n<|im_end|>\n<|im_start|>assistant\n"


# --- loading ------------------------------------------------------------------------------


def test_load_tiny_and_forward(tiny_path):
    model, tok = models.load_model(ModelConfig(model="tiny"), device="cpu")
    assert model.dtype == torch.float32 and not model.training
    assert tok.pad_token_id is not None
    batch = tok(["input:\n12\n34\n"], return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape == (1, batch["input_ids"].shape[1], 512)
    assert torch.isfinite(out.logits).all()


def test_load_for_training_turns_off_cache():
    model, _ = models.load_model(ModelConfig(model="tiny"), device="cpu", for_training=True)
    assert model.training and model.config.use_cache is False


def test_random_weights_smollm_builds_from_inline_config():
    cfg = ModelConfig(model="SmolLM-135M-Instruct", random_weights=True, dtype="bfloat16")
    model, tok = models.load_model(cfg, device="cpu")
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert model.dtype == torch.bfloat16
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 134.5) < 1
    # No real tokenizer offline: the tiny one stands in (timing only), ids fit the vocab.
    ids = tok("input:\n12\n", return_tensors="pt")["input_ids"]
    assert int(ids.max()) < model.config.vocab_size
    with torch.no_grad():
        assert model(ids).logits.shape[-1] == 49152


def test_missing_model_without_random_weights_raises():
    with pytest.raises(models.ModelNotFoundError):
        models.load_tokenizer(ModelConfig(model="Qwen2.5-0.5B-Instruct"))


def test_pick_and_resolve_dtype(monkeypatch):
    assert models.pick_dtype("cpu") == torch.float32
    assert models.pick_dtype(None) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (7, 5))  # T4
    assert models.pick_dtype("cuda:1") == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (8, 9))  # L4
    assert models.pick_dtype("cuda:0") == torch.bfloat16
    assert models.resolve_dtype("float32", "cuda:0") == torch.float32
    assert models.resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        models.resolve_dtype("fp8")


def test_int4_lora_forward_backward_on_cpu():
    pytest.importorskip("bitsandbytes", reason="bitsandbytes not installed")
    from peft import LoraConfig, get_peft_model

    model, tok = models.load_model(
        ModelConfig(model="tiny", int4=True), device="cpu", for_training=True
    )
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    batch = tok("input:\n12\n34\noutput:\n43\n21\n", return_tensors="pt")
    out = peft_model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_random_weights_int4_quantizes_a_saved_copy(tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes not installed")
    monkeypatch.setenv("ARC_TTFT_CACHE", str(tmp_path))
    cfg = ModelConfig(model="tiny", random_weights=True, int4=True)
    model, _ = models.load_model(cfg, device="cpu")
    assert type(model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    saved = [p for p in tmp_path.iterdir() if p.name.startswith("random-tiny-float32-")]
    assert len(saved) == 1 and (saved[0] / "model.safetensors").is_file()


# --- resolving paths ----------------------------------------------------------------------


def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """An empty hub cache under HF_HOME (offline)."""
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def _cache_snapshot(hub: Path, hub_id: str, rev: str = "abc123") -> Path:
    repo = hub / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    return _fake_model(repo / "snapshots" / rev)


def test_resolve_explicit_path_first(tmp_path, fake_hub):
    folder = _fake_model(tmp_path / "my-model")
    kaggle = tmp_path / "kaggle"
    _fake_model(kaggle / "my-model")
    assert models.resolve_model_path(str(folder), search_roots=[kaggle]) == folder


def test_resolve_kaggle_before_hub_cache(tmp_path, fake_hub):
    kaggle = tmp_path / "kaggle"
    hit = _fake_model(kaggle / "qwen2.5-0.5b-instruct")
    _fake_model(kaggle / "qwen2.5-0.5b")  # a near name must not match
    _cache_snapshot(fake_hub, "Qwen/Qwen2.5-0.5B-Instruct")
    assert models.resolve_model_path("Qwen2.5-0.5B-Instruct", search_roots=[kaggle]) == hit
    assert models.resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct", search_roots=[kaggle]) == hit


def test_resolve_kaggle_models_layout(tmp_path, fake_hub):
    kaggle = tmp_path / "kaggle"
    _fake_model(kaggle / "qwen2.5" / "transformers" / "0.5b-instruct" / "1")
    hit = _fake_model(kaggle / "qwen2.5" / "transformers" / "0.5b-instruct" / "2")
    assert models.resolve_model_path("Qwen2.5-0.5B-Instruct", search_roots=[kaggle]) == hit


def test_resolve_base_name_finds_the_attached_instruct_variant(tmp_path, fake_hub):
    """README attaches Qwen2-0.5B-Instruct and passes Qwen2-0.5B: that must find it."""
    kaggle = tmp_path / "kaggle"
    hit = _fake_model(kaggle / "qwen2-0.5b-instruct")
    assert models.resolve_model_path("Qwen2-0.5B", search_roots=[kaggle]) == hit
    assert models.resolve_model_path("Qwen/Qwen2-0.5B", search_roots=[kaggle]) == hit
    # Kaggle Models layout: qwen2/transformers/0.5b-instruct/<version>
    models_layout = tmp_path / "kaggle-models"
    hit = _fake_model(models_layout / "qwen2" / "transformers" / "0.5b-instruct" / "1")
    assert models.resolve_model_path("Qwen2-0.5B", search_roots=[models_layout]) == hit
    # An exact match wins over the variant.
    exact = _fake_model(kaggle / "qwen2-0.5b")
    assert models.resolve_model_path("Qwen2-0.5B", search_roots=[kaggle]) == exact
    # The variant is only ever the instruct one of the same model.
    with pytest.raises(models.ModelNotFoundError):
        models.resolve_model_path("Qwen2.5-0.5B", search_roots=[kaggle])


def test_resolve_kaggle_newest_version_by_number(tmp_path, fake_hub):
    kaggle = tmp_path / "kaggle"
    for v in ("9", "10"):
        _fake_model(kaggle / "qwen2.5" / "transformers" / "0.5b-instruct" / v)
    found = models.resolve_model_path("Qwen2.5-0.5B-Instruct", search_roots=[kaggle])
    assert found.name == "10"


def test_not_found_lists_the_kaggle_folders_seen(tmp_path, fake_hub):
    kaggle = tmp_path / "kaggle"
    _fake_model(kaggle / "smollm2" / "transformers" / "135m-instruct" / "1")
    (kaggle / "arc-prize-2025").mkdir()
    (kaggle / "empty-model").mkdir()
    (kaggle / "empty-model" / "config.json").write_text("{}")
    with pytest.raises(models.ModelNotFoundError) as e:
        models.resolve_model_path("Qwen2-0.5B", search_roots=[kaggle])
    kaggle_line = next(line for line in e.value.looked if line.startswith("Kaggle inputs"))
    assert "qwen2-0.5b / qwen2-0.5b-instruct" in kaggle_line  # both names it answers to
    assert "smollm2/transformers/135m-instruct/1" in kaggle_line
    assert "empty-model (no *.safetensors)" in kaggle_line
    assert "other inputs arc-prize-2025" in kaggle_line


def test_resolve_hub_cache(tmp_path, fake_hub):
    snap = _cache_snapshot(fake_hub, "HuggingFaceTB/SmolLM-135M-Instruct")
    empty = tmp_path / "kaggle"
    assert models.resolve_model_path("SmolLM-135M-Instruct", search_roots=[empty]) == snap
    # a hub id outside the registry works too
    snap2 = _cache_snapshot(fake_hub, "someone/other-model")
    assert models.resolve_model_path("someone/other-model", search_roots=[empty]) == snap2


def test_resolve_downloads_only_when_online(tmp_path, fake_hub, monkeypatch):
    calls = []

    def fake_download(hub_id):
        calls.append(hub_id)
        return _fake_model(tmp_path / "downloaded")

    monkeypatch.setattr(model_paths, "_download", fake_download)  # where it is called
    with pytest.raises(models.ModelNotFoundError):
        models.resolve_model_path("Phi-2", search_roots=[])
    assert calls == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert models.resolve_model_path("Phi-2", search_roots=[]) == tmp_path / "downloaded"
    assert calls == ["microsoft/phi-2"]
    with pytest.raises(models.ModelNotFoundError):
        models.resolve_model_path("Phi-2", search_roots=[], download=False)


def test_offline_error_lists_every_place(tmp_path, fake_hub):
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    with pytest.raises(models.ModelNotFoundError) as e:
        models.resolve_model_path("Qwen2.5-0.5B-Instruct", search_roots=[kaggle])
    msg = str(e.value)
    assert len(e.value.looked) == 4
    assert "explicit path" in msg
    assert str(kaggle) in msg and "qwen2.5-0.5b-instruct" in msg
    assert str(fake_hub / "models--Qwen--Qwen2.5-0.5B-Instruct") in msg
    assert "HF_HUB_OFFLINE" in msg
    assert "Kaggle" in e.value.fix and "--model" in e.value.fix


def test_folder_without_config_is_reported(tmp_path, fake_hub):
    (tmp_path / "weights").mkdir()
    with pytest.raises(models.ModelNotFoundError, match="holds no config.json"):
        models.resolve_model_path(str(tmp_path / "weights"), search_roots=[])


# --- CLI ----------------------------------------------------------------------------------


def test_cli_models_prints_the_registry(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["name", "hub"]
    assert len(lines) == 2 + len(models.REGISTRY)
    for name in REQUIRED:
        assert name in out
    row = next(line for line in lines if line.startswith("Qwen2.5-0.5B-Instruct "))
    assert row.split()[1:] == ["Qwen/Qwen2.5-0.5B-Instruct", "494.0", "32768", "8192"]


def test_registered_run_defaults_apply_unless_set(monkeypatch, tmp_path):
    import dataclasses

    from arc_ttft import config as C

    cand = dataclasses.replace(
        models.REGISTRY["tiny"], run_defaults={"learning_rate": 3e-3, "ttt_transforms": "none"}
    )
    monkeypatch.setitem(models.REGISTRY, "tiny", cand)
    cfg = C.from_flat(C.RunConfig, {"model": "tiny"})
    assert cfg.ttt.learning_rate == 3e-3 and cfg.ttt.ttt_transforms == "none"
    cfg = C.from_flat(C.RunConfig, {"model": "tiny", "learning_rate": "1e-4"})
    assert cfg.ttt.learning_rate == 1e-4 and cfg.ttt.ttt_transforms == "none"
    # another model gets the plain defaults; the written config reads back unchanged
    other = C.from_flat(C.RunConfig, {"model": "Qwen2-0.5B"})
    assert other.ttt.learning_rate == C.TTTConfig().learning_rate
    C.save(cfg, tmp_path / "config.json")
    assert C.load(C.RunConfig, tmp_path / "config.json") == cfg


def test_arc_nano3_trains_its_adapters_on_the_views_that_fit_each_task():
    """arc-nano3's and arc-nano4's registered TTT (docs/real-arc.md): both view families,
    64 steps each for arc-nano3, 128 for arc-nano4 (tuned on arc1-train-small, which it
    never saw); arc-nano and arc-nano2 keep permuted colours, 64 steps."""
    from arc_ttft import config as C

    for name, steps in (("arc-nano3", 128), ("arc-nano4", 256)):
        ttt = C.from_flat(C.RunConfig, {"model": name}).ttt
        assert (ttt.ttt_colours, ttt.ttt_steps, ttt.ttt_transforms) == ("fit", steps, "none")
    assert C.from_flat(C.RunConfig, {"model": "arc-nano4"}).model.format == "digits"
    for name in ("arc-nano", "arc-nano2"):
        ttt = C.from_flat(C.RunConfig, {"model": name}).ttt
        assert (ttt.ttt_colours, ttt.ttt_steps) == ("permute", 64)


# --- RoPE scaling ---------------------------------------------------------------------------


def test_rope_changes_follow_transformers_and_vllm_conventions():
    smol = models.REGISTRY["SmolLM-135M-Instruct"].config  # 2k context
    yarn = models.rope_changes(smol, "yarn:4")
    assert yarn == {
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": 4.0,
            "rope_theta": 10000.0,
            "original_max_position_embeddings": 2048,
        },
        "max_position_embeddings": 8192,  # YaRN: the scaled length (vLLM reads it as is)
    }
    linear = models.rope_changes(smol, "linear:2")
    assert linear == {
        "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    }
    assert models.context_length({**smol, **linear}) == 4096  # vLLM: 2048 x factor
    assert models.context_length({**smol, **yarn}) == 8192
    # Gemma 3: only the global layers, the sliding ones keep their local base.
    gemma = models.rope_changes(models.REGISTRY["Gemma-3-270M"].config, "linear:2")
    assert gemma["rope_parameters"]["sliding_attention"] == {
        "rope_type": "default",
        "rope_theta": 10000.0,
    }
    assert gemma["rope_parameters"]["full_attention"]["factor"] == 2.0
    assert gemma["max_position_embeddings"] == 65536
    # Llama 3.2 is scaled already: no stacking, a clear error.
    with pytest.raises(ValueError, match="already uses llama3 RoPE scaling"):
        models.rope_changes(models.REGISTRY["Llama-3.2-1B"].config, "yarn:2")
    with pytest.raises(ValueError, match="linear:FACTOR or yarn:FACTOR"):
        models.parse_rope_scaling("ntk:2")


def test_default_seq_len_grows_with_rope_scaling():
    assert models.default_seq_len("SmolLM-135M-Instruct", "yarn:4") == 8192
    assert models.default_seq_len("SmolLM-135M-Instruct") == 2048
    cfg = ModelConfig(model="SmolLM-135M-Instruct", rope_scaling="linear:2")
    assert models.resolve_max_seq_len(cfg) == 4096
    cfg = ModelConfig(model="SmolLM-135M-Instruct", rope_scaling="linear:2", max_seq_len=3000)
    assert models.resolve_max_seq_len(cfg) == 3000


@pytest.mark.parametrize("spec", ["yarn:4", "linear:2"])
def test_rope_scaled_tiny_loads_trains_and_saves(spec, tmp_path, tiny_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from arc_ttft import ttt
    from arc_ttft.config import TTTConfig

    cfg = ModelConfig(model="tiny", rope_scaling=spec)
    model, tok = models.load_model(cfg, device="cpu", for_training=True)
    kind, factor = models.parse_rope_scaling(spec)
    rope = model.config.rope_parameters
    assert rope["rope_type"] == kind and rope["factor"] == factor
    assert models.context_length(model.config) == int(8192 * factor)
    # The scaling is really applied: same weights, other logits than the plain model.
    plain, _ = models.load_model(ModelConfig(model="tiny"), device="cpu")
    ids = tok("input:\n0123\n4567\noutput:\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, plain(ids).logits)
    # One LoRA step trains.
    pm = ttt.prepare_peft_model(model, TTTConfig(lora_rank=4, lora_targets=["q_proj", "v_proj"]))
    loss = pm(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in pm.named_parameters() if "lora_B" in n)
    # Saved, config.json carries it; a later load (and vLLM) read it back, nothing to add.
    out = tmp_path / "scaled"
    pm.unload().save_pretrained(out)
    tok.save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == kind
    assert AutoConfig.from_pretrained(out).rope_parameters["factor"] == factor
    assert models.rope_overrides(ModelConfig(model=str(out), rope_scaling=spec)) is None
    again, _ = models.load_model(ModelConfig(model=str(out), rope_scaling=spec), device="cpu")
    assert again.config.rope_parameters == model.config.rope_parameters
    assert (
        AutoModelForCausalLM.from_pretrained(out).config.max_position_embeddings
        == (saved["max_position_embeddings"])
    )
    # The unscaled folder needs vLLM overrides: exactly the keys written above.
    over = models.rope_overrides(cfg, tiny_path)
    assert over["rope_parameters"] == saved["rope_parameters"]
    assert over.get("max_position_embeddings", 8192) == saved["max_position_embeddings"]


def test_random_weights_are_built_scaled(monkeypatch, tmp_path):
    monkeypatch.setenv("ARC_TTFT_CACHE", str(tmp_path))
    cfg = ModelConfig(model="SmolLM3-3B", random_weights=True, rope_scaling="yarn:2")
    config = models._random_config(cfg.model, False, cfg.rope_scaling)
    assert config.rope_parameters["rope_type"] == "yarn"
    assert config.max_position_embeddings == 131072 and config.no_rope_layers[3] == 0
    assert models.rope_overrides(ModelConfig(model="tiny")) is None  # nothing asked


def test_rope_overrides_for_a_transformers_4_vllm(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    cfg = ModelConfig(model="Gemma-3-270M", rope_scaling="yarn:2")
    assert models.rope_overrides(cfg) == {
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 2.0,
            "original_max_position_embeddings": 32768,
        },
        "max_position_embeddings": 65536,
    }


def test_gemma_instruct_folder_is_found_by_base_name(tmp_path, fake_hub):
    kaggle = tmp_path / "kaggle"
    hit = _fake_model(kaggle / "gemma-3" / "transformers" / "gemma-3-1b-it" / "1")
    assert models.resolve_model_path("Gemma-3-1B", search_roots=[kaggle]) == hit


def test_random_weights_folder_carries_the_tokenizer():
    """vLLM loads the tokenizer from the folder it serves: a random-weights folder must hold
    the same tokenizer training used (it once held none, and vLLM got a 1-token one)."""
    import torch
    from transformers import AutoTokenizer

    cfg = ModelConfig(model="arc-nano", random_weights=True)
    folder = models.random_weights_folder(cfg, torch.float32)
    saved = AutoTokenizer.from_pretrained(folder)
    want = models.load_tokenizer(cfg)
    assert len(saved) == len(want) > 300
    assert saved("12\n34")["input_ids"] == want("12\n34")["input_ids"]


# --- module layout ------------------------------------------------------------------------


def test_models_re_exports_the_split_modules_names():
    """``models.X`` is the very object its home module defines (registry, rope,
    model_paths, tiny), so callers of the re-exports see the same registry and functions."""
    from arc_ttft import registry, rope

    moved = 0
    for name in models.__all__:
        obj = getattr(models, name)
        homes = [h for h in (registry, rope, model_paths, tiny) if name in vars(h)]
        if homes:
            assert all(vars(h)[name] is obj for h in homes), name
            moved += 1
        else:
            assert obj.__module__ == "arc_ttft.models", name  # loading, defined here
    assert moved > 30 and models.REGISTRY is registry.REGISTRY


def test_registry_rope_and_paths_import_without_torch():
    """config imports find_candidate before torch is needed: the light modules stay light."""
    import subprocess
    import sys

    code = (
        "import sys; import arc_ttft.registry, arc_ttft.rope, arc_ttft.model_paths, "
        "arc_ttft.tiny, arc_ttft.models; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
