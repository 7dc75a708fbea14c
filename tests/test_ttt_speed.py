"""`arc-ttft bench ttt` on the tiny model: data, comparable losses, the last line."""

from __future__ import annotations

import re

import pytest

from arc_ttft.cli import main
from arc_ttft.config import ConfigError, validate
from arc_ttft.research import ttt_speed


def _spec(config: str, seq_len: int = 128, steps: int = 1, warmup: int = 0) -> dict:
    return {
        "model": "tiny", "tokenizer": "tiny", "steps": steps, "warmup": warmup,
        "format": "digits", "formats": ["digits"], "challenges": "arc1-eval",
        "lora_rank": 4, "lora_targets": ["q_proj", "v_proj"], "learning_rate": 1e-3,
        "device": "cpu", "ours_dtype": "bfloat16", "seq_len": seq_len, "config": config,
    }  # fmt: skip


def test_bench_samples_have_exact_length_and_answer_at_end():
    tok = ttt_speed._load_tokenizer("tiny")
    samples = ttt_speed.bench_samples(tok, 200, 3)
    assert len(samples) == 3
    for s in samples:
        assert len(s.input_ids) == len(s.labels) == 200
        assert s.labels[-1] != -100 and s.labels[0] == -100
        assert 0 < s.n_answer <= 100
    again = ttt_speed.bench_samples(tok, 200, 3)
    assert [s.input_ids for s in again] == [s.input_ids for s in samples]


def test_baseline_restricted_loss_equals_ours_fp32_at_step_zero():
    # Same random weights (fp32, seed 0) and the same sequence: the baseline's loss over
    # the kept ids equals the shrunk model's loss; its full-vocabulary loss is higher.
    base = ttt_speed.measure_one(_spec("baseline"))
    ours = ttt_speed.measure_one(_spec("ours-fp32"))
    assert base["answer_tokens"] == ours["answer_tokens"] > 0
    assert base["restricted_losses"][0] == pytest.approx(ours["losses"][0], abs=1e-3)
    assert base["losses"][0] > ours["losses"][0]
    assert ours["vocab"] < 150 and base["vocab"] is None
    assert base["peak_bytes"] > 0 and ours["sec_per_step"] > 0


def test_ours_batch_takes_that_many_sequences_a_step():
    one = ttt_speed.measure_one(_spec("ours", steps=2))
    four = ttt_speed.measure_one({**_spec("ours", steps=2), "batch_size": 4})
    assert four["batch_size"] == 4 and len(four["losses"]) == 2
    assert four["answer_tokens"] > 2 * one["answer_tokens"]
    assert one["mfu"] is None and one["model_tflops_per_s"] > 0  # no MFU on CPU


def test_flops_count_lora_and_attention_by_hand():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from arc_ttft import ttt
    from arc_ttft.config import TTTConfig

    cfg = Qwen2Config(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, num_hidden_layers=2,
                      vocab_size=50, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = ttt.prepare_peft_model(
        Qwen2ForCausalLM(cfg), TTTConfig(lora_rank=4, lora_targets=["q_proj", "v_proj"])
    )
    coef = ttt_speed.flop_coefficients(model)
    # Counted by hand, per layer. Frozen weights: q 64x64 = 4096, k 64x32 = 2048,
    # v 2048, o 4096, gate/up/down 3 x 64x128 = 24576; 36864 in all, 4 FLOPs each per
    # token (forward 2, input gradient 2) = 147456. LoRA (rank 4, trained, 6 FLOPs each):
    # q A 64x4 + B 4x64 = 512, v A 64x4 + B 4x32 = 384; 896 x 6 = 5376.
    # 2 layers x (147456 + 5376) = 305664.
    assert coef["per_token"] == 305_664
    # lm_head 64 x 50 = 3200 frozen weights x 4, at answer positions only.
    assert coef["per_answer"] == 12_800
    # attention: 6 x 2 layers x 4 heads x 16 = 768 per L^2
    assert coef["per_square"] == 768
    # two sequences of 10 and 20 tokens, 5 answer tokens:
    # 305664 x 30 + 12800 x 5 + 768 x (100 + 400) = 9169920 + 64000 + 384000
    assert ttt_speed.step_flops(coef, [10, 20], 5) == 9_617_920


def test_flops_of_qwen2_0_5b_follow_the_6n_rule():
    """Against published figures: Qwen2(.5)-0.5B has 0.49B parameters, 0.36B of them
    outside the embedding (model card); training costs 6 FLOPs per parameter per token
    (Kaplan et al. 2020, C = 6N), plus 6 x n_layer x n_ctx x d_attn for attention."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # The published architecture: hidden 896, MLP 4864, 24 layers, 14 query heads and
    # 2 KV heads of 64, vocabulary 151936, tied embeddings.
    cfg = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                      tie_word_embeddings=True)  # fmt: skip
    with torch.device("meta"):  # shapes only, no memory
        model = Qwen2ForCausalLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(0.494e9, rel=1e-3)
    full = ttt_speed.flop_coefficients(model)  # every weight trained
    assert full["per_token"] == pytest.approx(6 * 0.36e9, rel=0.01)
    # The output head: 151936 x 896 = 136,134,656 weights, 6 FLOPs each when trained.
    assert full["per_answer"] == 6 * 136_134_656
    # 6 x 24 layers x (14 x 64 = 896): 129,024 FLOPs per L^2.
    assert full["per_square"] == 129_024
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = ttt_speed.flop_coefficients(model)  # no weight gradients: 4 of the 6
    assert frozen["per_token"] == pytest.approx(4 * 0.36e9, rel=0.01)
    assert frozen["per_answer"] == 4 * 136_134_656
    # One 1024-token sequence, all trained: about 6 x 0.36e9 x 1024 = 2.21 TFLOP for the
    # weights, + 129024 x 1024^2 = 0.135 TFLOP attention, + the head at 100 answer tokens
    # (6 x 136.1M x 100 = 0.082 TFLOP): 2.43 TFLOP.
    assert ttt_speed.step_flops(full, [1024], 100) == pytest.approx(2.43e12, rel=0.01)


def test_peak_tflops_from_gpu_names():
    # NVIDIA datasheets, dense 16-bit tensor peaks (half the "with sparsity" figure):
    # H100 SXM bf16 1,979 sparse -> 989.5; H100 PCIe 1,513 -> 756.5; H200 as H100 SXM;
    # A100 bf16 312; L40S bf16 362.05; L4 bf16 242 sparse -> 121; T4 (no bf16) fp16 65.
    published = {
        "NVIDIA H100 80GB HBM3": 989.5,
        "NVIDIA H100 PCIe": 756.5,
        "NVIDIA H200": 989.5,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA A100-PCIE-40GB": 312.0,
        "NVIDIA L40S": 362.05,
        "NVIDIA L4": 121.0,
        "Tesla T4": 65.0,
    }
    for name, tflops in published.items():
        assert ttt_speed.peak_tflops(name) == pytest.approx(tflops, rel=0.01), name
    assert ttt_speed.peak_tflops("Some Future GPU") is None


def test_config_needs_baseline_and_ours():
    with pytest.raises(ConfigError, match="configs"):
        validate(ttt_speed.TTTSpeedConfig(configs=["ours"]))
    with pytest.raises(ConfigError, match="seq_len"):
        validate(ttt_speed.TTTSpeedConfig(seq_len=["abc"]))
    with pytest.raises(ConfigError, match="bench_batch_size"):
        validate(ttt_speed.TTTSpeedConfig(bench_batch_size=[0]))


LAST = r"speedup: \d+\.\d\dx tokens/s, memory: \d+\.\d\dx peak"


def test_cli_bench_ttt_prints_the_ratio_line_last(capsys, tmp_path):
    out = tmp_path / "speed.json"
    rc = main(["bench", "ttt", "--model", "tiny", "--seq-len", "128", "--steps", "2",
               "--bench-lora-rank", "4", "--isolate", "false", "--output", str(out)])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert re.fullmatch(LAST, lines[-1])
    assert any(line.startswith("| 128 | baseline | 1 | full |") for line in lines)
    assert out.is_file() and '"restricted_losses"' in out.read_text()


@pytest.mark.slow
def test_cli_bench_ttt_in_subprocesses(capsys):
    rc = main(["bench", "ttt", "--model", "tiny", "--seq-len", "128", "--steps", "2",
               "--bench-lora-rank", "4"])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and re.fullmatch(LAST, lines[-1])
