"""The transformers backend and the Backend helpers, on the tiny offline model."""

from __future__ import annotations

import pytest
import torch

from arc_ttft import models
from arc_ttft.infer import Request, stop_ids
from arc_ttft.infer.hf import HFBackend

PROMPTS = [
    "input:\n123\n456\noutput:\n",
    "<|im_start|>user\ninput:\n1\noutput:\n",
    "input:\n0000\n1111\n2222\n3333\noutput:\n3333\n2222\n1111\n0000\n\ninput:\n98\noutput:\n",
]


@pytest.fixture(scope="module")
def tiny_path():
    return models.ensure_tiny_model()


@pytest.fixture(scope="module")
def backend(tiny_path):
    be = HFBackend.from_path(tiny_path, batch_size=8)
    yield be
    be.close()


@pytest.fixture(scope="module")
def adapter(tiny_path, tmp_path_factory):
    """A LoRA adapter with non-zero B weights, saved to a folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                     init_lora_weights=False)  # fmt: skip
    torch.manual_seed(1)
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("adapter") / "task1"
    peft_model.save_pretrained(folder)
    return str(folder)


def _ids(backend, text):
    return backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def _manual_greedy(model, prompt, n, stops):
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            t = int(logits.argmax())
            out.append(t)
            ids.append(t)
            if t in stops:
                break
    return out


def test_greedy_equals_manual_argmax(backend):
    stops = stop_ids(backend.tokenizer)
    for text in PROMPTS:
        prompt = _ids(backend, text)
        [[c]] = backend.generate([Request(prompt, None, 1, 0.0, 12, stops)])
        assert c.token_ids == _manual_greedy(backend.base, prompt, 12, stops)
        assert c.n_tokens == len(c.token_ids)


def test_batched_left_padded_equals_one_at_a_time(backend):
    stops = stop_ids(backend.tokenizer)
    reqs = [
        Request(_ids(backend, t), None, 1, 0.0, 10, stops, key=i) for i, t in enumerate(PROMPTS)
    ]
    together = backend.generate(reqs)
    alone = [backend.generate([r])[0] for r in reqs]
    for a, b in zip(together, alone):
        assert a[0].token_ids == b[0].token_ids
        assert a[0].logprob == pytest.approx(b[0].logprob, abs=1e-4)
        assert a[0].text == b[0].text


def test_cumulative_logprob_equals_forward_score(backend, adapter):
    stops = stop_ids(backend.tokenizer)
    for ad in (None, adapter):
        prompts = [_ids(backend, t) for t in PROMPTS]
        outs = backend.generate([Request(p, ad, 1, 0.0, 10, stops) for p in prompts])
        scores = backend.score_many([(p, o[0].token_ids, ad) for p, o in zip(prompts, outs)])
        for o, s in zip(outs, scores):
            assert o[0].logprob == pytest.approx(s, abs=1e-3)
            assert o[0].logprob < 0
        # the single form agrees with the batched one
        assert backend.score(prompts[0], outs[0][0].token_ids, ad) == pytest.approx(
            scores[0], abs=1e-4
        )


def test_adapter_changes_outputs_and_base_stays_base(backend, adapter):
    stops = stop_ids(backend.tokenizer)
    prompts = [_ids(backend, t) for t in PROMPTS]
    base1 = backend.generate([Request(p, None, 1, 0.0, 10, stops) for p in prompts])
    tuned = backend.generate([Request(p, adapter, 1, 0.0, 10, stops) for p in prompts])
    base2 = backend.generate([Request(p, None, 1, 0.0, 10, stops) for p in prompts])
    assert [c[0].token_ids for c in base1] != [c[0].token_ids for c in tuned]
    assert [c[0].token_ids for c in base1] == [c[0].token_ids for c in base2]
    # mixed list: each request gets its own model
    mixed = backend.generate(
        [
            Request(prompts[0], adapter, 1, 0.0, 10, stops),
            Request(prompts[0], None, 1, 0.0, 10, stops),
        ]
    )
    assert mixed[0][0].token_ids == tuned[0][0].token_ids
    assert mixed[1][0].token_ids == base1[0][0].token_ids
    s_base = backend.score(prompts[0], tuned[0][0].token_ids, None)
    s_tuned = backend.score(prompts[0], tuned[0][0].token_ids, adapter)
    assert s_base != pytest.approx(s_tuned, abs=1e-3)


def test_sampling_returns_n_completions(backend):
    stops = stop_ids(backend.tokenizer)
    prompt = _ids(backend, PROMPTS[0])
    [comps] = backend.generate([Request(prompt, None, 4, 1.5, 8, stops)])
    assert len(comps) == 4
    assert all(1 <= c.n_tokens <= 8 for c in comps)
    assert len({tuple(c.token_ids) for c in comps}) > 1  # high temperature: not all the same


def test_text_is_cut_before_the_stop_token(backend):
    from arc_ttft.infer.base import cut_at_stop, decode_answer

    tok = backend.tokenizer
    ids = _ids(backend, "12\n34") + [tok.eos_token_id] + _ids(backend, "99")
    assert decode_answer(tok, ids, [tok.eos_token_id]) == "12\n34"
    assert cut_at_stop(ids, [tok.eos_token_id])[-1] == tok.eos_token_id


def test_a_cancel_stops_generation_dfs_and_scoring_at_the_next_step(backend):
    """Issue 21 #7: a cancelled call stops at its next token (not after its whole
    generation), so the thread ends and its memory can be freed."""
    import threading

    from arc_ttft.infer.base import Cancelled

    prompt, stops = _ids(backend, PROMPTS[0]), stop_ids(backend.tokenizer)
    forwards = []

    def count_and_cancel(*_):
        forwards.append(1)
        if len(forwards) == 3:
            backend.cancel.set()

    hook = backend.base.register_forward_hook(count_and_cancel)
    try:
        for req in (
            Request(prompt, max_new_tokens=40),  # greedy: no stop token, no alphabet
            Request(prompt, max_new_tokens=40, min_prob=1e-9, stop_token_ids=stops),
        ):
            forwards.clear()
            backend.cancel = threading.Event()
            with pytest.raises(Cancelled):
                backend.generate([req])
            assert len(forwards) <= 4  # stopped at the next step, not 40 tokens later
        backend.cancel = threading.Event()
        backend.cancel.set()
        with pytest.raises(Cancelled):
            backend.score_many([(prompt, [1, 2], None), (prompt[:3], [1], None)])
    finally:
        hook.remove()
        backend.cancel = None
    assert backend.generate([Request(prompt, max_new_tokens=3)])[0][0].n_tokens <= 3


def test_make_backend_hf(tiny_path):
    from arc_ttft.config import InferConfig
    from arc_ttft.infer import make_backend, pick_backend

    be = make_backend(InferConfig(backend="hf"), tiny_path, device="cpu")
    ref = HFBackend.from_path(tiny_path)
    stops = stop_ids(be.tokenizer)
    prompt = _ids(be, PROMPTS[2])
    got = be.generate([Request(prompt, max_new_tokens=10, stop_token_ids=stops)])[0][0]
    want = ref.generate([Request(prompt, max_new_tokens=10, stop_token_ids=stops)])[0][0]
    assert be.name == "hf" and got.token_ids == want.token_ids and got.logprob == want.logprob
    be.close()
    assert be.model is None and be.base is None  # nothing left holding the weights
    assert pick_backend("hf") == "hf"
    with pytest.raises(ValueError, match="unknown"):
        pick_backend("onnx")


def test_vllm_backend_sizes_engine_and_splits_base_requests(tiny_path, tmp_path, monkeypatch):
    """With a fake vllm module: engine settings, stable LoRA ids, base/adapter calls apart."""
    import json
    import sys
    import types

    calls = []

    class FakeLLM:
        def __init__(self, **kw):
            self.kw = kw

        def generate(self, prompts, params, lora_request=None, use_tqdm=False):
            calls.append(lora_request)
            out = []
            for p in prompts:
                o = types.SimpleNamespace(
                    token_ids=[5, 6, 0], logprobs=None, cumulative_logprob=-1.5
                )
                out.append(types.SimpleNamespace(outputs=[o], prompt=p))
            return out

    class LoRARequest:
        def __init__(self, name, lid, path):
            self.name, self.id, self.path = name, lid, path

    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kw: kw
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    lora = types.ModuleType("vllm.lora")
    lreq = types.ModuleType("vllm.lora.request")
    lreq.LoRARequest = LoRARequest
    for name, mod in {
        "vllm": fake,
        "vllm.inputs": inputs,
        "vllm.lora": lora,
        "vllm.lora.request": lreq,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    from arc_ttft.infer.vllm import VLLMBackend, round_rank

    folders = []
    for i, r in enumerate((4, 12)):
        f = tmp_path / f"ad{i}"
        f.mkdir()
        (f / "adapter_config.json").write_text(json.dumps({"r": r}))
        folders.append(str(f))
    be = VLLMBackend(str(tiny_path), dtype="float32", max_model_len=256, max_lora_rank=4)
    reqs = [Request([1, 2], a, 1, 0.0, 8, [0]) for a in (folders[0], None, folders[1], folders[0])]
    out = be.generate(reqs)
    kw = be.llm.kw
    assert kw["enable_lora"] and kw["max_loras"] == 8 and kw["max_lora_rank"] == 16
    assert kw["dtype"] == "float32" and kw["max_model_len"] == 256
    assert calls[0] is None  # base requests alone
    assert [r.id for r in calls[1]] == [1, 2, 1]  # stable ids per folder
    assert out[1][0].token_ids == [5, 6, 0] and out[1][0].logprob == -1.5
    assert round_rank(1) == 1 and round_rank(9) == 16 and round_rank(64) == 64


def test_cli_predict_writes_candidates_and_submission(tiny_path, tmp_path, capsys):
    import json

    from arc_ttft.cli import main

    out = tmp_path / "pred"
    rc = main(["predict", "--challenges", "arc1-eval", "--max-tasks", "1", "--model", "tiny",
               "--backend", "hf", "--views", "2", "--rescore", "0", "--max-new-tokens", "8",
               "--output", str(out)])  # fmt: skip
    assert rc == 0
    sub = json.loads((out / "submission.json").read_text())
    [tid] = sub
    cand = json.loads((out / "candidates" / f"{tid}.json").read_text())
    assert cand["selections"][0]["samples"] == 2
    assert all(set(a) == {"attempt_1", "attempt_2"} for a in sub[tid])
    text = capsys.readouterr().out
    assert f"{tid}: candidates" in text and "predicted 1 tasks with hf" in text


def test_answer_is_over_only_when_parsing_cannot_change():
    from arc_ttft.encoding import answer_is_over

    digits = "0123456789\n"
    assert not answer_is_over("12\n34", digits)
    assert not answer_is_over("12\n34\n</ans", digits)  # an end marker on its way
    assert not answer_is_over("12\n34 \n", digits)  # whitespace is stripped by parsing
    assert answer_is_over("12\n34</answer>", digits)  # complete: the rest is ignored
    assert answer_is_over("12\n34<|im_end|>zz", digits)
    assert answer_is_over("12\n3a", digits)  # can never parse
    assert answer_is_over("12\n34\n<x", digits)
    assert answer_is_over("12EOS", digits, end="EOS")
    assert not answer_is_over("2x2\n1 12", "0123456789x \n")  # shaped's header
    # Complete rows that can never form a rectangle: rows of other widths, a blank line
    # between rows. The row being written may still be short (stopped mid-row is decided
    # at the end), and trailing blank lines are stripped by parsing.
    assert answer_is_over("12\n345\n", digits)
    assert answer_is_over("\n12\n\n34\n", digits)
    assert not answer_is_over("\n12\n34\n3", digits)
    assert not answer_is_over("12\n34\n\n", digits)
    assert answer_is_over("1" * 31 + "\n", digits)  # wider than any ARC grid
    assert answer_is_over("12\n" * 31, digits)  # taller
    assert not answer_is_over("12\n" * 30, digits)
    assert not answer_is_over("1" * 31, digits)  # a row still being written: decided later
    shaped = "0123456789x \n"
    assert answer_is_over("2x2\n1 123\n", shaped)  # wider than the header
    assert answer_is_over("2x2\n2 12\n", shaped)  # wrong row number
    assert answer_is_over("1x2\n1 12\n2 12\n", shaped)  # more rows than the header
    assert answer_is_over("2x2 \n1 12\n", shaped) is False  # trailing space is fine
    assert not answer_is_over("2x2\n1 12\n2 1", shaped)
    # the property itself: whatever follows, these never parse
    from arc_ttft.encoding import parse_answer

    for text, fmt in (("12\n345\n", "digits"), ("2x2\n1 123\n", "shaped")):
        for tail in ("", "6", "67\n", "\n"):
            assert parse_answer(text + tail, fmt) is None


def test_generation_stops_once_the_answer_cannot_parse(backend):
    """The random tiny model derails at once; with the format's alphabet it stops there,
    and the parsed answer is the same as when it runs to the cap."""
    from arc_ttft import encoding

    stops = stop_ids(backend.tokenizer)
    reqs = [Request(_ids(backend, p), max_new_tokens=40, stop_token_ids=stops) for p in PROMPTS]
    early = [
        Request(r.prompt_ids, max_new_tokens=40, stop_token_ids=stops, grid_alphabet="0123456789\n")
        for r in reqs
    ]
    full = backend.generate(reqs)
    cut = backend.generate(early)
    end = backend.tokenizer.eos_token
    for f, c in zip(full, cut):
        f, c = f[0], c[0]
        assert f.token_ids[: len(c.token_ids)] == c.token_ids  # a prefix: same greedy path
        assert encoding.parse_answer(c.text, "digits", end=end) is None
        assert encoding.parse_answer(f.text, "digits", end=end) is None
        text = "".join(backend._token_texts()[t] for t in c.token_ids)
        stopped = c.token_ids[-1] in stops or c.n_tokens == 40
        assert stopped or encoding.answer_is_over(text, "0123456789\n", end)
    assert sum(c[0].n_tokens for c in cut) < sum(f[0].n_tokens for f in full)
