"""`arc-ttft bench ttt` on the tiny model: data, comparable losses, the last line."""

from __future__ import annotations

import re

import pytest

from arc_ttft import speed
from arc_ttft.cli import main
from arc_ttft.config import ConfigError, validate


def _spec(config: str, seq_len: int = 128, steps: int = 1, warmup: int = 0) -> dict:
    return {
        "model": "tiny", "tokenizer": "tiny", "steps": steps, "warmup": warmup,
        "format": "digits", "formats": ["digits"], "challenges": "arc1-eval",
        "lora_rank": 4, "lora_targets": ["q_proj", "v_proj"], "learning_rate": 1e-3,
        "device": "cpu", "ours_dtype": "bfloat16", "seq_len": seq_len, "config": config,
    }  # fmt: skip


def test_bench_samples_have_exact_length_and_answer_at_end():
    tok = speed._load_tokenizer("tiny")
    samples = speed.bench_samples(tok, 200, 3)
    assert len(samples) == 3
    for s in samples:
        assert len(s.input_ids) == len(s.labels) == 200
        assert s.labels[-1] != -100 and s.labels[0] == -100
        assert 0 < s.n_answer <= 100
    again = speed.bench_samples(tok, 200, 3)
    assert [s.input_ids for s in again] == [s.input_ids for s in samples]


def test_baseline_restricted_loss_equals_ours_fp32_at_step_zero():
    # Same random weights (fp32, seed 0) and the same sequence: the baseline's loss over
    # the kept ids equals the shrunk model's loss; its full-vocabulary loss is higher.
    base = speed.measure_one(_spec("baseline"))
    ours = speed.measure_one(_spec("ours-fp32"))
    assert base["answer_tokens"] == ours["answer_tokens"] > 0
    assert base["restricted_losses"][0] == pytest.approx(ours["losses"][0], abs=1e-3)
    assert base["losses"][0] > ours["losses"][0]
    assert ours["vocab"] < 150 and base["vocab"] is None
    assert base["peak_bytes"] > 0 and ours["sec_per_step"] > 0


def test_ours_batch_takes_that_many_sequences_a_step():
    one = speed.measure_one(_spec("ours", steps=2))
    four = speed.measure_one({**_spec("ours", steps=2), "batch_size": 4})
    assert four["batch_size"] == 4 and len(four["losses"]) == 2
    assert four["answer_tokens"] > 2 * one["answer_tokens"]
    assert one["mfu"] is None and one["model_tflops_per_s"] > 0  # no MFU on CPU


def test_flops_count_lora_and_attention_by_hand():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from arc_ttft import ttt
    from arc_ttft.config import TTTConfig

    d, m, heads, kv, hd, layers, vocab, r = 64, 128, 4, 2, 16, 2, 50, 4
    cfg = Qwen2Config(hidden_size=d, intermediate_size=m, num_attention_heads=heads,
                      num_key_value_heads=kv, head_dim=hd, num_hidden_layers=layers,
                      vocab_size=vocab, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = ttt.prepare_peft_model(
        Qwen2ForCausalLM(cfg), TTTConfig(lora_rank=r, lora_targets=["q_proj", "v_proj"])
    )
    coef = speed.flop_coefficients(model)
    frozen = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * m  # q k v o mlp
    lora = r * (d + heads * hd) + r * (d + kv * hd)  # q and v adapters
    assert coef["per_token"] == layers * (4 * frozen + 6 * lora)
    assert coef["per_answer"] == 4 * d * vocab
    assert coef["per_square"] == 6 * layers * heads * hd
    assert speed.step_flops(coef, [10, 20], 5) == (
        coef["per_token"] * 30 + coef["per_answer"] * 5 + coef["per_square"] * 500
    )


def test_peak_tflops_from_gpu_names():
    assert speed.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert speed.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert speed.peak_tflops("Tesla T4") == 65.0
    assert speed.peak_tflops("NVIDIA L4") == 121.0
    assert speed.peak_tflops("Some Future GPU") is None


def test_config_needs_baseline_and_ours():
    with pytest.raises(ConfigError, match="configs"):
        validate(speed.TTTSpeedConfig(configs=["ours"]))
    with pytest.raises(ConfigError, match="seq_len"):
        validate(speed.TTTSpeedConfig(seq_len=["abc"]))
    with pytest.raises(ConfigError, match="bench_batch_size"):
        validate(speed.TTTSpeedConfig(bench_batch_size=[0]))


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
