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
# # Fine-tuning data mix: what to train the base on before TTT
#
# `arc-ttft finetune` trains a base model on a mix of ARC tasks in the prompts TTT and
# inference use. Which mix? One model per mix, all scored on the same held-out share of
# the evaluation set (`holdout_fraction`, seeded), without and with TTT, through
# `arc-ttft run` (`research.data_mix.data_mix_experiment`), all as one `arc-ttft sweep` on
# Ray, so a cluster of GPU machines (`address`) takes the mixes in parallel:
#
# - **train**: the training set only;
# - **eval**: the evaluation set (held-out tasks included: an upper reference);
# - **train+eval**: both (held-out tasks included);
# - **train+eval(n-1)**: both, minus the held-out tasks (`-holdout:EVAL`): what a
#   submission can honestly do when the test tasks resemble the evaluation set.
#
# By default the tiny offline model, a few tasks per set and a few steps (a CI run of
# the machinery, not a result). On a GPU machine, e.g.:
# `papermill notebooks/data_mix.ipynb out.ipynb -p model Qwen2.5-0.5B-Instruct
# -p max_tasks_per_source None -p holdout_fraction 0.1 -p max_steps 2000 -p ttt_steps 32
# -p views 8 -p max_seq_len 8192 -p budget_minutes 120`.

# %%
from pathlib import Path

from IPython.display import Image, Markdown, display

from arc_ttft.research import data_mix

# %% tags=["parameters"]
model = "tiny"  # registry name, hub id or folder
train_set = "arc1-train"
eval_set = "arc1-eval"
max_tasks_per_source = 4  # None: every task of both sets
holdout_fraction = 0.5  # share of the evaluation set every model is scored on
max_steps = 4  # fine-tuning steps per mix
samples_per_task = 2
batch_size = 2
max_seq_len = 1024
ttt_steps = 2  # TTT steps per held-out task in the "with TTT" runs
views = 2
budget_minutes = 2.0  # per scoring run
output = "runs/data-mix"
address = None  # a Ray cluster (auto, HOST:PORT, ray://HOST:10001); None: Ray starts here

# %%
rows = data_mix.data_mix_experiment(
    output,
    train_set=train_set,
    eval_set=eval_set,
    finetune_overrides={
        "model": model,
        "max_tasks_per_source": max_tasks_per_source,
        "holdout_fraction": holdout_fraction,
        "max_steps": max_steps,
        "samples_per_task": samples_per_task,
        "batch_size": batch_size,
        "warmup_steps": 0,
        "max_seq_len": max_seq_len,
    },
    run_overrides={"views": views, "rescore": 0, "budget_minutes": budget_minutes},
    ttt_steps=ttt_steps,
    address=address,
)
display(Markdown(data_mix.mix_table(rows)))

# %% [markdown]
# Held-out tasks solved per mix; "held-out in training" says which models saw the tasks
# they are scored on.

# %%
png = data_mix.mix_plot(rows, Path(output) / "data_mix.png")
display(Image(filename=str(png)))
best = max(rows, key=lambda r: (r.solved_ttt, r.solved_base))
print(f"held-out tasks: {rows[0].total}; mixes: {len(rows)}; most solved: {best.mix}")
