"""TTT precision: fp16 bases train with autocast + loss scaling; bf16 LoRA is refused where
the GPU has no bf16. CPU only: torch 2.13 runs fp16 autocast and GradScaler("cpu") there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arc_ttft import models, ttt, ttt_samples
from arc_ttft.config import ModelConfig, TTTConfig
from arc_ttft.tasks import Example, Task


def _task() -> Task:
    rng = np.random.default_rng(2)
    pairs = []
    for _ in range(4):
        g = rng.integers(0, 10, size=(3, 4)).astype(np.int8)
        pairs.append(Example(g, g[:, ::-1].copy()))
    return Task("flip", pairs[:-1], pairs[-1:])


@pytest.fixture(scope="module")
def samples():
    return ttt_samples.make_samples(_task(), "digits", models._tiny_tokenizer(), 4, seed=0)


def _peft(dtype, cfg):
    model = models.build_random_model(ModelConfig(model="tiny"), dtype, seed=3)
    pm = ttt.prepare_peft_model(model, cfg)
    ttt.reset_adapter(pm, seed=5)
    return pm


def _lora(pm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}


def test_fp16_base_tracks_fp32_with_fp32_lora_and_a_scaler(samples, monkeypatch):
    cfg = TTTConfig(lora_rank=8, learning_rate=1e-3, warmup_steps=0)
    autocast = []
    real = ttt_samples.answer_loss

    def spy(model, batch):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return real(model, batch)

    monkeypatch.setattr(ttt, "answer_loss", spy)
    runs = {}
    for dtype in (torch.float32, torch.float16):
        pm = _peft(dtype, cfg)
        info: dict = {}
        losses = ttt.train_steps(pm, samples, cfg, 12, info=info)[0]
        lora = {p.dtype for p in pm.parameters() if p.requires_grad}
        runs[dtype] = (losses, info, lora)
    fp32, info32, lora32 = runs[torch.float32]
    fp16, info16, lora16 = runs[torch.float16]
    # fp32 LoRA weights on the fp16 base (peft's upcast), autocast and a scaler there only
    assert lora32 == lora16 == {torch.float32}
    assert autocast == [False] * 12 + [True] * 12
    assert info32["loss_scale"] is None and info16["loss_scale"] > 1
    # Same start, same data: the curves agree to fp16 precision, and both learn.
    assert fp16[0] == pytest.approx(fp32[0], rel=1e-2)
    assert np.allclose(fp16, fp32, rtol=0.02)
    assert np.mean(fp16[-4:]) < 0.85 * np.mean(fp16[:4])


def test_an_overflowing_step_is_skipped_not_applied(samples, monkeypatch):
    """An inf loss (as an fp16 overflow gives) must leave the weights as they were."""
    cfg = TTTConfig(lora_rank=8, learning_rate=1e-3, warmup_steps=0)
    pm = _peft(torch.float16, cfg)
    calls = []
    real = ttt_samples.answer_loss

    def overflow_at_step_1(model, batch):
        loss, n = real(model, batch)
        calls.append(1)
        return (loss * float("inf") if len(calls) == 2 else loss), n

    monkeypatch.setattr(ttt, "answer_loss", overflow_at_step_1)
    after = []
    info: dict = {}
    losses = ttt.train_steps(
        pm, samples, cfg, 4, on_step=lambda s, x: after.append(_lora(pm)), info=info
    )[0]
    assert all(torch.isfinite(p).all() for p in _lora(pm).values())
    assert np.isfinite([losses[0], losses[2], losses[3]]).all()
    for name, w in after[1].items():  # the skipped step changed nothing
        assert torch.equal(w, after[0][name]), name
    assert any(not torch.equal(w, after[1][n]) for n, w in after[2].items())  # the next did
    assert info["skipped_steps"] == 1 and info["loss_scale"] == ttt.INIT_LOSS_SCALE / 2


def test_bf16_lora_is_refused_without_bf16_support(monkeypatch):
    calls = []

    def no_bf16(including_emulation=True):
        calls.append(including_emulation)
        return False

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", no_bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    bf16 = TTTConfig(lora_dtype="bfloat16")
    with pytest.raises(ValueError) as err:
        ttt.check_lora_dtype(bf16, "cuda:0")
    msg = str(err.value)
    assert "lora_dtype" in msg and "cuda:0" in msg and "Tesla T4" in msg
    assert "--lora-dtype float32" in msg
    assert calls == [False]  # emulated bf16 (which a T4 has) does not count
    ttt.check_lora_dtype(TTTConfig(lora_dtype="float32"), "cuda:0")  # fine
    ttt.check_lora_dtype(bf16, "cpu")  # CPUs run bf16

    # prepare_peft_model asks before touching the model
    model = models.build_random_model(ModelConfig(model="tiny"), torch.float32, seed=0)
    monkeypatch.setattr(ttt, "_device_of", lambda m: torch.device("cuda:0"))
    with pytest.raises(ValueError, match="--lora-dtype float32"):
        ttt.prepare_peft_model(model, bf16)
    assert not any("lora" in n for n, _ in model.named_parameters())

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    ttt.check_lora_dtype(bf16, "cuda:0")  # an A100 / L4 / H100
