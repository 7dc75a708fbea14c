"""`arc-ttft candidates` (and the CLI of both model searches) on the tiny offline model."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from arc_ttft import cli, ttt
from arc_ttft.config import ConfigError, command_line, from_flat
from arc_ttft.research import candidates, rank_sweep


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_config_reads_lists_of_ints():
    cfg = from_flat(
        candidates.CandidatesConfig, {"seq_lens": "256,512", "models": "tiny,Qwen2-0.5B"}
    )
    assert cfg.seq_lens == [256, 512]
    assert cfg.models == ["tiny", "Qwen2-0.5B"]
    with pytest.raises(ConfigError, match="seq_lens"):
        from_flat(candidates.CandidatesConfig, {"seq_lens": "256,long"})
    assert from_flat(rank_sweep.RankSweepConfig, {"ranks": "4,8"}).ranks == [4, 8]
    line = command_line(cfg, "candidates")
    assert line == "arc-ttft candidates --models tiny,Qwen2-0.5B --seq-lens 256,512"


def test_candidates_table_two_lengths(tmp_path):
    """Two lengths measured (in process, fast), one over the tiny model's 8192 context."""
    cfg = candidates.CandidatesConfig(
        models=["tiny"], seq_lens=[64, 128, 16384], steps=2, isolate=False,
        output=str(tmp_path), name="t",
    )  # fmt: skip
    res = candidates.run_candidates(cfg, progress=False)
    ok = [r for r in res.rows if r.status == "ok"]
    assert [r.seq_len for r in ok] == [64, 128]
    for r in ok:
        assert r.seconds > 0 and r.sec_per_step > 0 and r.steps == 2
        assert r.params_m == pytest.approx(1.31, abs=0.05) and r.dtype == "float32"
        # The projection itself is checked by hand in test_projection_by_hand; here only
        # that every measured row got one (a tiny model fits the default 12 h).
        assert r.hours_per_1000 is not None and r.test_set_hours is not None
        assert r.fits is True and math.isfinite(r.loss)
        assert r.peak_mem_gib is None  # in process on CPU: no honest per-config peak
    over = res.rows[-1]
    assert over.status == "over_context" and "16384 > max context 8192" in over.reason
    assert over.sec_per_step is None
    rows = _read_csv(res.paths["csv"])
    assert [r["status"] for r in rows] == ["ok", "ok", "over_context"]
    assert float(rows[0]["sec_per_step"]) > 0
    md = (tmp_path / "t.md").read_text()
    assert "| tiny | 1.3 | 8 | 64 | float32 |" in md
    assert "over_context: seq_len 16384 > max context 8192" in md
    assert "inference is left out" in md and "arc-ttft candidates" in md


@pytest.mark.slow  # a fresh interpreter per configuration (~7 s idle)
def test_candidates_in_a_subprocess_measure_peak_memory(tmp_path):
    cfg = candidates.CandidatesConfig(
        models=["tiny"], seq_lens=[128], steps=2, budget_hours=1e-6, output=str(tmp_path)
    )
    row = candidates.run_candidates(cfg, progress=False).rows[0]
    assert row.status == "ok", row.reason
    assert row.sec_per_step > 0 and 0 < row.peak_mem_gib < 4
    assert row.fits is False  # nothing fits a budget of a few milliseconds


def test_oom_in_the_step_becomes_a_row(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ttt, "train_steps", boom)
    cfg = candidates.CandidatesConfig(
        models=["tiny"], seq_lens=[64], steps=1, isolate=False, output=str(tmp_path)
    )
    row = candidates.run_candidates(cfg, progress=False).rows[0]
    assert row.status == "oom" and "out of memory at seq_len 64" in row.reason
    assert row.sec_per_step is None and row.fits is None


@pytest.mark.slow  # a fresh interpreter per configuration (~7 s idle)
def test_memory_cap_gives_a_real_oom_row(tmp_path):
    """A subprocess with little address space fails in the step, not the parent."""
    cfg = candidates.CandidatesConfig(
        models=["tiny"], seq_lens=[4096], steps=1, memory_cap_gb=0.25, output=str(tmp_path)
    )
    row = candidates.run_candidates(cfg, progress=False).rows[0]
    assert row.status == "oom", row.reason
    assert "memory" in row.reason


def test_load_failure_and_params_cap_are_rows(tmp_path):
    cfg = candidates.CandidatesConfig(
        models=["tiny", "no-such-model", "Qwen2.5-1.5B"],
        seq_lens=[64],
        steps=1,
        isolate=False,
        max_params_m=1000,
        output=str(tmp_path),
    )
    rows = candidates.run_candidates(cfg, progress=False).rows
    assert [r.status for r in rows] == ["ok", "load_failed", "estimated"]
    assert "not found" in rows[1].reason
    est = rows[2]
    assert "1,544M > --max-params-m 1000" in est.reason and "estimated from tiny" in est.reason
    # 1,544M parameters against tiny's 1.3M, same length: 1544 / 1.3 = 1187.7 times slower.
    assert est.sec_per_step / rows[0].sec_per_step == pytest.approx(1187.7, rel=0.01)


def test_projection_by_hand():
    cfg = candidates.CandidatesConfig(
        tasks_count=120, ttt_steps_per_task=50, budget_hours=5.0, inference_hours=1.5
    )
    row = candidates.Row("m", 494.0, 32768, 1024, 4, "ok", sec_per_step=2.7)
    candidates._project(row, cfg)
    # 1000 steps x 2.7 s = 2700 s = 0.75 h
    assert row.hours_per_1000 == 0.75
    # 120 tasks x 50 steps = 6000 steps x 2.7 s = 16200 s = 4.5 h
    assert row.test_set_hours == 4.5
    # 4.5 h TTT + 1.5 h inference = 6 h > 5 h budget
    assert row.fits is False
    # without the inference hours, 4.5 h fits 5 h
    no_inference = candidates.CandidatesConfig(
        tasks_count=120, ttt_steps_per_task=50, budget_hours=5
    )
    candidates._project(row, no_inference)
    assert row.fits is True
    # 0.1 s/step: 100 s = 0.0278 h per 1000 (3 decimals: 0.028); 6000 steps = 0.1667 h
    row = candidates.Row("m", 494.0, 32768, 1024, 4, "ok", sec_per_step=0.1)
    candidates._project(row, cfg)
    assert (row.hours_per_1000, row.test_set_hours) == (0.028, 0.167)
    # a row with no measurement gets no projection
    row = candidates.Row("m", 494.0, 32768, 1024, 4, "oom")
    candidates._project(row, cfg)
    assert (row.hours_per_1000, row.test_set_hours, row.fits) == (None, None, None)


def test_estimate_scales_by_params_and_length_by_hand():
    measured = [
        candidates.Row("small", 100.0, 8192, 1024, 4, "ok", sec_per_step=0.5),
        candidates.Row("mid", 500.0, 8192, 1024, 4, "ok", sec_per_step=2.0),
        candidates.Row("mid", 500.0, 8192, 2048, 4, "oom"),
    ]
    row = candidates.Row("big", 1500.0, 32768, 2048, 4, "skipped")
    candidates._estimate(row, measured)
    # From the largest measured model (mid, 2.0 s at 1024): x3 params, x2 length = 12 s.
    assert row.status == "estimated" and row.sec_per_step == 12.0
    assert "estimated from mid at 1024 x params x length ratio" in row.reason


def test_find_max_seq_len_doubles_then_bisects(monkeypatch):
    calls = []

    def fake_probe(spec, isolate=True, timeout_s=None):
        calls.append(spec["seq_len"])
        if spec["seq_len"] <= 1500:
            return {"status": "ok"}
        return {"status": "oom", "reason": "out of memory"}

    monkeypatch.setattr(candidates, "run_probe", fake_probe)
    cfg = candidates.CandidatesConfig(models=["tiny"], search_step=256)
    known = [candidates.Row("tiny", 1.3, 8192, 512, 1, "ok")]
    res = candidates.search_max_seq_len(cfg, "tiny", known)
    assert (res.max_ok, res.first_fail) == (1280, 1536)
    assert calls == [1024, 2048, 1536, 1280]
    # Everything fits: stops at the model's context.
    monkeypatch.setattr(candidates, "run_probe", lambda *a, **k: {"status": "ok"})
    res = candidates.search_max_seq_len(cfg, "tiny", known)
    assert res.max_ok == 8192 and res.stopped_by == "max_context"


def test_cli_commands(tmp_path, capsys):
    out = str(tmp_path)
    rc = cli.main(["candidates", "--models", "tiny", "--seq-lens", "64", "--steps", "1",
                   "--isolate", "false", "--output", out])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| tiny | 1.3 | 8 | 64 |" in printed and "candidates.csv" in printed
    rc = cli.main(["lora-rank-sweep", "--ranks", "4", "--max-tasks", "1", "--ttt-steps", "1",
                   "--challenges", "arc1-eval", "--output", out])  # fmt: skip
    assert rc == 0
    assert "lora-rank-sweep.png" in capsys.readouterr().out
    assert cli.main(["candidates", "--steps", "0", "--output", out]) == 2


def test_new_candidates_get_rows_with_reasons(tmp_path):
    """The 2025 models: rows from the registry alone (no weights), over-context rows
    against each model's own context, and the larger ones estimated with the reason."""
    new = ["Qwen3-0.6B", "Gemma-3-270M", "Llama-3.2-1B", "SmolLM3-3B"]
    cfg = candidates.CandidatesConfig(
        models=["tiny", *new], seq_lens=[64, 40000], steps=1, isolate=False,
        random_weights=True, max_params_m=10, output=str(tmp_path),
    )  # fmt: skip
    rows = {(r.model, r.seq_len): r for r in candidates.run_candidates(cfg, progress=False).rows}
    assert rows[("tiny", 64)].status == "ok"
    for name in new:
        r = rows[(name, 64)]
        assert r.status == "estimated" and "> --max-params-m 10" in r.reason, r
        assert r.sec_per_step > 0 and r.params_m > 200
    # 40k tokens: over Qwen3's and Gemma's 32k, inside Llama 3.2's 128k and SmolLM3's 64k.
    assert rows[("Qwen3-0.6B", 40000)].status == "over_context"
    assert rows[("Gemma-3-270M", 40000)].status == "over_context"
    assert rows[("SmolLM3-3B", 40000)].status == "estimated"  # skipped, then scaled
    md = (tmp_path / "candidates.md").read_text()
    assert "| Gemma-3-270M | 268.1 | 32 | 64 |" in md
