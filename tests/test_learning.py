"""The accuracy harness: held-out sets, per-family scores, the record and its page."""

from __future__ import annotations

import json

import pytest

from arc_ttft.research import learning
from arc_ttft.training import synthetic


def test_per_family_counts_whole_tasks():
    per_task = {
        "rot90-9-00000": [True],
        "rot90-9-00001": [False],
        "flip_v-9-00002": [True, False],  # one of two test outputs: not solved
        "flip_v-9-00003": [True, True],
    }
    assert learning.per_family(per_task) == {"flip_v": [1, 2], "rot90": [1, 2]}


def test_held_out_set_is_seeded_and_apart_from_training_seeds(tmp_path):
    held = learning.HeldOutSet(6, seed=999, min_size=2, max_size=4, families=["rot90", "crop"])
    a = [p.read_text() for p in held.write(tmp_path / "a")]
    b = [p.read_text() for p in held.write(tmp_path / "b")]
    assert a == b
    ids = list(json.loads(a[0]))
    assert {synthetic.family_of(t) for t in ids} == {"rot90", "crop"}
    assert held.name == "gen6-s999-2to4-rot90+crop"


@pytest.mark.slow
def test_run_arm_scores_the_pipeline_per_family(tmp_path):
    held = learning.HeldOutSet(3, seed=5, min_size=2, max_size=3, families=["flip_h", "rot90"])
    res = learning.run_arm(
        "base",
        {"ttt_steps": 0, "views": 2, "rescore": 0},
        held,
        tmp_path,
        base={"model": "tiny", "max_seq_len": 1024},
    )
    assert res.total == 3 and res.ttt_tasks == 0 and res.faults == []
    assert res.per_family.keys() == {"flip_h", "rot90"}
    assert sum(s for s, _ in res.per_family.values()) == res.solved
    assert sum(n for _, n in res.per_family.values()) == 3
    sub = json.loads((tmp_path / "runs" / "base" / "submission.json").read_text())
    assert len(sub) == 3

    record = tmp_path / "learning.jsonl"
    learning.append_record(res, record)
    learning.append_record(res, record)
    page = tmp_path / "learning.md"
    page.write_text(f"# Notes\n\nkept\n\n{learning.START}\nold\n{learning.END}\n\nafter\n")
    learning.write_markdown(learning.read_records(record), page)
    text = page.read_text()
    assert "kept" in text and "after" in text and "old" not in text
    assert text.count("| base | ttt_steps=0, views=2, rescore=0 |") == 2
    assert "### gen3-s5-2to3-flip_h+rot90, model tiny" in text


def test_the_generic_arm_undoes_every_registered_setting():
    from arc_ttft import config as C
    from arc_ttft import models

    nano = models.REGISTRY["arc-nano"].run_defaults
    generic = learning.ARMS["ttt-generic"]
    assert nano and set(nano) <= set(generic)
    cfg = C.from_flat(C.RunConfig, {"model": "arc-nano", **generic})
    plain = C.RunConfig()
    assert (cfg.ttt, cfg.infer) == (plain.ttt, plain.infer)
    own = C.from_flat(C.RunConfig, {"model": "arc-nano"})
    assert own.ttt.ttt_transforms == nano["ttt_transforms"] and own.ttt != plain.ttt
