"""arc_ttft.kaggle on a fake /kaggle: the competition file, the attached model, the GPU
check and the environment report, the wheels' fit to the kernel, scripts/build_wheels.sh.

(The wheels install and submit_config basics are in tests/test_notebooks.py.)
Never a real /kaggle: KAGGLE_ROOT points at a temporary folder.

Over 500 lines: every way the notebook's first cells can meet a Kaggle image has a case.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from arc_ttft import config as C
from arc_ttft import kaggle, model_paths, models


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    root = tmp_path / "kaggle"
    monkeypatch.setattr(kaggle, "KAGGLE_ROOT", root)
    monkeypatch.setattr(model_paths, "KAGGLE_INPUT", str(root / "input"))  # read there
    f = root / "input" / "arc-prize-2025" / "arc-agi_test_challenges.json"
    f.parent.mkdir(parents=True)
    f.write_text("{}")
    return root


def _model(folder: Path, weights: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


# ---------------------------------------------------------------------------------------
# The competition file: found by name, whatever this year's folder is called
# ---------------------------------------------------------------------------------------


@pytest.fixture
def bare_kaggle(tmp_path, monkeypatch):
    """A fake /kaggle with an empty input folder: no competition data attached."""
    root = tmp_path / "kaggle"
    monkeypatch.setattr(kaggle, "KAGGLE_ROOT", root)
    monkeypatch.setattr(model_paths, "KAGGLE_INPUT", str(root / "input"))
    (root / "input").mkdir(parents=True)
    return root


def _challenges(root: Path, folder: str) -> Path:
    f = root / "input" / folder / "arc-agi_test_challenges.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("{}")
    return f


def test_challenges_under_a_folder_never_seen_before(bare_kaggle):
    """The competition folder is renamed every year: the file is found by its name."""
    f = _challenges(bare_kaggle, "arc-agi-2026-finals")
    assert kaggle.kaggle_defaults()["challenges"] == str(f)
    assert kaggle.submit_config({"model": "tiny"}).data.challenges == str(f)
    assert kaggle.find_challenges() == f
    # Deeper too (a competition mounted under competitions/<slug>/).
    f.unlink()
    deep = _challenges(bare_kaggle, "competitions/arc-prize-2026/data")
    assert kaggle.kaggle_defaults()["challenges"] == str(deep)


def test_newest_competition_wins(bare_kaggle):
    f2026 = _challenges(bare_kaggle, "arc-prize-2026")
    f2025 = _challenges(bare_kaggle, "arc-prize-2025")
    os.utime(f2026, (1_000_000, 1_000_000))  # older on disk: the year decides
    assert kaggle.kaggle_defaults()["challenges"] == str(f2026)
    assert kaggle.find_challenges() == f2026
    assert kaggle.find_challenges(bare_kaggle / "input" / "arc-prize-2025") == f2025
    # No year in the names: the newest file.
    a = _challenges(bare_kaggle / "other", "data-a")
    b = _challenges(bare_kaggle / "other", "data-b")
    os.utime(b, (1_000_000, 1_000_000))
    assert kaggle.find_challenges(bare_kaggle / "other" / "input") == a


def test_no_challenges_lists_what_was_seen(bare_kaggle):
    inputs = bare_kaggle / "input"
    (inputs / "arc-agi-2026-data").mkdir()
    (inputs / "arc-agi-2026-data" / "arc-agi_evaluation_challenges.json").write_text("{}")
    _model(inputs / "qwen2.5" / "transformers" / "0.5b-instruct" / "1")
    with pytest.raises(C.ConfigError, match="no competition file found") as e:
        kaggle.submit_config({"model": "tiny"})
    msg = str(e.value)
    assert "arc-agi-2026-data" in msg and "qwen2.5/transformers/0.5b-instruct/1" in msg
    assert "arc-agi_test_challenges.json" in msg and str(inputs) in msg
    assert "-p challenges PATH" in msg
    assert kaggle.find_challenges() is None


# ---------------------------------------------------------------------------------------
# find_attached_model
# ---------------------------------------------------------------------------------------


def test_no_model_attached_says_what_was_seen(fake_kaggle):
    inputs = fake_kaggle / "input"
    (inputs / "arc-ttft-wheels").mkdir()
    _model(inputs / "half-uploaded", weights=False)
    with pytest.raises(C.ConfigError, match="no model attached") as e:
        kaggle.find_attached_model()
    msg = str(e.value)
    assert "arc-prize-2025" in msg and "arc-ttft-wheels" in msg
    assert "half-uploaded (no *.safetensors)" in msg


def test_one_attached_model_is_the_model(fake_kaggle):
    inputs = fake_kaggle / "input"
    hit = _model(inputs / "my-finetune")
    assert kaggle.find_attached_model() == hit


def test_kaggle_model_versions_count_as_one_newest_wins(fake_kaggle):
    inputs = fake_kaggle / "input"
    for v in ("1", "2", "10"):
        _model(inputs / "qwen2" / "transformers" / "0.5b-instruct" / v)
    assert kaggle.find_attached_model() == inputs / "qwen2/transformers/0.5b-instruct/10"


def test_several_models_prefer_the_registry_name(fake_kaggle):
    inputs = fake_kaggle / "input"
    _model(inputs / "some-checkpoint")
    hit = _model(inputs / "qwen2.5" / "transformers" / "0.5b-instruct" / "1")
    assert kaggle.find_attached_model() == hit
    _model(inputs / "smollm2-135m-instruct")  # a second registry model: ambiguous
    with pytest.raises(C.ConfigError, match="several models attached") as e:
        kaggle.find_attached_model()
    assert "smollm2-135m-instruct" in str(e.value) and "set the model parameter" in str(e.value)


def test_submit_config_model_none_means_attached_on_kaggle(fake_kaggle):
    with pytest.raises(C.ConfigError, match="no model attached"):
        kaggle.submit_config({"model": None})
    hit = _model(fake_kaggle / "input" / "qwen2" / "transformers" / "0.5b-instruct" / "1")
    cfg = kaggle.submit_config({"model": None})
    assert cfg.model.model == str(hit)
    # Named like a registry model: its max_seq_len, as if the name had been given.
    assert cfg.model.max_seq_len == models.REGISTRY["Qwen2-0.5B-Instruct"].default_seq_len
    assert kaggle.submit_config({}, {"max_seq_len": 1024}).model.max_seq_len == 1024
    # An explicit model never looks for the attached one.
    assert kaggle.submit_config({"model": "tiny"}).model.model == "tiny"
    # The path resolves as an explicit folder.
    assert models.resolve_model_path(cfg.model.model) == hit


def test_model_none_is_tiny_away_from_kaggle(tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle, "KAGGLE_ROOT", tmp_path / "nowhere")
    assert kaggle.submit_config({"model": None}).model.model == "tiny"


# ---------------------------------------------------------------------------------------
# check_accelerator
# ---------------------------------------------------------------------------------------


@pytest.fixture
def no_cuda(monkeypatch):
    torch = pytest.importorskip("torch")

    def unavailable():
        import warnings

        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old", stacklevel=2
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    smi = "NVIDIA-SMI 550.90.07   Driver Version: 550.90.07   CUDA Version: 12.4"
    monkeypatch.setattr(kaggle, "_nvidia_smi", lambda: smi)
    return torch


def test_check_accelerator_stops_without_cuda(no_cuda):
    with pytest.raises(RuntimeError) as e:
        kaggle.check_accelerator()
    msg = str(e.value)
    assert f"torch {no_cuda.__version__}" in msg
    assert "torch.version.cuda = 13.0" in msg and "is_available() = False" in msg
    assert "driver on your system is too old" in msg  # torch's own warning, kept
    assert "CUDA Version: 12.4" in msg  # nvidia-smi
    assert "Accelerator" in msg and "allow_cpu" in msg and "build_wheels.sh" in msg


def test_check_accelerator_allow_cpu(no_cuda):
    line = kaggle.check_accelerator(allow_cpu=True)
    assert line.startswith("no GPU") and "allow_cpu=True" in line and "12.4" in line


def test_check_accelerator_with_gpus(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Tesla T4")
    monkeypatch.setattr(kaggle, "_nvidia_smi", lambda: pytest.fail("no need for nvidia-smi"))
    assert kaggle.check_accelerator().startswith("GPU: 2 x (Tesla T4, Tesla T4)")


def test_nvidia_smi_missing(monkeypatch):
    monkeypatch.setattr(kaggle.shutil, "which", lambda name: None)
    assert "not found" in kaggle._nvidia_smi()


# ---------------------------------------------------------------------------------------
# environment_report and the notebook's first cell
# ---------------------------------------------------------------------------------------

REPORT_LINES = ("python: ", "torch: ", "driver: ", "gpus: ", "packages: ")


def _fake_nvidia_smi(folder: Path, lines: list[str]) -> Path:
    """An nvidia-smi that answers the --query-gpu query with ``lines``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in lines))
    exe.chmod(0o755)
    return exe


def test_environment_report_on_cpu_without_nvidia_smi(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(kaggle.shutil, "which", lambda name: None)
    info = kaggle.environment()
    v = sys.version_info
    assert info["python"].startswith(f"{v.major}.{v.minor}.")
    assert info["python_tag"] == f"cp{v.major}{v.minor}"
    assert info["torch"] == torch.__version__ and info["torch_cuda"] == torch.version.cuda
    assert info["cuda_available"] is False and info["gpus"] == []
    assert info["driver"] == "nvidia-smi not found"
    assert info["packages"]["arc-ttft"] is not None
    lines = kaggle.environment_report(info).splitlines()
    assert [line[: len(p)] for line, p in zip(lines, REPORT_LINES)] == list(REPORT_LINES)
    report = "\n".join(lines)
    assert f"torch: {torch.__version__}, torch.version.cuda: {torch.version.cuda}" in report
    assert "CUDA available: False" in report and "gpus: 0 (none)" in report
    assert "driver: nvidia-smi not found" in report


def test_environment_report_reads_nvidia_smi(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    smi = _fake_nvidia_smi(tmp_path, ["NVIDIA L4, 550.90.07, 23034 MiB"] * 4)
    monkeypatch.setattr(kaggle.shutil, "which", lambda name: str(smi))
    report = kaggle.environment_report()
    assert "driver: 550.90.07" in report
    assert "gpus: 4 (4 x NVIDIA L4, 23034 MiB each)" in report  # torch sees none: nvidia-smi's
    failing = tmp_path / "failing" / "nvidia-smi"
    failing.parent.mkdir()
    failing.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    failing.chmod(0o755)
    monkeypatch.setattr(kaggle.shutil, "which", lambda name: str(failing))
    assert (
        "driver: nvidia-smi failed (exit 9: NVIDIA-SMI has failed)" in kaggle.environment_report()
    )


def test_environment_report_without_torch(monkeypatch):
    real = kaggle.importlib.util.find_spec
    monkeypatch.setattr(
        kaggle.importlib.util, "find_spec", lambda name: None if name == "torch" else real(name)
    )
    monkeypatch.setattr(kaggle.shutil, "which", lambda name: None)
    report = kaggle.environment_report()
    assert "torch: not installed, torch.version.cuda: None, CUDA available: False" in report


NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "submit.py"


def _first_cell_output(path_dir: Path) -> str:
    """The submit notebook's first code cell, run in a fresh python with PATH=path_dir."""
    jupytext = pytest.importorskip("jupytext")
    cells = [c.source for c in jupytext.read(NOTEBOOK).cells if c.cell_type == "code"]
    env = {**os.environ, "PATH": str(path_dir)}
    done = subprocess.run(
        [sys.executable, "-c", cells[0]], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_notebook_first_cell_prints_the_image(tmp_path):
    """Before anything is installed, the first cell shows what the wheels must fit: Python,
    torch and its CUDA, CUDA availability, the driver and GPUs; no nvidia-smi is no error."""
    torch = pytest.importorskip("torch")
    out = _first_cell_output(tmp_path / "empty")  # no nvidia-smi on PATH
    v = sys.version_info
    assert f"python: {v.major}.{v.minor}." in out
    assert f"torch: {torch.__version__}, torch.version.cuda: {torch.version.cuda}" in out
    assert "CUDA available: " in out and "gpus: " in out
    assert "nvidia-smi (name, driver, memory): not found" in out
    _fake_nvidia_smi(tmp_path / "smi", ["NVIDIA L4, 550.90.07, 23034 MiB"] * 2)
    out = _first_cell_output(tmp_path / "smi")
    assert "nvidia-smi (name, driver, memory): NVIDIA L4, 550.90.07, 23034 MiB; NVIDIA L4" in out


# ---------------------------------------------------------------------------------------
# The wheels folder against the kernel: stop before pip, with the command that fits
# ---------------------------------------------------------------------------------------

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER = "3.12" if RUNNING != "3.12" else "3.13"


def _installed_torch() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _wheels(folder: Path, names: list[str], target: dict | None = None) -> Path:
    """A wheels folder of empty files named like real wheels (and its wheels-target.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    if target is not None:
        (folder / kaggle.WHEELS_TARGET).write_text(json.dumps(target))
    return folder


def _tag(version: str) -> str:
    return "cp" + version.replace(".", "")


def _target(python: str, torch: str | None = "2.11.0", **extra) -> dict:
    return {
        "python": python,
        "torch": torch,
        "with_torch": torch is None,
        "requirements": "requirements-gpu.txt",
        "vllm": True,
        **extra,
    }


def test_wheels_for_another_python_stop_before_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle.subprocess, "run", lambda *a, **k: pytest.fail("ran pip"))
    tag = _tag(OTHER)
    folder = _wheels(
        tmp_path / "arc-ttft-wheels",
        ["arc_ttft-0.1.0-py3-none-any.whl", f"numpy-2.3.0-{tag}-{tag}-manylinux_2_28_x86_64.whl"],
        _target(OTHER, _installed_torch()),
    )
    with pytest.raises(kaggle.WheelsMismatchError) as e:
        kaggle.install_offline_wheels(folder, dry_run=True)
    msg = str(e.value)
    assert f"built for Python {OTHER}, the kernel runs Python {RUNNING}" in msg
    torch = _installed_torch()
    fits = f"bash scripts/build_wheels.sh --python {RUNNING} "
    fits += f"--torch-version {torch.split('+')[0]}" if torch else "--with-torch"
    assert fits + " arc-ttft-wheels" in msg


def test_wheels_mismatch_names_the_command_for_this_kernel(tmp_path):
    folder = _wheels(
        tmp_path / "arc-ttft-wheels", ["arc_ttft-0.1.0-py3-none-any.whl"], _target("3.12")
    )
    with pytest.raises(kaggle.WheelsMismatchError) as e:
        kaggle.check_wheels_fit(folder, python="3.11", torch="2.4.1+cu121")
    msg = str(e.value)
    assert "built for Python 3.12, the kernel runs Python 3.11" in msg
    assert "resolved against torch 2.11.0, the kernel has torch 2.4.1+cu121" in msg
    assert msg.endswith(
        "bash scripts/build_wheels.sh --python 3.11 --torch-version 2.4.1 arc-ttft-wheels"
    )
    # Only torch differs (major.minor): still stops; a patch release fits.
    with pytest.raises(kaggle.WheelsMismatchError, match="resolved against torch 2.11.0") as e:
        kaggle.check_wheels_fit(folder, python="3.12", torch="2.12.0+cu128")
    assert "Python" not in str(e.value).splitlines()[1]
    assert "--python 3.12 --torch-version 2.12.0 arc-ttft-wheels" in str(e.value)
    kaggle.check_wheels_fit(folder, python="3.12", torch="2.11.1+cu128")


def test_wheels_mismatch_command_keeps_the_extras(tmp_path):
    names = ["arc_ttft-0.1.0-py3-none-any.whl"]
    no_vllm = _wheels(tmp_path / "w1", names, _target("3.12", requirements=None, vllm=False))
    with pytest.raises(kaggle.WheelsMismatchError) as e:
        kaggle.check_wheels_fit(no_vllm, python="3.13", torch="2.11.0")
    assert "bash scripts/build_wheels.sh --no-vllm --python 3.13 --torch-version 2.11.0 w1" in (
        str(e.value)
    )
    with_torch = _wheels(tmp_path / "w2", names, _target("3.12", None, requirements="mine.txt"))
    with pytest.raises(kaggle.WheelsMismatchError) as e:
        kaggle.check_wheels_fit(with_torch, python="3.13", torch="2.11.0")
    assert str(e.value).endswith(
        "bash scripts/build_wheels.sh --python 3.13 --with-torch w2 mine.txt"
    )


def test_wheels_without_target_file_checked_by_their_tags(tmp_path):
    """No wheels-target.json (a folder built by hand): the CPython tags tell."""
    folder = _wheels(
        tmp_path / "my-wheels",
        [
            "arc_ttft-0.1.0-py3-none-any.whl",
            "fake_compiled-1.0-cp312-cp312-manylinux_2_28_x86_64.whl",
            "fake_abi3-0.2-cp39-abi3-manylinux_2_17_x86_64.whl",  # any Python >= 3.9
            "numpy-2.3.0-cp312-cp312-manylinux_2_28_x86_64.whl",  # installed: pip keeps it
            "fake_both-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
            "fake_both-1.0-cp312-cp312-manylinux_2_28_x86_64.whl",
        ],
    )
    with pytest.raises(kaggle.WheelsMismatchError) as e:
        kaggle.check_wheels_fit(folder, python="3.11", torch="2.11.0+cu128")
    msg = str(e.value)
    assert "(the wheels' tags)" in msg
    assert "fake_compiled: only cp312 wheels (Python 3.12), the kernel runs Python 3.11" in msg
    assert "numpy" not in msg and "fake_abi3" not in msg and "fake_both" not in msg
    assert msg.endswith(
        "bash scripts/build_wheels.sh --python 3.11 --torch-version 2.11.0 my-wheels"
    )
    kaggle.check_wheels_fit(folder, python="3.12", torch="2.11.0+cu128")  # fits: no error


def test_wheels_command_in_the_error_runs(tmp_path):
    """The command the error prints is one build_wheels.sh takes, for the kernel's Python."""
    folder = _wheels(tmp_path / "arc-ttft-wheels", ["x-1.0-py3-none-any.whl"], _target("3.12"))
    with pytest.raises(kaggle.WheelsMismatchError) as e:
        kaggle.check_wheels_fit(folder, python="3.11", torch="2.4.1+cu121")
    command = shlex.split(str(e.value).splitlines()[-1])
    assert command[:2] == ["bash", "scripts/build_wheels.sh"]
    done = _build_wheels("--dry-run", *command[2:-1], str(tmp_path / command[-1]))
    assert done.returncode == 0, done.stderr
    cmd = _pip_line(done.stdout, "download")
    assert cmd[cmd.index("--python-version") + 1] == "3.11"
    assert "torch==2.4.1+preinstalled" in done.stdout


def test_bad_wheels_target_names_the_file(tmp_path):
    folder = _wheels(tmp_path / "w", ["x-1.0-py3-none-any.whl"])
    (folder / kaggle.WHEELS_TARGET).write_text("{not json")
    with pytest.raises(ValueError, match="wheels-target.json: not JSON"):
        kaggle.check_wheels_fit(folder)


def test_wheels_folder_found_deeper(bare_kaggle):
    """A dataset mounted below the input root (datasets/<owner>/<slug>) is still found."""
    inputs = bare_kaggle / "input"
    (inputs / "notes-wheels").mkdir()  # no .whl: skipped
    deep = _wheels(inputs / "datasets" / "me" / "arc-ttft-wheels", ["x-1.0-py3-none-any.whl"])
    assert kaggle.find_wheels_dir() == deep
    top = _wheels(inputs / "my-wheels", ["x-1.0-py3-none-any.whl"])
    assert kaggle.find_wheels_dir() == top  # the shallowest first


# ---------------------------------------------------------------------------------------
# scripts/build_wheels.sh (offline: dry runs, and real runs on a fake package index)
# ---------------------------------------------------------------------------------------

BUILD_WHEELS = Path(__file__).resolve().parent.parent / "scripts" / "build_wheels.sh"


def _build_wheels(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "WHEELS_"))}
    full = {**base, "PIP_CONFIG_FILE": os.devnull, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        ["bash", str(BUILD_WHEELS), *args], capture_output=True, text=True, env=full, timeout=120
    )


def _pip_line(out: str, command: str) -> list[str]:
    return next(shlex.split(line) for line in out.splitlines() if f"-m pip {command}" in line)


def test_build_wheels_dry_run_targets_kaggle_without_torch(tmp_path):
    out = tmp_path / "wheels"
    done = _build_wheels("--dry-run", str(out))
    assert done.returncode == 0, done.stderr
    assert not out.exists()  # a dry run creates nothing
    cmd = _pip_line(done.stdout, "download")
    assert cmd[cmd.index("--python-version") + 1] == "3.12"  # Kaggle's image
    assert "--only-binary=:all:" in cmd
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert platforms[0] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in platforms
    assert "manylinux_2_17_x86_64" in platforms  # pip matches manylinux_2_X tags literally
    # torch: a stand-in for the target's torch while resolving, never a download
    assert "torch==2.11.0+preinstalled" in done.stdout and "-c" in cmd
    assert "torch: not downloaded" in done.stdout
    # vLLM (requirements-gpu.txt) by default, and the target recorded for the notebook
    assert cmd[-2:] == ["-r", "requirements-gpu.txt"]
    target = _dry_run_target(done.stdout)
    assert (target["python"], target["torch"], target["with_torch"]) == ("3.12", "2.11.0", False)
    assert (target["requirements"], target["vllm"]) == ("requirements-gpu.txt", True)


def _dry_run_target(out: str) -> dict:
    line = next(x for x in out.splitlines() if "wheels-target.json: " in x)
    return json.loads(line.split("wheels-target.json: ", 1)[1])


def test_build_wheels_no_vllm(tmp_path):
    done = _build_wheels("--dry-run", "--no-vllm", str(tmp_path / "w"))
    assert done.returncode == 0, done.stderr
    cmd = _pip_line(done.stdout, "download")
    assert "-r" not in cmd and cmd[-1].endswith(".whl")  # the package alone
    assert "extras: none (--no-vllm)" in done.stdout
    target = _dry_run_target(done.stdout)
    assert (target["requirements"], target["vllm"]) == (None, False)
    # torch.__version__ as Kaggle prints it: the local label goes, the stand-in adds its own.
    done = _build_wheels("--dry-run", "--torch-version", "2.11.0+cu128", str(tmp_path / "w"))
    assert "torch==2.11.0+preinstalled" in done.stdout
    assert _dry_run_target(done.stdout)["torch"] == "2.11.0"


def test_build_wheels_dry_run_target_arguments(tmp_path):
    args = ["--dry-run", "--python", "3.10", "--platform", "manylinux2014_x86_64"]
    done = _build_wheels(*args, "--with-torch", str(tmp_path / "w"), "requirements-gpu.txt")
    assert done.returncode == 0, done.stderr
    cmd = _pip_line(done.stdout, "download")
    assert cmd[cmd.index("--python-version") + 1] == "3.10"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"] == ["manylinux2014_x86_64"]
    assert "-c" not in cmd and "preinstalled" not in done.stdout  # --with-torch: the real one
    assert cmd[-2:] == ["-r", "requirements-gpu.txt"]
    env = {"WHEELS_PYTHON": "3.12", "WHEELS_TORCH": "2.6.0"}
    done = _build_wheels("--dry-run", str(tmp_path / "w"), env=env)
    assert "--python-version 3.12" in done.stdout and "torch==2.6.0+preinstalled" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--python", "3"], "give the target's X.Y"),
        (["--bogus"], "unknown option --bogus"),
        (["a", "b", "c"], "at most OUT_DIR and REQUIREMENTS"),
        (["out", "no-such-requirements.txt"], "not found"),
        (["--no-vllm", "out", "requirements-gpu.txt"], "leave --no-vllm out"),
        (["--torch-version", "latest"], "give the target's torch"),
    ],
)
def test_build_wheels_bad_arguments(args, message):
    done = _build_wheels("--dry-run", *args)
    assert done.returncode == 2 and message in done.stderr


def _fake_wheel(
    folder: Path, name: str, version: str, requires=(), tag="py3-none-any", python=None
) -> Path:
    """A metadata-only wheel: enough for pip to resolve, download and install it.
    ``python``: its Requires-Python (transformers 5.24 says >=3.11)."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += f"Requires-Python: {python}\n" if python else ""
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    path = folder / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", meta)
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def fake_index(tmp_path):
    """A package index folder shaped like PyPI's: torch pulls CUDA libraries, numpy has a
    wheel per Python, matplotlib only manylinux_2_28 ones, and transformers needs a Python
    newer than some kernels (>=3.12 here, as 5.24 needs 3.11 where Kaggle had 3.10)."""
    index = tmp_path / "index"
    _fake_wheel(index, "nvidia-cublas", "13.0", [], "py3-none-manylinux_2_27_x86_64")
    _fake_wheel(index, "peft", "0.17.0", ["torch>=1.13", "accelerate"])
    _fake_wheel(index, "accelerate", "1.0.0", ["torch>=2.0.0", "numpy"])
    for py in ("cp311", "cp312", "cp313", "cp314"):
        plat = f"{py}-{py}-manylinux_2_28_x86_64"
        _fake_wheel(index, "torch", "2.14.0", ["nvidia-cublas>=13"], plat)
        _fake_wheel(index, "numpy", "2.0.0", [], f"{py}-{py}-manylinux2014_x86_64")
        _fake_wheel(index, "matplotlib", "3.9.0", ["numpy"], plat)
    _fake_wheel(index, "transformers", "5.24.0", ["numpy"], python=">=3.12")
    package = _fake_wheel(
        tmp_path / "pkg", "arc-ttft", "0.1.0", ["torch>=2.6", "peft", "matplotlib", "transformers"]
    )
    return index, package


def _offline_build(index: Path, package: Path, out: Path, *args: str):
    """build_wheels.sh on the fake index, without vLLM (the fake index has none)."""
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index)}  # never the network
    done = _build_wheels("--package", str(package), "--no-vllm", *args, str(out), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(p.name.split("-")[0] for p in out.glob("*.whl"))


def test_build_wheels_leaves_torch_out_by_default(tmp_path, fake_index):
    index, package = fake_index
    names = _offline_build(index, package, tmp_path / "w")
    assert names == ["accelerate", "arc_ttft", "matplotlib", "numpy", "peft", "transformers"]
    assert list((tmp_path / "w").glob("numpy-*cp312*"))  # Kaggle's Python by default
    assert not list((tmp_path / "w").glob("numpy-*cp311*"))  # only the target's Python
    assert (tmp_path / "w" / "requirements.txt").read_text() == "arc-ttft\n"
    # What the folder was built for: the notebook checks it against the kernel.
    target = kaggle.wheels_target(tmp_path / "w")
    assert (target["python"], target["torch"], target["with_torch"]) == ("3.12", "2.11.0", False)
    assert (target["requirements"], target["vllm"]) == (None, False)
    kaggle.check_wheels_fit(tmp_path / "w", python="3.12", torch="2.11.0+cu128")
    with pytest.raises(kaggle.WheelsMismatchError, match="--python 3.11 --torch-version 2.11.0"):
        kaggle.check_wheels_fit(tmp_path / "w", python="3.11", torch="2.11.0+cu128")
    names = _offline_build(index, package, tmp_path / "t", "--with-torch")
    assert "torch" in names and "nvidia_cublas" in names
    assert kaggle.wheels_target(tmp_path / "t")["torch"] is None
    # A dependency that needs a newer Python than the target fails the build, by name,
    # instead of shipping a folder the kernel cannot install from.
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index)}
    args = ("--package", str(package), "--no-vllm", "--python", "3.11", str(tmp_path / "o"))
    done = _build_wheels(*args, env=env)
    assert done.returncode != 0 and "transformers" in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_offline_install_keeps_the_preinstalled_torch(tmp_path, fake_index):
    """On 'Kaggle' (a fresh venv with torch 2.11.0), the notebook's two steps: the package
    alone (--no-deps, as the notebook's first install), then the library's install from a
    folder holding torch 2.14: what the package lacks comes in, torch stays."""
    index, _ = fake_index  # its package needs transformers for Python >= 3.12: not this one's
    package = _fake_wheel(tmp_path / "p", "arc-ttft", "0.1.0", ["torch>=2.6", "peft", "matplotlib"])
    _offline_build(index, package, tmp_path / "w", "--with-torch", "--python", RUNNING)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    pre = _fake_wheel(tmp_path / "pre", "torch", "2.11.0")
    pip = [python, "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check"]
    subprocess.run([*pip, str(pre)], check=True, env=env)
    (whl,) = (tmp_path / "w").glob("arc_ttft-*.whl")
    subprocess.run([*pip, "--no-deps", str(whl)], check=True, env=env)
    cmd = kaggle.install_offline_wheels(tmp_path / "w", dry_run=True)
    subprocess.run([python, *cmd[1:]], check=True, env=env)
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, env=env
    )
    versions = {p["name"]: p["version"] for p in json.loads(listed.stdout)}
    assert versions["torch"] == "2.11.0"
    assert versions["arc-ttft"] == "0.1.0" and versions["peft"] == "0.17.0"
    assert "nvidia-cublas" not in versions
