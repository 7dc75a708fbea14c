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
#   (`arc-agi_test_challenges.json`, found under `/kaggle/input` whatever this year's
#   folder is called; the newest competition when several are attached), uses the
#   attached model (`model = None`) and writes `/kaggle/working/submission.json`. Attach
#   the model and a wheels dataset built with `scripts/build_wheels.sh`; the wheels are
#   installed offline (`pip --no-index`), nothing touches the network. The first cell
#   prints the image's Python, torch, CUDA, driver and GPUs: the wheels must be built for
#   that Python and torch, and when they are not the run stops before installing anything
#   with the `build_wheels.sh` command that fits. Without a usable CUDA GPU the run stops
#   at once with the reason (`allow_cpu = True` to test on a CPU session).
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
import platform
import shutil
import subprocess
import sys
import time
from glob import glob

notebook_started_at = time.time()


def show_image():
    """The kernel as the image ships it, before any install: build the wheels for this
    Python and torch (scripts/build_wheels.sh --python X.Y --torch-version V). torch
    answers in a child process, so this kernel loads nothing the install may replace."""
    print(f"python: {platform.python_version()} ({sys.executable})")
    probe = (
        "import torch; ok = torch.cuda.is_available(); n = torch.cuda.device_count() if ok else 0\n"
        "print(f'torch: {torch.__version__}, torch.version.cuda: {torch.version.cuda}, '\n"
        "      f'CUDA available: {ok}, gpus: {n}', *map(torch.cuda.get_device_name, range(n)),\n"
        "      sep='; ')"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
        )
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(done.stdout.strip() or f"torch: not importable ({error})")
    except subprocess.TimeoutExpired:
        print("torch: no answer in 300 s (CUDA initialization hangs?)")
    smi = shutil.which("nvidia-smi")
    listed = "not found"
    if smi:
        query = [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        try:
            out = subprocess.run(query, capture_output=True, text=True, timeout=60).stdout
            listed = "; ".join(out.strip().splitlines()) or "no GPU listed"
        except (OSError, subprocess.SubprocessError) as e:
            listed = f"failed ({e})"
    print(f"nvidia-smi (name, driver, memory): {listed}")


show_image()

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
wheels_dir = None  # None: a folder named *wheels* under /kaggle/input, if attached
allow_cpu = False  # True: on Kaggle, run without a GPU instead of stopping (testing only)
show_tasks = 2  # tasks drawn at the end
overrides = {}  # any other RunConfig field, e.g. {"max_seq_len": 4096, "rescore": 0}

# %%
if importlib.util.find_spec("arc_ttft") is None:
    # Only on an offline Kaggle machine: the package is one of the attached wheels. It goes
    # in alone (pure Python, fits any kernel) so that the library can check the folder
    # against this kernel before pip resolves anything else. This cannot live in the
    # library, which is not installed yet.
    roots = [wheels_dir] if wheels_dir else glob("/kaggle/input/**/*wheels*", recursive=True)
    found = sorted(whl for root in roots for whl in glob(f"{root}/arc_ttft-*.whl"))
    if not found:
        raise ModuleNotFoundError(
            "arc_ttft is not installed: pip install it (README), or attach the wheels "
            "dataset built by scripts/build_wheels.sh (a dataset whose name contains wheels)"
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", found[-1]],
        check=True,
    )
    importlib.invalidate_caches()

from arc_ttft import kaggle  # noqa: E402

# Stops before pip when the folder was built for another Python or torch, with the
# build_wheels.sh command that fits; None when no wheels folder is attached.
installed = kaggle.install_offline_wheels(wheels_dir)
print(kaggle.environment_report())  # what the run uses, after the install
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
