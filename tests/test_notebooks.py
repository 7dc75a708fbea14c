"""The notebooks (submit, explore, data_mix) and their Kaggle helpers (arc_ttft.kaggle).

The slow tests are the CI notebook step: the notebooks run end to end with papermill on
the tiny offline model, in the venv's own python3 kernel.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from arc_ttft import config as C
from arc_ttft import kaggle, submission
from arc_ttft.tasks import load_tasks
from arc_ttft.training.config import FinetuneConfig

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PAIRS = ["submit", "explore", "data_mix"]

# Notebook parameters that are not RunConfig fields.
NOT_CONFIG = {"output_dir", "wheels_dir", "allow_cpu", "show_tasks", "overrides"}


# ---------------------------------------------------------------------------------------
# Pairs and parameters
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAIRS)
def test_ipynb_cells_equal_py_cells(name):
    jupytext = pytest.importorskip("jupytext")
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert [(c.cell_type, c.source) for c in nb.cells] == [
        (c.cell_type, c.source) for c in py.cells
    ], f"notebooks/{name}.ipynb differs from its .py: run jupytext --sync notebooks/{name}.py"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters' (papermill)"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


def _parameters(name: str) -> dict:
    papermill = pytest.importorskip("papermill")
    return papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))


def test_submit_parameters_are_config_fields():
    params = _parameters("submit")
    expected = {
        "model",
        "challenges",
        "output_dir",
        "budget_minutes",
        "budget_hours",
        "max_tasks",
        "ttt_steps",
        "views",
        "backend",
        "wheels_dir",
        "allow_cpu",
        "overrides",
    }
    assert expected <= set(params)
    fields = C.flat_fields(C.RunConfig)
    assert set(params) - NOT_CONFIG <= set(fields), "notebook names must be config field names"
    # Kaggle's Submit runs the notebook as saved: None = the attached model there.
    assert params["model"]["default"] == "None"
    assert params["allow_cpu"]["default"] == "False"
    assert params["overrides"]["default"] == "{}"


def test_submit_first_cell_records_the_start_time():
    """Kaggle's 12 hours count from the notebook's start: the first code cell records
    time.time() before installing or importing the library, and the config gets it."""
    jupytext = pytest.importorskip("jupytext")
    code = [c.source for c in jupytext.read(NOTEBOOKS / "submit.py").cells if c.cell_type == "code"]
    first = code[0]
    assert "notebook_started_at = time.time()" in first
    assert "arc_ttft" not in first and "pip" not in first
    config_cell = next(src for src in code if "kaggle.submit_config(" in src)
    assert '"started_at": notebook_started_at' in config_cell
    install = next(i for i, src in enumerate(code) if "pip" in src)
    assert install > 0


def test_explore_parameters():
    assert set(_parameters("explore")) == {"challenges", "run_dir", "n_tasks"}


def test_data_mix_parameters_are_config_fields():
    params = _parameters("data_mix")
    from arc_ttft.research.sweep import SweepConfig

    fields = (
        set(C.flat_fields(FinetuneConfig))
        | set(C.flat_fields(C.RunConfig))
        | set(C.flat_fields(SweepConfig))  # address: the Ray cluster the mixes run on
    )
    assert set(params) - {"train_set", "eval_set", "output"} <= fields
    assert params["model"]["default"] == '"tiny"'  # CI runs the tiny offline model


def test_python3_kernel_is_this_python():
    manager = pytest.importorskip("jupyter_client.manager")
    # ipykernel's kernelspec says "python"; jupyter_client runs it as sys.executable.
    assert manager.KernelManager(kernel_name="python3").format_kernel_cmd()[0] == sys.executable


# ---------------------------------------------------------------------------------------
# arc_ttft.kaggle with a fake /kaggle
# ---------------------------------------------------------------------------------------


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    root = tmp_path / "kaggle"
    monkeypatch.setattr(kaggle, "KAGGLE_ROOT", root)
    return root


def _challenges(root: Path, year: int) -> Path:
    f = root / "input" / f"arc-prize-{year}" / "arc-agi_test_challenges.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("{}")
    return f


def test_not_on_kaggle(fake_kaggle):
    assert not kaggle.on_kaggle()
    assert kaggle.kaggle_defaults() == {}
    assert kaggle.find_wheels_dir() is None
    assert kaggle.install_offline_wheels() is None


def test_kaggle_defaults_prefer_2025(fake_kaggle):
    (fake_kaggle / "input").mkdir(parents=True)
    assert kaggle.on_kaggle()
    assert kaggle.kaggle_defaults() == {
        "challenges": None,
        "output": str(fake_kaggle / "working"),
        "scratch_dir": "/tmp/arc-ttft",  # adapters stay out of the size-limited working dir
    }
    f2024 = _challenges(fake_kaggle, 2024)
    assert kaggle.kaggle_defaults()["challenges"] == str(f2024)
    f2025 = _challenges(fake_kaggle, 2025)
    assert kaggle.kaggle_defaults()["challenges"] == str(f2025)


def test_install_offline_wheels_never_uses_the_index(fake_kaggle, monkeypatch):
    calls = []
    monkeypatch.setattr(kaggle.subprocess, "run", lambda cmd, check: calls.append(cmd))
    (fake_kaggle / "input" / "arc-ttft-wheels").mkdir(parents=True)
    assert kaggle.find_wheels_dir() is None  # a folder without wheels is ignored
    assert kaggle.install_offline_wheels() is None
    wheels = fake_kaggle / "input" / "arc-ttft-wheels"
    for name in ("b_pkg-1.0-py3-none-any.whl", "a_pkg-2.0-py3-none-any.whl"):
        (wheels / name).write_bytes(b"")
    (wheels / "notes.txt").write_text("not a wheel")
    assert kaggle.find_wheels_dir() == wheels
    cmd = kaggle.install_offline_wheels()
    assert calls == [cmd]
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert "--no-index" in cmd
    assert cmd[cmd.index("--find-links") + 1] == str(wheels)
    assert not any(a.startswith(("--index-url", "--extra-index-url")) for a in cmd)


def test_install_offline_wheels_installs_only_what_is_missing(fake_kaggle, monkeypatch):
    """The package is resolved from the folder; wheels are never passed one by one, so a
    torch wheel there cannot replace Kaggle's working CUDA torch."""
    monkeypatch.setattr(kaggle.subprocess, "run", lambda cmd, check: pytest.fail("ran pip"))
    wheels = fake_kaggle / "input" / "arc-ttft-wheels"
    wheels.mkdir(parents=True)
    for name in ("arc_ttft-0.1.0-py3-none-any.whl", "torch-2.14.0-cp311-none-any.whl"):
        (wheels / name).write_bytes(b"")
    cmd = kaggle.install_offline_wheels(dry_run=True)
    assert cmd[-1] == "arc-ttft"
    assert not any(a.endswith(".whl") for a in cmd)
    assert cmd[cmd.index("--upgrade-strategy") + 1] == "only-if-needed"
    assert not {"--force-reinstall", "--upgrade", "-U", "--ignore-installed"} & set(cmd)
    # build_wheels.sh writes what to install (e.g. vllm as well) into requirements.txt.
    (wheels / "requirements.txt").write_text("arc-ttft\nvllm==0.10.1\n")
    cmd = kaggle.install_offline_wheels(dry_run=True)
    assert cmd[-2:] == ["-r", str(wheels / "requirements.txt")]


def test_install_offline_wheels_explicit_folder(tmp_path, fake_kaggle, monkeypatch):
    monkeypatch.setattr(kaggle.subprocess, "run", lambda cmd, check: pytest.fail("ran pip"))
    with pytest.raises(FileNotFoundError, match="wheels_dir: .* is not a folder"):
        kaggle.install_offline_wheels(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .whl files"):
        kaggle.install_offline_wheels(empty)
    (empty / "x-1.0-py3-none-any.whl").write_bytes(b"")
    cmd = kaggle.install_offline_wheels(empty, dry_run=True)
    assert cmd[cmd.index("--find-links") + 1] == str(empty)


def test_submit_config_local_defaults(fake_kaggle):
    cfg = kaggle.submit_config({"model": None, "challenges": None, "output_dir": None})
    assert (cfg.data.challenges, cfg.output) == ("arc1-eval", "runs/notebook")
    assert cfg.model.model == "tiny"  # CI and dry runs keep the tiny model
    assert cfg.scratch_dir is None  # the default: <output>/adapters
    assert cfg.budget.started_at is None
    cfg = kaggle.submit_config(
        {"output_dir": "out", "ttt_steps": 4, "views": None, "budget_minutes": 1.5},
        {"max_seq_len": 512},
    )
    assert (cfg.output, cfg.ttt.ttt_steps, cfg.infer.views) == ("out", 4, C.InferConfig().views)
    assert cfg.budget.budget_seconds() == 90.0
    assert cfg.model.max_seq_len == 512


def test_submit_config_on_kaggle(fake_kaggle):
    (fake_kaggle / "input").mkdir(parents=True)
    with pytest.raises(C.ConfigError, match="no competition file found"):
        kaggle.submit_config({"model": "Qwen2-0.5B"})
    f = _challenges(fake_kaggle, 2024)
    cfg = kaggle.submit_config({"model": "Qwen2-0.5B"})
    assert (cfg.data.challenges, cfg.output) == (str(f), str(fake_kaggle / "working"))
    assert cfg.scratch_dir == "/tmp/arc-ttft"
    # An explicit parameter still wins over the Kaggle default.
    params = {"model": "tiny", "challenges": "arc1-eval", "scratch_dir": "here"}
    cfg = kaggle.submit_config(params)
    assert (cfg.data.challenges, cfg.scratch_dir) == ("arc1-eval", "here")


def test_submit_config_passes_started_at(fake_kaggle):
    """The notebook's first-cell time reaches the budget config (the run's guard)."""
    cfg = kaggle.submit_config({"model": None, "started_at": 1234567.5})
    assert cfg.budget.started_at == 1234567.5


def test_submit_config_errors_name_the_parameter(fake_kaggle):
    with pytest.raises(C.ConfigError, match="ttt_stepz: unknown parameter"):
        kaggle.submit_config({}, {"ttt_stepz": 3})
    with pytest.raises(C.ConfigError, match="views: given as a parameter and in overrides"):
        kaggle.submit_config({"views": 2}, {"views": 3})
    with pytest.raises(C.ConfigError, match="views: 0 must be >= 1"):
        kaggle.submit_config({"views": 0})


# ---------------------------------------------------------------------------------------
# The notebooks, executed (the CI notebook step)
# ---------------------------------------------------------------------------------------


def _execute(name: str, out: Path, cwd: Path, parameters: dict):
    papermill = pytest.importorskip("papermill")
    nbformat = pytest.importorskip("nbformat")
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(cwd),
        progress_bar=False,
    )
    return nbformat.read(out, as_version=4)


def _stdout(nb) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "stream" and o.name == "stdout"
    )


def _pictures(nb) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory):
    """Jupyter, IPython and matplotlib write only under a temporary folder."""
    tmp = tmp_path_factory.mktemp("jupyter")
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in {
            "IPYTHONDIR": "ipython",
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "MPLCONFIGDIR": "mpl",
        }.items():
            mp.setenv(var, str(tmp / sub))
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        mp.setenv("MPLBACKEND", "Agg")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield tmp


@pytest.fixture(scope="module")
def submit_run(notebook_env):
    """The submit notebook on the tiny model: 2 tasks, 4 TTT steps, 2 views, 1.5 minutes."""
    run_dir = notebook_env / "run"
    started = time.time()
    nb = _execute(
        "submit",
        notebook_env / "submit.out.ipynb",
        notebook_env,
        {
            "max_tasks": 2,
            "budget_minutes": 1.5,
            "ttt_steps": 4,
            "views": 2,
            "backend": "hf",
            "output_dir": str(run_dir),
            "overrides": {"max_seq_len": 512, "rescore": 0},
        },
    )
    return nb, run_dir, started


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_submit_notebook_writes_a_valid_submission(submit_run):
    nb, run_dir, started = submit_run
    sub = json.loads((run_dir / "submission.json").read_text())
    tasks = load_tasks("arc1-eval").tasks[:2]
    assert sorted(sub) == sorted(t.id for t in tasks)
    assert submission.validate_submission(sub, tasks) == []
    out = _stdout(nb)
    assert "challenges: arc1-eval" in out
    # what runs, resolved: device, dtype, backend, sampling, scorer, scoring views, workers
    assert "device: CPU, dtype: float32, backend: hf, sampling: greedy" in out
    assert "scorer: " in out and "scoring views: " in out
    assert "score: " in out and "(" in out.split("score: ")[1]
    assert _pictures(nb) == 2
    assert (run_dir / "summary.md").exists() and (run_dir / "report.html").exists()
    cfg = C.load(C.RunConfig, run_dir / "config.json")
    assert (cfg.ttt.ttt_steps, cfg.infer.views, cfg.infer.backend) == (4, 2, "hf")
    assert cfg.model.model == "tiny"  # the saved default None, away from Kaggle
    assert started <= cfg.budget.started_at <= started + 60  # the first cell's time


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_explore_notebook_shows_the_run(submit_run, notebook_env):
    _, run_dir, _ = submit_run
    nb = _execute(
        "explore",
        notebook_env / "explore.out.ipynb",
        notebook_env,
        {"challenges": "arc1-eval", "run_dir": str(run_dir), "n_tasks": 3},
    )
    out = _stdout(nb)
    assert "2 tasks in" in out and "2 of them in arc1-eval" in out
    assert "submission problems: 0" in out
    assert "score: " in out
    assert _pictures(nb) == 2  # n_tasks=3 but the run has 2 tasks


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_data_mix_notebook_scores_every_mix(notebook_env):
    """Four fine-tunes of the tiny model (4 tasks per set, 4 steps), each scored on the
    same held-out arc1-eval tasks with and without TTT: one table, one plot."""
    out = notebook_env / "data-mix"
    nb = _execute(
        "data_mix", notebook_env / "data_mix.out.ipynb", notebook_env, {"output": str(out)}
    )
    assert _pictures(nb) == 1
    tables = "".join(
        o.get("data", {}).get("text/markdown", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    for mix in ("| train |", "| eval |", "| train+eval |", "| train+eval(n-1) |"):
        assert mix in tables
    assert "held-out tasks: 2; mixes: 4" in _stdout(nb)
    # one sweep: a fine-tune per mix, two arms (without and with TTT) on each
    (sweep,) = (out / "sweeps").iterdir()
    fts = {
        tuple(json.loads((d / "out" / "config.json").read_text())["data"]): d / "out"
        for d in (sweep / "finetune").iterdir()
    }
    assert len(fts) == 4
    n_1 = fts[("arc1-train", "arc1-eval", "-holdout:arc1-eval")]
    held = json.loads((n_1 / "holdout.json").read_text())["task_ids"]
    trained = json.loads((n_1 / "train_tasks.json").read_text())
    assert len(held) == 2 and not set(held) & {t["id"] for t in trained}
    arms = sorted((sweep / "arms").iterdir())
    assert len(arms) == 8
    for arm in arms:
        sub = json.loads((arm / "s0" / "submission.json").read_text())
        assert sorted(sub) == held  # every model answered exactly the held-out tasks
