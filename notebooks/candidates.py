# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Candidate models and LoRA rank
#
# Two questions before a Kaggle run:
#
# 1. **Which model and sequence length fit the budget?** `candidates.run_candidates` times the
#    real LoRA TTT step (one untimed warm-up step, then `steps` timed ones) on synthetic
#    sequences of exactly `seq_len` tokens, each configuration in a fresh subprocess, and
#    projects the whole test set: `tasks_count x ttt_steps_per_task x s/step` (inference
#    left out unless `inference_hours` is set).
# 2. **Which LoRA rank?** `rank_sweep.run_rank_sweep` trains a fresh adapter per task and rank on
#    all train pairs but one and reports the loss on the held-out pair.
#
# By default everything runs on the tiny offline model (seconds, any machine). On a GPU
# machine, pass real models, e.g. with papermill:
# `-p models "Qwen2.5-0.5B-Instruct,Qwen2.5-1.5B-Instruct" -p seq_lens "2048,4096,8192"
# -p steps 10 -p random_weights False -p rank_model Qwen2.5-0.5B-Instruct`.

# %%
from IPython.display import Image, Markdown, display

from arc_ttft.config import from_flat
from arc_ttft.research import candidates, rank_sweep

# %% tags=["parameters"]
models = "tiny"  # comma separated registry names, hub ids or folders
seq_lens = "256,512"
steps = 3
random_weights = True  # random weights time exactly like real ones; no download
int4 = False
budget_hours = 12.0
tasks_count = 100
ttt_steps_per_task = 32
find_max_seq_len = False
ranks = "4,8"
rank_model = "tiny"
challenges = "arc1-eval"
max_tasks = 3
rank_ttt_steps = 4
output = "runs/candidates"

# %%
cand_cfg = from_flat(
    candidates.CandidatesConfig,
    {
        "models": models,
        "seq_lens": seq_lens,
        "steps": steps,
        "random_weights": random_weights,
        "int4": int4,
        "budget_hours": budget_hours,
        "tasks_count": tasks_count,
        "ttt_steps_per_task": ttt_steps_per_task,
        "find_max_seq_len": find_max_seq_len,
        "output": output,
    },
)
cand = candidates.run_candidates(cand_cfg)
display(Markdown(cand.markdown))

# %% [markdown]
# Every configuration is a row: one that is over the model's context, out of memory or
# fails to load carries its reason instead of numbers.

# %%
ok = [r for r in cand.rows if r.status == "ok"]
assert ok, "no configuration ran; see the notes column"
best = [r for r in ok if r.fits]
print(f"{len(ok)} of {len(cand.rows)} configurations ran; {len(best)} fit {budget_hours:g} h")
for r in sorted(best, key=lambda r: (-r.seq_len, r.sec_per_step)):
    print(
        f"  {r.model} @ {r.seq_len}: {r.sec_per_step:.3f} s/step, test set {r.test_set_hours:.2f} h"
    )

# %%
sweep_cfg = from_flat(
    rank_sweep.RankSweepConfig,
    {
        "ranks": ranks,
        "model": rank_model,
        "challenges": challenges,
        "max_tasks": max_tasks,
        "ttt_steps": rank_ttt_steps,
        "output": output,
    },
)
sweep = rank_sweep.run_rank_sweep(sweep_cfg)
display(Markdown(sweep.table))
display(Image(filename=sweep.paths["png"]))
