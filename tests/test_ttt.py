"""TTT engine on the tiny offline model: labels, packing, loss, save/reload, max_time."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch

from arc_ttft import encoding, models, ttt, ttt_samples
from arc_ttft.config import ModelConfig, TTTConfig
from arc_ttft.events import EventLog
from arc_ttft.tasks import Example, Task


def _task(seed: int = 0, n_train: int = 3, size: int = 3) -> Task:
    """A task whose rule is 'flip left-right', small enough for fast tests."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_train + 1):
        g = rng.integers(0, 10, size=(size, size + 1)).astype(np.int8)
        pairs.append(Example(g, g[:, ::-1].copy()))
    return Task(f"flip{seed}", pairs[:-1], pairs[-1:])


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig(model="tiny")
    model, tok = models.load_model(cfg, device="cpu", for_training=True)
    return model, tok


@pytest.fixture()
def peft_model(tiny):
    model, tok = tiny
    cfg = TTTConfig(ttt_steps=4, lora_rank=8, learning_rate=1e-3)
    pm = ttt.prepare_peft_model(model, cfg)
    yield pm, tok, cfg
    pm.unload()  # give the base model back untouched for the next test


def test_labels_cover_exactly_the_answer(tiny):
    _, tok = tiny
    task = _task()
    s = ttt_samples.make_samples(task, "digits", tok, 1, seed=0)[0]
    answer = [(i, t) for i, t in enumerate(s.labels) if t != ttt_samples.IGNORE]
    first = answer[0][0]
    # Contiguous, at the end, equal to the input ids there.
    assert [i for i, _ in answer] == list(range(first, len(s.input_ids)))
    assert all(s.input_ids[i] == t for i, t in answer)
    text = tok.decode([t for _, t in answer])
    grid = encoding.parse_answer(text, "digits")
    assert grid is not None
    # Identity view first: the answer is one of the task's train outputs.
    assert any(np.array_equal(grid, ex.output) for ex in task.train)
    assert text.endswith(encoding.end_marker(tok))


def _expected_labels(tok, ids: list[int], with_outputs: bool) -> list[int]:
    """Token positions that should carry a label, found from the decoded prompt text:
    the answer (everything after the last ``output:`` line) and, with ``with_outputs``,
    every demonstration output grid after the first one shown."""
    pieces = [tok.decode([t]) for t in ids]
    text = "".join(pieces)
    assert text == tok.decode(ids)  # per-token pieces add up to the text (offsets hold)
    prime = text.rindex("output:\n") + len("output:\n")
    spans = [(prime, len(text))]
    if with_outputs:
        grids = [m.span(1) for m in re.finditer(r"output:\n([0-9\n]+?)\ninput:", text)]
        assert len(grids) >= 2, text
        spans += grids[1:]
    out, pos = [], 0
    for i, piece in enumerate(pieces):
        a, b = pos, pos + len(piece)
        pos = b
        if b > a and any(s <= a and b <= e for s, e in spans):
            out.append(i)
    return out


def test_label_mode_outputs_adds_earlier_outputs(tiny):
    _, tok = tiny
    task = _task(n_train=4)  # three demonstrations per sample: two of them labelled
    render = encoding.get_format("digits").render
    # 8 samples: the identity view (4 queries, shuffled), then a random view.
    plain = ttt_samples.make_samples(task, "digits", tok, 8, seed=0)
    outs = ttt_samples.make_samples(task, "digits", tok, 8, seed=0, label_mode="outputs")
    for a, b in zip(plain, outs):
        assert a.input_ids == b.input_ids
        labelled_a = [i for i, t in enumerate(a.labels) if t != ttt_samples.IGNORE]
        labelled_b = [i for i, t in enumerate(b.labels) if t != ttt_samples.IGNORE]
        assert labelled_a == _expected_labels(tok, a.input_ids, with_outputs=False)
        assert labelled_b == _expected_labels(tok, b.input_ids, with_outputs=True)
        assert all(b.labels[i] == b.input_ids[i] for i in labelled_b)

    # Identity view, spelled out: the labelled runs are the outputs of the train pairs
    # shown (in task order, the query left out), all but the first, then the answer.
    end = encoding.end_marker(tok)
    for b in outs[:4]:
        runs: list[list[int]] = []
        for i, t in enumerate(b.labels):
            if t == ttt_samples.IGNORE:
                continue
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        texts = [tok.decode([b.input_ids[i] for i in r]) for r in runs]
        assert texts[-1].endswith(end)
        rendered = [render(ex.output) for ex in task.train]
        q = rendered.index(texts[-1].removesuffix(end))  # the pair asked
        shown = [r for i, r in enumerate(rendered) if i != q]
        assert texts[:-1] == shown[1:]


def test_samples_are_seeded_and_leave_one_out(tiny):
    _, tok = tiny
    task = _task()
    a = ttt_samples.make_samples(task, "digits", tok, 8, seed=3)
    b = ttt_samples.make_samples(task, "digits", tok, 8, seed=3)
    assert [s.input_ids for s in a] == [s.input_ids for s in b]
    assert len({tuple(s.input_ids) for s in a}) > 1


def test_packed_loss_equals_unpacked(peft_model):
    pm, tok, _ = peft_model
    samples = ttt_samples.make_samples(_task(), "digits", tok, 3, seed=1)
    pm.eval()
    with torch.no_grad():
        packed, n = ttt_samples.answer_loss(pm, ttt_samples.pack(samples))
        parts = [ttt_samples.answer_loss(pm, ttt_samples.pack([s])) for s in samples]
    weighted = sum(loss.item() * k for loss, k in parts) / sum(k for _, k in parts)
    assert n == sum(k for _, k in parts)
    assert packed.item() == pytest.approx(weighted, rel=1e-4)


def _square_task(seed: int = 0, n_train: int = 3, size: int = 3) -> Task:
    """Like ``_task`` with square grids: every view (dihedral x colours x order) of it
    renders to the same number of tokens in ``digits`` (one token per cell and row end)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_train + 1):
        g = rng.integers(0, 10, size=(size, size)).astype(np.int8)
        pairs.append(Example(g, g[:, ::-1].copy()))
    return Task(f"square{seed}", pairs[:-1], pairs[-1:])


def test_equal_lengths_become_rows_with_the_same_loss(peft_model):
    pm, tok, _ = peft_model
    # Two passes over three pairs: the identity view, then a random one. A batch of three
    # consecutive samples (as train_steps takes them) spans both views.
    samples = ttt_samples.make_samples(_square_task(), "digits", tok, 6, seed=1)[2:5]
    n = len(samples[0].input_ids)
    assert {len(s.input_ids) for s in samples} == {n}
    assert len({tuple(s.input_ids) for s in samples}) == 3
    batch = ttt_samples.pack(samples)
    assert batch["input_ids"].shape == (3, n) and "position_ids" not in batch
    pm.eval()
    with torch.no_grad():
        rows, k = ttt_samples.answer_loss(pm, batch)
        parts = [ttt_samples.answer_loss(pm, ttt_samples.pack([s])) for s in samples]
    assert k == sum(j for _, j in parts) == sum(s.n_answer for s in samples)
    weighted = sum(loss.item() * j for loss, j in parts) / k
    assert rows.item() == pytest.approx(weighted, rel=1e-4)


def test_bf16_lora_with_master_weights_tracks_fp32(tiny):
    _, tok = tiny
    samples = ttt_samples.make_samples(_task(2), "digits", tok, 4, seed=0)

    def train(lora_dtype):
        model = models.build_random_model(ModelConfig(model="tiny"), torch.bfloat16, seed=3)
        cfg = TTTConfig(lora_rank=8, learning_rate=1e-3, warmup_steps=0, lora_dtype=lora_dtype)
        pm = ttt.prepare_peft_model(model, cfg)
        ttt.reset_adapter(pm, seed=5)
        dtypes = {p.dtype for p in pm.parameters() if p.requires_grad}
        masters = ttt.master_weights(pm)
        losses = ttt.train_steps(pm, samples, cfg, 16)[0]
        return dtypes, masters, losses

    d32, m32, fp32 = train("float32")
    d16, m16, bf16 = train("bfloat16")
    assert d32 == {torch.float32} and m32 == []
    assert d16 == {torch.bfloat16} and {m.dtype for _, m in m16} == {torch.float32}
    # Same start, same data: the curves agree to bf16 precision and both learn.
    assert bf16[0] == pytest.approx(fp32[0], rel=1e-2)
    assert np.allclose(bf16, fp32, rtol=0.05)
    assert np.mean(bf16[-4:]) < 0.8 * np.mean(bf16[:4])


def test_ttt_lowers_answer_loss_and_saves(peft_model, tmp_path):
    pm, tok, _ = peft_model
    cfg = TTTConfig(ttt_steps=40, lora_rank=8, learning_rate=1e-2, warmup_steps=0)
    task = _task(1)
    events = EventLog(tmp_path / "run.jsonl")
    res = ttt.train_task(pm, tok, task, cfg, "digits", 2048, output_dir=tmp_path, events=events)
    assert res.steps == 40 and res.stop_reason == "max_steps"
    assert np.mean(res.losses[-4:]) < 0.7 * np.mean(res.losses[:4])
    assert (tmp_path / task.id / "adapter_model.safetensors").exists()
    assert (tmp_path / task.id / "adapter_config.json").exists()
    assert events.events[-1]["stage"] == "ttt" and events.events[-1]["steps"] == 40

    # Reload into the same wrapper after a reset: logits come back exactly.
    sample = ttt_samples.pack(ttt_samples.make_samples(task, "digits", tok, 1, seed=9))
    with torch.no_grad():
        trained = ttt_samples.answer_loss(pm, sample)[0].item()
        ttt.reset_adapter(pm, seed=123)
        fresh = ttt_samples.answer_loss(pm, sample)[0].item()
        ttt.load_adapter_weights(pm, tmp_path / task.id)
        reloaded = ttt_samples.answer_loss(pm, sample)[0].item()
    assert fresh != pytest.approx(trained, abs=1e-3)
    assert reloaded == pytest.approx(trained, rel=1e-5)


def test_max_time_stops_within_one_step(peft_model):
    pm, tok, _ = peft_model
    cfg = TTTConfig(ttt_steps=10_000, lora_rank=8, ttt_max_seconds=1.0)
    samples = ttt_samples.make_samples(_task(), "digits", tok, 8, seed=0)
    starts: list[float] = []  # should_stop runs at every step's start, after the time check
    losses, reason, _, seconds = ttt.train_steps(
        pm, samples, cfg, cfg.ttt_steps, max_seconds=1.0,
        should_stop=lambda: starts.append(time.monotonic()) and False,
    )  # fmt: skip
    t0 = time.monotonic() - seconds  # the loop's start, or a hair later
    assert reason == "max_time" and len(starts) == len(losses) < cfg.ttt_steps
    # The limit is checked before every step: the last step started before it, and the
    # run ended at the next step's start, past it (at most one step past the limit, timed
    # by the step itself: a mean step's bound failed beside another test's load).
    assert starts[-1] - t0 < 1.0 <= seconds


def test_should_stop_is_checked_every_step(peft_model):
    pm, tok, cfg = peft_model
    calls = []
    samples = ttt_samples.make_samples(_task(), "digits", tok, 4, seed=0)
    losses, reason, _, _ = ttt.train_steps(
        pm, samples, cfg, 50, should_stop=lambda: calls.append(1) or len(calls) > 3
    )
    assert reason == "budget" and len(losses) == 3


def test_missing_target_modules_error_lists_linears(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="linear layers are"):
        ttt.prepare_peft_model(model, TTTConfig(lora_targets=["nonexistent"]))


def test_run_ttt_per_task_and_steps_for(tmp_path):
    tasks = [_task(2), _task(3, n_train=2)]
    cfg = TTTConfig(ttt_steps=3, lora_rank=4)
    res = ttt.run_ttt(
        tasks, ModelConfig(model="tiny"), cfg, tmp_path, steps_for=lambda t: 2, progress=False
    )
    assert [r.steps for r in res] == [2, 2]
    assert all((tmp_path / t.id / "adapter_model.safetensors").exists() for t in tasks)


def _int4_device_or_skip() -> str:
    """The device run_ttt will load on, skipping when bitsandbytes cannot quantize there
    (not installed, or a build without that device's backend)."""
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes not installed")
    device = str(models.default_device())
    try:
        bnb.functional.quantize_4bit(torch.randn(64, 64, device=device), quant_type="nf4")
    except Exception as e:  # noqa: BLE001 - whatever the backend raises means "no 4-bit here"
        pytest.skip(f"bitsandbytes {bnb.__version__} cannot quantize on {device}: {e}")
    return device


def test_int4_path_trains(tmp_path, monkeypatch):
    _int4_device_or_skip()
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    loaded = []
    real = models.load_model
    monkeypatch.setattr(
        models, "load_model", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1]
    )
    cfg = TTTConfig(ttt_steps=2, lora_rank=4, learning_rate=1e-3, warmup_steps=0)
    task = _task(4)
    res = ttt.run_ttt([task], ModelConfig(model="tiny", int4=True), cfg, tmp_path, progress=False)
    # The base really is 4-bit: under each LoRA-wrapped projection, a bitsandbytes
    # Linear4bit holding packed uint8 weights (a full-precision base has nn.Linear).
    model = loaded[0][0]
    bases = [m for n, m in model.named_modules() if n.endswith("q_proj.base_layer")]
    assert bases and all(isinstance(m, bnb.nn.Linear4bit) for m in bases), bases
    assert all(m.weight.dtype == torch.uint8 for m in bases)
    assert res[0].steps == 2 and res[0].stop_reason == "max_steps"
    assert all(np.isfinite(x) for x in res[0].losses) and np.isfinite(res[0].final_loss)
    weights = load_file(str(tmp_path / task.id / "adapter_model.safetensors"))
    assert weights and all("lora_" in k for k in weights)
    assert all(torch.isfinite(w).all() for w in weights.values())
    # lora_B starts at zero: non-zero after two steps means the 4-bit path learned.
    assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)


def _big_task(tid: str, small: int = 3, big: int = 1) -> Task:
    """``small`` 3x4 flip pairs and ``big`` 12x12 ones: asked as the query, a big pair is
    longer than 200 tokens however many examples are dropped."""
    rng = np.random.default_rng(7)

    def pair(h, w):
        g = rng.integers(0, 10, size=(h, w)).astype(np.int8)
        return Example(g, g[:, ::-1].copy())

    pairs = [pair(3, 4) for _ in range(small)] + [pair(12, 12) for _ in range(big)]
    return Task(tid, pairs, [pair(3, 4)])


def test_samples_longer_than_max_seq_len_are_skipped(peft_model, monkeypatch):
    pm, tok, _ = peft_model
    cfg = TTTConfig(ttt_steps=8, lora_rank=8, learning_rate=1e-3)
    task = _big_task("big")
    lengths = [len(s.input_ids) for s in ttt_samples.make_samples(task, "digits", tok, 8, 0, 200)]
    assert any(n > 200 for n in lengths) and any(n <= 200 for n in lengths)
    seen = []
    real = ttt_samples.answer_loss
    monkeypatch.setattr(
        ttt, "answer_loss", lambda m, b: seen.append(b["input_ids"].shape[1]) or real(m, b)
    )
    events = EventLog()
    res = ttt.train_task(pm, tok, task, cfg, "digits", 200, events=events)
    assert res.steps == 8 and seen and max(seen) <= 200
    skipped = [e for e in events.events if e.get("decision") == "skipped-too-long"]
    assert skipped and res.skipped_samples == len(skipped)
    assert all(e["stage"] == "ttt" and e["task"] == "big" for e in skipped)
    assert all(e["length"] > 200 == e["max_seq_len"] for e in skipped)
    assert events.events[-1]["skipped_samples"] == len(skipped)


def test_a_task_with_no_sample_that_fits_gets_no_adapter(peft_model, tmp_path):
    pm, tok, _ = peft_model
    cfg = TTTConfig(ttt_steps=4, lora_rank=8)
    task = _big_task("allbig", small=0, big=3)
    events = EventLog()
    res = ttt.train_task(pm, tok, task, cfg, "digits", 200, output_dir=tmp_path, events=events)
    assert res.steps == 0 and res.adapter is None and res.stop_reason == "too_long"
    assert res.skipped_samples == 4 and not (tmp_path / task.id).exists()
    assert len([e for e in events.events if e.get("decision") == "skipped-too-long"]) == 4
    assert events.events[-1]["steps"] == 0

    # shared mode: that task drops out, the other still trains
    other = _task(5)
    res = ttt.train_shared(pm, tok, [task, other], cfg, "digits", 200, events=events)
    assert res.steps == 8 and res.skipped_samples == 4 and res.stop_reason == "max_steps"


def test_ttt_transforms_reach_the_training_views(peft_model, monkeypatch):
    from arc_ttft import augment

    pm, tok, _ = peft_model
    asked, made = [], []
    real = augment.make_views

    def spy(*a, **k):
        asked.append(k["transforms"])
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(augment, "make_views", spy)
    cfg = TTTConfig(ttt_steps=2, lora_rank=4, ttt_transforms="none")
    ttt.train_task(pm, tok, _task(1), cfg, "digits", 2048)
    assert asked == ["none"] and {v.transform for v in made[-1]} == {0}
    samples = ttt_samples.make_samples(_task(1), "digits", tok, 12, seed=0, transforms="central")
    assert asked[-1] == "central" and len(samples) == 12
    assert {v.transform for v in made[-1]} <= {0, 2}


def _colour_map_task() -> Task:
    """A fixed colour rule (5 becomes 8, the rest stay): under a colour permutation each
    view shows another map, under a rotation the same one."""
    rng = np.random.default_rng(4)
    pairs = []
    for _ in range(4):
        g = rng.choice(np.array([1, 5, 3], dtype=np.int8), size=(3, 3))
        pairs.append(Example(g, np.where(g == 5, 8, g).astype(np.int8)))
    return Task("map58", pairs[:-1], pairs[-1:])


def test_own_colour_views_keep_the_task_colours(tiny):
    _, tok = tiny
    task = _colour_map_task()
    colours = {str(c) for ex in task.train for g in (ex.input, ex.output) for c in g.ravel()}

    def seen(family: str) -> set[str]:
        samples = ttt_samples.make_samples(task, "digits", tok, 24, seed=0, transforms=family)
        text = "".join(tok.decode(s.input_ids) for s in samples)
        return set(re.findall(r"\d", text))

    assert seen("dihedral/own-colours") == colours
    assert seen("dihedral") > colours  # permuted views bring in other colours


def test_fit_trains_both_view_families_and_keeps_one_exactly_as_it_trained(peft_model, tmp_path):
    """ttt_colours=fit shares the steps between permuted and own-coloured dihedral views,
    keeps one adapter (exactly as that family alone trains it), and saves its family
    beside it for inference."""
    import json

    from safetensors.torch import load_file

    from arc_ttft import augment

    pm, tok, _ = peft_model
    task = _colour_map_task()
    kw = dict(lora_rank=4, learning_rate=1e-2, warmup_steps=0)
    fit = ttt.train_task(
        pm, tok, task, TTTConfig(ttt_steps=12, ttt_colours="fit", **kw), "digits", 2048,
        output_dir=tmp_path / "fit",
    )  # fmt: skip
    alone = {
        colours: ttt.train_task(
            pm,
            tok,
            task,
            TTTConfig(ttt_steps=6, ttt_colours=colours, **kw),
            "digits",
            2048,
            output_dir=tmp_path / colours,
        )  # fmt: skip
        for colours in ("permute", "own")
    }
    by_family = {res.views: res for res in alone.values()}
    assert set(by_family) == set(fit.view_losses) == {"dihedral", "dihedral/own-colours"}
    for family, res in by_family.items():
        assert res.steps == 6
        assert fit.view_losses[family] == pytest.approx(ttt.fit_loss(res.losses), abs=1e-5)
    own = ttt.fit_loss(by_family["dihedral/own-colours"].losses)
    best = (
        "dihedral/own-colours" if own < ttt.FIT_MARGIN * fit.view_losses["dihedral"] else "dihedral"
    )
    assert fit.views == best and fit.steps == 12
    assert fit.losses == pytest.approx(by_family[best].losses, abs=1e-5)
    saved = json.loads((tmp_path / "fit" / task.id / augment.VIEWS_FILE).read_text())
    assert saved == {"views": best}
    kept = load_file(str(tmp_path / "fit" / task.id / "adapter_model.safetensors"))
    folder = "own" if best.endswith(augment.OWN_COLOURS) else "permute"
    ref = load_file(str(tmp_path / folder / task.id / "adapter_model.safetensors"))
    assert all(torch.allclose(kept[k], ref[k], atol=1e-6) for k in kept)


def test_fit_keeps_the_configured_views_unless_the_other_fits_far_better(peft_model, monkeypatch):
    """A family that fits only a little better is not enough: 1x1 answers memorised in
    their own colours fit better and generalise worse (ttt.FIT_MARGIN)."""
    pm, tok, _ = peft_model
    fake = {"dihedral": 0.25}

    def train(model, samples, cfg, steps, name, *_, **extra):
        loss = fake[extra["views"]]
        return ttt.TTTResult(
            name, steps, 0.1, loss, loss, "max_steps", None, [loss] * steps, **extra
        )

    monkeypatch.setattr(ttt, "_train", train)
    cfg = TTTConfig(ttt_steps=8, ttt_colours="fit", lora_rank=4)
    for own, kept in [(0.3, "dihedral"), (0.2, "dihedral"), (0.1, "dihedral/own-colours")]:
        fake["dihedral/own-colours"] = own
        res = ttt.train_task(pm, tok, _colour_map_task(), cfg, "digits", 2048)
        assert res.views == kept and res.steps == 8
        assert res.view_losses == {"dihedral": 0.25, "dihedral/own-colours": own}


def test_fit_is_refused_for_a_shared_adapter():
    cfg = TTTConfig(ttt_colours="fit", adapter_mode="shared")
    assert any(p.startswith("ttt_colours:") for p in cfg.problems())
