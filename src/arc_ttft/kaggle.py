"""Kaggle specifics for the submit notebook: competition files, the attached model, the GPU
check and offline wheels.

Kaggle runs the notebook without internet. The competition data sits somewhere under
``/kaggle/input`` (``arc-prize-2025/`` last year; the folder is renamed every year, so the
test file is found by name), the model is an attached input under ``/kaggle/input``,
outputs go to ``/kaggle/working/`` (size-limited: bulky scratch goes to ``/tmp``), and
extra packages come from an attached dataset of wheels (``scripts/build_wheels.sh``),
checked against the kernel's Python and torch before pip runs.
Nothing here ever touches the network: pip always runs with ``--no-index``.

Everything is found relative to :data:`KAGGLE_ROOT` so that tests can point it at a fake
folder.

Over 500 lines: the notebook's start (finding files, the kernel's report, the wheels'
fit and install) is one sequence with one fake-/kaggle test set; each step its section.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from arc_ttft import config as C
from arc_ttft import models

KAGGLE_ROOT = Path("/kaggle")

# Per-task adapters go here on Kaggle: /kaggle/working is size-limited.
KAGGLE_SCRATCH = "/tmp/arc-ttft"

# The competition's test file: its name stays, its folder is renamed every year.
CHALLENGES_FILE = "arc-agi_test_challenges.json"

# How deep find_challenges and find_wheels_dir look under /kaggle/input (Kaggle Models
# nest four levels: <model>/<framework>/<variation>/<version>).
_SEARCH_DEPTH = 6

# Defaults of the submit notebook away from Kaggle (config field names).
LOCAL_DEFAULTS = {"model": "tiny", "challenges": "arc1-eval", "output": "runs/notebook"}

# The requirements a wheels folder asks pip for (written by scripts/build_wheels.sh);
# without this file, just the package (its dependencies resolve from the folder).
WHEELS_REQUIREMENTS = "requirements.txt"

# What a wheels folder was built for (written by scripts/build_wheels.sh): Python X.Y and
# the torch its dependencies were resolved against.
WHEELS_TARGET = "wheels-target.json"

# build_wheels.sh's default extras (vLLM); --no-vllm builds without them.
_DEFAULT_WHEELS_REQUIREMENTS = "requirements-gpu.txt"


def on_kaggle() -> bool:
    """True inside a Kaggle notebook (``/kaggle/input`` exists)."""
    return (KAGGLE_ROOT / "input").is_dir()


def _walk(root: Path, depth: int = _SEARCH_DEPTH):
    """os.walk over ``root``, sorted, at most ``depth`` levels deep; nothing when absent."""
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).relative_to(root).parts) >= depth:
            dirnames.clear()
        dirnames.sort()
        yield Path(dirpath), filenames


def _competition_order(path: Path, inputs: Path) -> tuple[int, float, str]:
    """Newest competition last: the largest year (20XX) in the folders above the file, then
    the modification time, then the path (a fixed order)."""
    folders = path.relative_to(inputs).parts[:-1]
    years = [int(y) for part in folders for y in re.findall(r"(?<!\d)20\d\d(?!\d)", part)]
    return max(years, default=0), path.stat().st_mtime, str(path)


def find_challenges(inputs: Path | None = None) -> Path | None:
    """The competition's test challenges: a file named :data:`CHALLENGES_FILE` anywhere
    under ``inputs`` (default ``/kaggle/input``), at most six levels deep, or None.

    The competition folder is renamed every year (``arc-prize-2024``, ``arc-prize-2025``,
    ...), so only the file name is trusted. With several, the newest competition wins: the
    largest year in its folder names (``arc-prize-2026`` over ``arc-prize-2025``), else
    the newest file.
    """
    inputs = inputs if inputs is not None else KAGGLE_ROOT / "input"
    found = [
        folder / CHALLENGES_FILE for folder, files in _walk(inputs) if CHALLENGES_FILE in files
    ]
    if not found:
        return None
    return max(found, key=lambda p: _competition_order(p, inputs))


def kaggle_defaults() -> dict[str, str | None]:
    """Config defaults on Kaggle: ``challenges`` (:func:`find_challenges`, None when there
    is none), ``output`` (``/kaggle/working``) and ``scratch_dir`` (:data:`KAGGLE_SCRATCH`).
    Empty dict elsewhere. The model is not here: see :func:`find_attached_model`, looked
    up only when no model is given."""
    if not on_kaggle():
        return {}
    challenges = find_challenges()
    return {
        "challenges": None if challenges is None else str(challenges),
        "output": str(KAGGLE_ROOT / "working"),
        "scratch_dir": KAGGLE_SCRATCH,
    }


# ---------------------------------------------------------------------------------------
# The attached model
# ---------------------------------------------------------------------------------------


def _model_key(rel: Path) -> Path:
    """The versions of one Kaggle Model (<model>/<framework>/<variation>/<version>) are one
    model: drop the version."""
    if len(rel.parts) == 4 and rel.parts[3].isdigit():
        return rel.parent
    return rel


def find_attached_model(inputs: Path | None = None) -> Path:
    """The model attached to the notebook: a folder under ``inputs`` (default
    ``/kaggle/input``) holding config.json and *.safetensors.

    One candidate (the versions of a Kaggle Model count as one; the newest wins): that one.
    Several: the only one named like a registry model (``arc-ttft models``). Raises
    ConfigError when there is none, or several and no single registry match, listing what
    was seen under ``inputs``.
    """
    inputs = inputs if inputs is not None else KAGGLE_ROOT / "input"
    groups: dict[Path, list[Path]] = {}
    for rel in models.kaggle_model_folders(inputs):
        if any((inputs / rel).glob("*.safetensors")):
            groups.setdefault(_model_key(rel), []).append(rel)
    if len(groups) > 1:
        named = {key: rels for key, rels in groups.items() if models.folder_candidate(key)}
        groups = named if len(named) == 1 else groups
    if len(groups) == 1:
        (rels,) = groups.values()
        newest = max(rels, key=lambda r: int(r.name) if r.name.isdigit() else -1)
        return inputs / newest
    seen = models.kaggle_inputs_seen([inputs])
    if not groups:
        problem = (
            f"model: no model attached: no folder under {inputs} holds config.json + "
            f"*.safetensors (seen: {seen}); attach one (Add Input -> Models, e.g. "
            "Qwen2.5-0.5B-Instruct) or set the model parameter"
        )
    else:
        names = ", ".join(str(k) for k in sorted(groups))
        problem = (
            f"model: several models attached under {inputs} ({names}); set the model "
            "parameter to one of these folders (or a registry name)"
        )
    raise C.ConfigError([problem])


# ---------------------------------------------------------------------------------------
# The GPU
# ---------------------------------------------------------------------------------------


def _nvidia_smi() -> str:
    """nvidia-smi's output (driver and CUDA version), or why there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "not found (no GPU attached to this session)"
    try:
        done = subprocess.run([exe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"failed ({type(e).__name__}: {e})"
    text = (done.stdout + done.stderr).strip()
    return "\n".join(text.splitlines()[:12]) or f"no output (exit {done.returncode})"


def _gpu_query() -> list[dict[str, str]] | str:
    """One dict per GPU from nvidia-smi (name, driver, memory), or why there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "nvidia-smi not found"
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        done = subprocess.run(
            [exe, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed ({type(e).__name__}: {e})"
    if done.returncode != 0:
        why = (done.stdout + done.stderr).strip().splitlines()[:1] or ["no output"]
        return f"nvidia-smi failed (exit {done.returncode}: {why[0]})"
    gpus = []
    for line in done.stdout.strip().splitlines():
        name, driver, memory = ([*line.split(", "), "?", "?"])[:3]
        gpus.append({"name": name.strip(), "driver": driver.strip(), "memory": memory.strip()})
    return gpus


def _version(dist: str) -> str | None:
    """The installed version of a distribution, or None (no import: nothing loads)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """What this kernel runs: ``python`` (X.Y.Z), ``python_tag`` (cpXY), ``torch``,
    ``torch_cuda`` (torch.version.cuda), ``cuda_available``, ``gpus`` (names), ``driver``
    (from nvidia-smi, or why there is none) and the versions of the packages the run
    uses (``packages``; None when not installed). Never raises: missing torch or
    nvidia-smi are reported as such. Imports torch when it is installed."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "python_tag": f"cp{sys.version_info.major}{sys.version_info.minor}",
        "executable": sys.executable,
        "torch": None,
        "torch_cuda": None,
        "cuda_available": False,
        "gpus": [],
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an old driver warns here; check_accelerator says why
            info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    smi = _gpu_query()
    if isinstance(smi, str):
        info["driver"] = smi
    else:
        info["driver"] = ", ".join(sorted({g["driver"] for g in smi})) or "no GPU listed"
        if not info["gpus"]:  # torch sees none: nvidia-smi's list still says what is there
            info["gpus"] = [g["name"] for g in smi]
        info["gpu_memory"] = [g["memory"] for g in smi]
    names = ("transformers", "peft", "accelerate", "vllm", "bitsandbytes", "arc-ttft")
    info["packages"] = {name: _version(name) for name in names}
    return info


def environment_report(info: dict[str, Any] | None = None) -> str:
    """:func:`environment` as lines to print: the first thing to read when the wheels or
    the GPU do not fit (``scripts/build_wheels.sh --python X.Y --torch-version V`` takes
    the Python and torch shown here)."""
    info = info if info is not None else environment()
    gpus = info["gpus"]
    if gpus:
        counts: dict[str, int] = {}
        for name in gpus:
            counts[name] = counts.get(name, 0) + 1
        shown = ", ".join(f"{n} x {name}" for name, n in counts.items())
        if info.get("gpu_memory"):
            shown += ", " + "/".join(sorted(set(info["gpu_memory"]))) + " each"
    else:
        shown = "none"
    packages = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["packages"].items())
    return "\n".join(
        [
            f"python: {info['python']} ({info['python_tag']}, {info['executable']})",
            f"torch: {info['torch'] or 'not installed'}, torch.version.cuda: "
            f"{info['torch_cuda']}, CUDA available: {info['cuda_available']}",
            f"driver: {info['driver']}",
            f"gpus: {len(gpus)} ({shown})",
            f"packages: {packages}",
        ]
    )


def check_accelerator(allow_cpu: bool = False) -> str:
    """One line on the GPUs torch sees; RuntimeError when it sees none.

    On Kaggle a run without CUDA would fall back to the CPU and end hours later with
    placeholder answers, so it stops here with what was found (torch and its CUDA build,
    CUDA warnings, nvidia-smi) and the fix. ``allow_cpu=True`` returns a warning line
    instead (for testing the notebook on a CPU session).
    """
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()  # warns when the driver is too old
    if available:
        n = torch.cuda.device_count()
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
        return f"GPU: {n} x ({names}), torch {torch.__version__}, CUDA {torch.version.cuda}"
    found = [
        f"torch {torch.__version__}, torch.version.cuda = {torch.version.cuda}, "
        "torch.cuda.is_available() = False",
        *(f"warning: {w.message}" for w in caught),
        "nvidia-smi: " + _nvidia_smi(),
    ]
    if allow_cpu:
        return "no GPU, running on the CPU (allow_cpu=True): " + "; ".join(found)
    fix = [
        "no GPU in the session: Settings -> Accelerator -> a GPU (T4 x2 or L4 x4);",
        "torch.version.cuda None: a CPU build of torch replaced Kaggle's; rebuild the wheels "
        "without torch (scripts/build_wheels.sh leaves it out by default);",
        "nvidia-smi works but CUDA does not: the driver is too old for this torch's CUDA "
        "(nvidia-smi's 'CUDA Version' must be >= torch.version.cuda); use Kaggle's "
        "preinstalled torch, or wheels built for the image's CUDA;",
        "to test on the CPU anyway, set allow_cpu = True.",
    ]
    raise RuntimeError(
        "no CUDA GPU usable: the run would end with placeholder answers.\nfound:\n"
        + "\n".join(f"  {line}" for line in found)
        + "\nfix:\n"
        + "\n".join(f"  - {line}" for line in fix)
    )


# ---------------------------------------------------------------------------------------
# Offline wheels
# ---------------------------------------------------------------------------------------


def find_wheels_dir() -> Path | None:
    """The first folder named ``*wheels*`` holding ``.whl`` files under ``/kaggle/input``
    (shallowest first, at most six levels deep), or None."""
    inputs = KAGGLE_ROOT / "input"
    hits = [
        folder
        for folder, files in _walk(inputs)
        if folder != inputs and "wheels" in folder.name and any(f.endswith(".whl") for f in files)
    ]
    return min(hits, key=lambda d: (len(d.parts), str(d)), default=None)


class WheelsMismatchError(RuntimeError):
    """The attached wheels were built for another Python or torch than the kernel's."""


def wheels_target(folder: str | Path) -> dict[str, Any] | None:
    """What ``folder`` was built for (its :data:`WHEELS_TARGET`, written by
    scripts/build_wheels.sh: ``python``, ``torch``, ``with_torch``, ``requirements``, ...),
    or None for a folder without one. Raises ValueError naming the file when it is not
    a JSON object."""
    path = Path(folder) / WHEELS_TARGET
    if not path.is_file():
        return None
    try:
        target = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not JSON ({e}); rebuild the folder with scripts/build_wheels.sh"
        ) from e
    if not isinstance(target, dict):
        raise ValueError(f"{path}: not a JSON object; rebuild it with scripts/build_wheels.sh")
    return target


def _major_minor(version: str) -> tuple[int, ...]:
    """(2, 11) for "2.11.0+cu128"."""
    return tuple(int(x) for x in re.findall(r"\d+", version)[:2])


def _wheel_tags(name: str) -> tuple[str, str, str] | None:
    """(distribution, python tag, abi tag) of a wheel file name, or None."""
    parts = name[: -len(".whl")].split("-")
    if len(parts) < 5:
        return None
    return parts[0], parts[-3], parts[-2]


def _python_misfits(folder: Path, python: str) -> dict[str, list[str]]:
    """Packages of ``folder`` pip could need but cannot install on Python ``python``
    (X.Y): only CPython wheels of another version, and not installed already (an installed
    one stays: pip installs only what is missing). Maps cpXY -> distributions."""
    running = _major_minor(python)
    fits: dict[str, bool] = {}
    tags: dict[str, set[str]] = {}
    for whl in sorted(folder.glob("*.whl")):
        parsed = _wheel_tags(whl.name)
        if parsed is None:
            continue
        dist, py_tags, abi = parsed
        versions = [t for t in py_tags.split(".") if re.fullmatch(r"cp\d{2,3}", t)]
        if not versions:  # py3, py2.py3: any Python
            fits[dist] = True
            continue
        for tag in versions:
            wheel_py = (int(tag[2]), int(tag[3:]))
            ok = wheel_py <= running if abi == "abi3" else wheel_py == running
            fits[dist] = fits.get(dist, False) or ok
            tags.setdefault(dist, set()).add(tag)
    misfits: dict[str, list[str]] = {}
    for dist, ok in sorted(fits.items()):
        if not ok and _version(dist) is None:
            for tag in sorted(tags[dist]):
                misfits.setdefault(tag, []).append(dist)
    return misfits


def build_wheels_command(
    folder: str | Path, python: str, torch: str | None, target: dict[str, Any] | None = None
) -> str:
    """The scripts/build_wheels.sh command that builds ``folder`` again for Python
    ``python`` (X.Y) and the installed ``torch`` (None: not installed, so download it),
    keeping the extras ``target`` (its :data:`WHEELS_TARGET`) recorded."""
    parts = ["bash scripts/build_wheels.sh", "--python", ".".join(python.split(".")[:2])]
    if torch is None or (target or {}).get("with_torch"):
        parts.append("--with-torch")
    else:
        parts += ["--torch-version", torch.split("+")[0]]  # the stand-in adds its own label
    wanted = (target or {}).get("requirements", _DEFAULT_WHEELS_REQUIREMENTS)
    parts.append(shlex.quote(Path(folder).name))
    if not wanted:
        parts.insert(1, "--no-vllm")
    elif wanted != _DEFAULT_WHEELS_REQUIREMENTS:
        parts.append(shlex.quote(str(wanted)))
    return " ".join(parts)


def check_wheels_fit(
    folder: str | Path, python: str | None = None, torch: str | None = None
) -> None:
    """Stop before pip when the wheels in ``folder`` do not fit this kernel.

    ``python`` (X.Y) and ``torch`` default to the running kernel's (torch read from its
    metadata: nothing is imported). With a :data:`WHEELS_TARGET` the check is exact: the
    folder's Python must be the kernel's, and the torch its dependencies were resolved
    against must have the installed torch's major.minor (vLLM and its kernels are built
    for one torch). Without one, the wheels' CPython tags (cp312, ...) tell: a package
    that only has wheels for another Python, and that the kernel lacks, would fail pip.
    Raises :class:`WheelsMismatchError` with the ``bash scripts/build_wheels.sh ...``
    command that builds a folder for this kernel.
    """
    folder = Path(folder)
    python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    torch = torch if torch is not None else _version("torch")
    target = wheels_target(folder)
    problems = []
    if target is not None:
        built_py = str(target.get("python", "?"))
        if _major_minor(built_py) != _major_minor(python):
            problems.append(f"built for Python {built_py}, the kernel runs Python {python}")
        built_torch = target.get("torch")
        if built_torch and torch and _major_minor(built_torch) != _major_minor(torch):
            problems.append(f"resolved against torch {built_torch}, the kernel has torch {torch}")
    else:
        for tag, dists in _python_misfits(folder, python).items():
            shown = ", ".join(dists[:6]) + (f" and {len(dists) - 6} more" if len(dists) > 6 else "")
            problems.append(
                f"{shown}: only {tag} wheels (Python {tag[2]}.{tag[3:]}), the kernel runs "
                f"Python {python}"
            )
    if not problems:
        return
    source = WHEELS_TARGET if target is not None else "the wheels' tags"
    raise WheelsMismatchError(
        f"wheels_dir: {folder} does not fit this kernel ({source}):\n"
        + "\n".join(f"  - {p}" for p in problems)
        + "\npip would fail, or install packages that do not load. Build the folder for "
        "this kernel (on Linux x86_64 with internet) and upload it as a new version of the "
        "dataset:\n  " + build_wheels_command(folder, python, torch, target)
    )


def install_offline_wheels(
    wheels_dir: str | Path | None = None, *, dry_run: bool = False
) -> list[str] | None:
    """Install the package and whatever it still lacks from ``wheels_dir`` (default:
    :func:`find_wheels_dir`), offline.

    pip resolves ``arc-ttft`` (or the folder's ``requirements.txt``, written by
    ``scripts/build_wheels.sh``) with ``--no-index --find-links`` and
    ``--upgrade-strategy only-if-needed``: packages already installed that satisfy the
    requirements stay, so a torch wheel in the folder never replaces Kaggle's working CUDA
    torch. Returns the pip command that ran (or would run, with ``dry_run``), or None when
    there is no wheels folder (the normal case away from Kaggle). A given ``wheels_dir``
    that does not exist or holds no wheels raises FileNotFoundError; a folder built for
    another Python or torch raises :class:`WheelsMismatchError` (:func:`check_wheels_fit`),
    dry run or not.
    """
    if wheels_dir is None:
        folder = find_wheels_dir()
        if folder is None:
            return None
    else:
        folder = Path(wheels_dir)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"wheels_dir: {folder} is not a folder; attach the wheels dataset "
                "(scripts/build_wheels.sh) or leave wheels_dir unset"
            )
    if not any(folder.glob("*.whl")):
        raise FileNotFoundError(
            f"wheels_dir: {folder} holds no .whl files; build them with scripts/build_wheels.sh"
        )
    check_wheels_fit(folder)  # before pip: its own error would not say how to fix it
    wanted = folder / WHEELS_REQUIREMENTS
    what = ["-r", str(wanted)] if wanted.is_file() else ["arc-ttft"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",  # never the network: Kaggle has none
        "--disable-pip-version-check",
        "--find-links",
        str(folder),
        "--upgrade-strategy",
        "only-if-needed",  # keep what is installed and good enough (Kaggle's torch)
        *what,
    ]
    if not dry_run:
        subprocess.run(cmd, check=True)
    return cmd


# ---------------------------------------------------------------------------------------
# The notebook's config
# ---------------------------------------------------------------------------------------

# Notebook parameter names that differ from the config field they set.
_RENAMED = {"output_dir": "output"}


def submit_config(params: dict[str, Any], overrides: dict[str, Any] | None = None) -> C.RunConfig:
    """The submit notebook's RunConfig from its parameters.

    ``params``: the notebook's named parameters (config field names, plus ``output_dir``
    for ``output``; the notebook also passes ``started_at``, the time of its first cell, so
    the budget counts from the notebook's start like Kaggle's). None means "the default".
    ``overrides``: any other RunConfig field.

    Defaults on Kaggle: the attached model (:func:`find_attached_model`, with the registry's
    max_seq_len when it is named like a registry model), the competition challenges,
    ``/kaggle/working`` and scratch in ``/tmp``. Elsewhere: ``tiny``, ``arc1-eval`` and
    ``runs/notebook``. Raises ConfigError for unknown names, a name given both ways, or
    Kaggle without competition data or model.
    """
    overrides = {_RENAMED.get(k, k): v for k, v in (overrides or {}).items()}
    given = {_RENAMED.get(k, k): v for k, v in params.items() if v is not None}
    twice = sorted(set(given) & set(overrides))
    if twice:
        raise C.ConfigError(
            [f"{k}: given as a parameter and in overrides; keep one of them" for k in twice]
        )
    kaggle = on_kaggle()
    defaults = kaggle_defaults() if kaggle else dict(LOCAL_DEFAULTS)
    values = {**defaults, **given, **overrides}
    if values.get("challenges") is None:
        inputs = KAGGLE_ROOT / "input"
        seen = models.kaggle_inputs_seen([inputs])
        raise C.ConfigError(
            [
                f"challenges: no competition file found: no {CHALLENGES_FILE} under {inputs} "
                f"(seen: {seen}); attach the competition data (Add Input -> Competitions) "
                "or pass -p challenges PATH"
            ]
        )
    if kaggle and values.get("model") is None:
        inputs = KAGGLE_ROOT / "input"
        found = find_attached_model(inputs)
        values["model"] = str(found)
        # A folder path alone gets min(context, 4096) tokens; named, it gets the registry's.
        cand = models.folder_candidate(found.relative_to(inputs))
        if cand is not None and values.get("max_seq_len") is None:
            values["max_seq_len"] = cand.default_seq_len
    return C.validate(C.from_flat(C.RunConfig, values))


__all__ = [
    "CHALLENGES_FILE",
    "KAGGLE_ROOT",
    "KAGGLE_SCRATCH",
    "WHEELS_TARGET",
    "WheelsMismatchError",
    "build_wheels_command",
    "check_accelerator",
    "check_wheels_fit",
    "environment",
    "environment_report",
    "find_attached_model",
    "find_challenges",
    "find_wheels_dir",
    "install_offline_wheels",
    "kaggle_defaults",
    "on_kaggle",
    "submit_config",
    "wheels_target",
]
