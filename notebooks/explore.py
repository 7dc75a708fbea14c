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
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Explore: tasks and a run's predictions in the ARC palette
#
# Without `run_dir`: the first `n_tasks` tasks of `challenges`. With `run_dir` (the
# output folder of `arc-ttft run`, the dry run or the submit notebook): its tasks with
# both attempts from `submission.json`, marked ✓/✗ against the solution when known.
#
# ```bash
# papermill notebooks/explore.ipynb explore.ipynb -p run_dir runs/dry-run -p n_tasks 5
# ```

# %%
import io
from pathlib import Path

from IPython.display import Image, display

from arc_ttft import config, submission, tasks, viz

# %% tags=["parameters"]
challenges = "arc1-eval"  # a Kaggle challenges JSON, a folder or a bundled set name
run_dir = None  # a run's output folder (submission.json, config.json); None: tasks only
n_tasks = 3

# %%
run = Path(run_dir) if run_dir else None
sub = submission.read_submission(run / "submission.json") if run else None
solutions = None
if run and (run / "config.json").exists():
    run_cfg = config.load(config.RunConfig, run / "config.json")
    if run_cfg.data.challenges != challenges:
        print(f"note: the run used {run_cfg.data.challenges}, shown here: {challenges}")
    else:
        solutions = run_cfg.data.solutions
loaded = tasks.load_tasks(challenges, solutions, skip_invalid=True)
print(f"{len(loaded.tasks)} tasks from {challenges} ({len(loaded.problems)} invalid)")

shown = [t for t in loaded.tasks if sub is None or t.id in sub][:n_tasks]
if sub is not None:
    in_run = [t for t in loaded.tasks if t.id in sub]
    print(f"{len(sub)} tasks in {run / 'submission.json'}, {len(in_run)} of them in {challenges}")
    problems = submission.validate_submission({t.id: sub[t.id] for t in in_run}, in_run)
    print(f"submission problems: {len(problems)}", *problems[:5], sep="\n  ")
    if in_run and all(ex.output is not None for t in in_run for ex in t.test):
        print(submission.format_score(submission.score_submission(sub, in_run)))

# %% [markdown]
# Train pairs, then each test input (with the run's two attempts and the solution).

# %%
for task in shown:
    attempts = [(e["attempt_1"], e["attempt_2"]) for e in sub[task.id]] if sub else None
    fig = viz.plot_task(task, attempts)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=72)
    display(Image(data=png.getvalue()))
