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
# # Submit: the whole pipeline under the budget, ending in `submission.json`
#
# A thin caller of `arc_ttft.pipeline.run`: the parameters below are config field names
# (`arc-ttft run --help` explains each), `overrides` takes any other field.
#
# - **On Kaggle** (`/kaggle/input` exists): reads the competition's test challenges
#   (`arc-prize-2025`, else `arc-prize-2024`), uses the attached model (`model = None`)
#   and writes `/kaggle/working/submission.json`. Attach the model and a wheels dataset
#   built with `scripts/build_wheels.sh`; the wheels are installed offline
#   (`pip --no-index`), nothing touches the network. Without a usable CUDA GPU the run
#   stops at once with the reason (`allow_cpu = True` to test on a CPU session).
# - **Elsewhere**: defaults to the `tiny` model, the bundled `arc1-eval` tasks and
#   `runs/notebook/`.
#
# ```bash
# papermill notebooks/submit.ipynb out.ipynb                                     # Kaggle
# papermill notebooks/submit.ipynb out.ipynb -p max_tasks 5 -p budget_minutes 3  # local
# ```
#
# Kaggle's 12 hours count from the notebook's start, so the first cell records it and the
# budget counts from there. The submission on disk is valid from the first seconds and
# rewritten atomically after every task, so a run cut short still leaves a valid file.

# %%
# First, before any install or import of the library: the time the budget counts from.
import importlib
import importlib.util
import subprocess
import sys
import time
from glob import glob

notebook_started_at = time.time()

# %% tags=["parameters"]
model = None  # None: the model attached under /kaggle/input on Kaggle, else "tiny"
challenges = None  # None: the Kaggle competition file, else arc1-eval
output_dir = None  # None: /kaggle/working on Kaggle, else runs/notebook
budget_minutes = None  # overrides budget_hours when set
budget_hours = 12.0
max_tasks = None
ttt_steps = None  # None: the config default
views = None  # None: the config default
backend = "auto"  # auto (vLLM when usable), vllm, hf
wheels_dir = None  # None: any /kaggle/input/*wheels* folder, if one is attached
allow_cpu = False  # True: on Kaggle, run without a GPU instead of stopping (testing only)
show_tasks = 2  # tasks drawn at the end
overrides = {}  # any other RunConfig field, e.g. {"max_seq_len": 4096, "rescore": 0}

# %%
if importlib.util.find_spec("arc_ttft") is None:
    # Only on an offline Kaggle machine: the package itself is one of the attached wheels.
    # This cannot live in the library, which is not installed yet.
    found = [wheels_dir] if wheels_dir else sorted(glob("/kaggle/input/*wheels*"))
    if not found:
        raise ModuleNotFoundError(
            "arc_ttft is not installed: pip install it (README), or attach the wheels "
            "dataset built by scripts/build_wheels.sh"
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", found[0]]
        + ["--upgrade-strategy", "only-if-needed", "arc-ttft"],
        check=True,
    )
    importlib.invalidate_caches()

from arc_ttft import kaggle  # noqa: E402

installed = kaggle.install_offline_wheels(wheels_dir)  # None when no wheels folder
if kaggle.on_kaggle():
    print(kaggle.check_accelerator(allow_cpu=allow_cpu))  # stops here without a GPU
cfg = kaggle.submit_config(
    {
        "model": model,
        "challenges": challenges,
        "output_dir": output_dir,
        "budget_minutes": budget_minutes,
        "budget_hours": budget_hours,
        "max_tasks": max_tasks,
        "ttt_steps": ttt_steps,
        "views": views,
        "backend": backend,
        "started_at": notebook_started_at,
    },
    overrides,
)
print(f"kaggle: {kaggle.on_kaggle()}, wheels installed: {installed is not None}")
print(f"model: {cfg.model.model}, challenges: {cfg.data.challenges}, output: {cfg.output}")
print(f"budget: {cfg.budget.budget_seconds() / 60:.1f} min, backend: {cfg.infer.backend}")
print(f"started {time.time() - notebook_started_at:.0f} s ago (the budget counts from then)")

# %%
from IPython.display import Image, Markdown, display  # noqa: E402

from arc_ttft import pipeline, submission, tasks, viz  # noqa: E402

result = pipeline.run(cfg)
print(f"submission: {result.submission}")
print(f"tasks: {result.n_tasks}, seconds: {result.seconds:.1f}")

# %%
print(result.score_line() or "score: unknown (no solutions for these tasks)")

# %%
display(Markdown((result.output / "summary.md").read_text()))

# %% [markdown]
# A few tasks in the ARC palette: train pairs, then each test input with its two
# attempts (and the solution when known). `report.html` in the output folder has them all.

# %%
sub = submission.read_submission(result.submission)
loaded = tasks.load_tasks(cfg.data.challenges, cfg.data.solutions, skip_invalid=True)
for task in [t for t in loaded.tasks if t.id in sub][:show_tasks]:
    attempts = [(e["attempt_1"], e["attempt_2"]) for e in sub[task.id]]
    png = viz.save_task_png(task, result.output / "pictures" / f"{task.id}.png", attempts)
    display(Image(filename=str(png)))
