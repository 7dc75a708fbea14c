"""arc_ttft.kaggle on a fake /kaggle: the attached model and the GPU check.

(The competition files, wheels and submit_config basics are in tests/test_notebooks.py.)
Never a real /kaggle: KAGGLE_ROOT points at a temporary folder.
"""

from __future__ import annotations

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
    assert cmd[cmd.index("--python-version") + 1] == "3.11"
    assert "--only-binary=:all:" in cmd
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert platforms[0] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in platforms
    assert "manylinux_2_17_x86_64" in platforms  # pip matches manylinux_2_X tags literally
    # torch: a stand-in for the target's torch while resolving, never a download
    assert "torch==2.4.0+preinstalled" in done.stdout and "-c" in cmd
    assert "torch: not downloaded" in done.stdout


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
    ],
)
def test_build_wheels_bad_arguments(args, message):
    done = _build_wheels("--dry-run", *args)
    assert done.returncode == 2 and message in done.stderr


def _fake_wheel(folder: Path, name: str, version: str, requires=(), tag="py3-none-any") -> Path:
    """A metadata-only wheel: enough for pip to resolve, download and install it."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
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
    wheel per Python, matplotlib only a manylinux_2_28 one."""
    index = tmp_path / "index"
    _fake_wheel(
        index, "torch", "2.14.0", ["nvidia-cublas>=13"], "cp311-cp311-manylinux_2_28_x86_64"
    )
    _fake_wheel(index, "nvidia-cublas", "13.0", [], "py3-none-manylinux_2_27_x86_64")
    _fake_wheel(index, "peft", "0.17.0", ["torch>=1.13", "accelerate"])
    _fake_wheel(index, "accelerate", "1.0.0", ["torch>=2.0.0", "numpy"])
    for py in ("cp311", "cp312"):
        _fake_wheel(index, "numpy", "2.0.0", [], f"{py}-{py}-manylinux2014_x86_64")
    _fake_wheel(index, "matplotlib", "3.9.0", ["numpy"], "cp311-cp311-manylinux_2_28_x86_64")
    package = _fake_wheel(
        tmp_path / "pkg", "arc-ttft", "0.1.0", ["torch>=2.4", "peft", "matplotlib"]
    )
    return index, package


def _offline_build(index: Path, package: Path, out: Path, *args: str):
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index)}  # never the network
    done = _build_wheels("--package", str(package), *args, str(out), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(p.name.split("-")[0] for p in out.glob("*.whl"))


def test_build_wheels_leaves_torch_out_by_default(tmp_path, fake_index):
    index, package = fake_index
    names = _offline_build(index, package, tmp_path / "w")
    assert names == ["accelerate", "arc_ttft", "matplotlib", "numpy", "peft"]
    assert not list((tmp_path / "w").glob("numpy-*cp312*"))  # only the target's Python
    assert (tmp_path / "w" / "requirements.txt").read_text() == "arc-ttft\n"
    names = _offline_build(index, package, tmp_path / "t", "--with-torch")
    assert "torch" in names and "nvidia_cublas" in names


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_offline_install_keeps_the_preinstalled_torch(tmp_path, fake_index):
    """On 'Kaggle' (a fresh venv with torch 2.5.1), a folder holding torch 2.14 installs
    arc-ttft and what it lacks, and leaves torch alone."""
    index, package = fake_index
    _offline_build(index, package, tmp_path / "w", "--with-torch")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    pre = _fake_wheel(tmp_path / "pre", "torch", "2.5.1")
    pip = [python, "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check"]
    subprocess.run([*pip, str(pre)], check=True, env=env)
    cmd = kaggle.install_offline_wheels(tmp_path / "w", dry_run=True)
    subprocess.run([python, *cmd[1:]], check=True, env=env)
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, env=env
    )
    versions = {p["name"]: p["version"] for p in json.loads(listed.stdout)}
    assert versions["torch"] == "2.5.1"
    assert versions["arc-ttft"] == "0.1.0" and versions["peft"] == "0.17.0"
    assert "nvidia-cublas" not in versions
