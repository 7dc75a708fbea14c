"""Kaggle specifics for the submit notebook: competition files, the attached model, the GPU
check and offline wheels.

Kaggle runs the notebook without internet. The competition data sits under
``/kaggle/input/arc-prize-20XX/``, the model is an attached input under ``/kaggle/input``,
outputs go to ``/kaggle/working/`` (size-limited: bulky scratch goes to ``/tmp``), and
extra packages come from an attached dataset of wheels (``scripts/build_wheels.sh``).
Nothing here ever touches the network: pip always runs with ``--no-index``.

Everything is found relative to :data:`KAGGLE_ROOT` so that tests can point it at a fake
folder.
"""

from __future__ import annotations

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

# Newest competition first: the 2025 test set when both are attached.
COMPETITION_CHALLENGES = (
    "input/arc-prize-2025/arc-agi_test_challenges.json",
    "input/arc-prize-2024/arc-agi_test_challenges.json",
)

# Defaults of the submit notebook away from Kaggle (config field names).
LOCAL_DEFAULTS = {"model": "tiny", "challenges": "arc1-eval", "output": "runs/notebook"}

# The requirements a wheels folder asks pip for (written by scripts/build_wheels.sh);
# without this file, just the package (its dependencies resolve from the folder).
WHEELS_REQUIREMENTS = "requirements.txt"


def on_kaggle() -> bool:
    """True inside a Kaggle notebook (``/kaggle/input`` exists)."""
    return (KAGGLE_ROOT / "input").is_dir()


def kaggle_defaults() -> dict[str, str | None]:
    """Config defaults on Kaggle: ``challenges`` (the first competition test file that
    exists, else None), ``output`` (``/kaggle/working``) and ``scratch_dir``
    (:data:`KAGGLE_SCRATCH`). Empty dict elsewhere. The model is not here: see
    :func:`find_attached_model`, looked up only when no model is given."""
    if not on_kaggle():
        return {}
    found = [KAGGLE_ROOT / rel for rel in COMPETITION_CHALLENGES]
    challenges = next((str(p) for p in found if p.is_file()), None)
    return {
        "challenges": challenges,
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
    """The first ``/kaggle/input/*wheels*`` folder holding ``.whl`` files, or None."""
    inputs = KAGGLE_ROOT / "input"
    if not inputs.is_dir():
        return None
    for d in sorted(inputs.glob("*wheels*")):
        if d.is_dir() and any(d.glob("*.whl")):
            return d
    return None


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
    that does not exist or holds no wheels raises FileNotFoundError.
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
        tried = ", ".join(str(KAGGLE_ROOT / rel) for rel in COMPETITION_CHALLENGES)
        raise C.ConfigError(
            [
                f"challenges: no competition file found (tried {tried}); attach the "
                "competition data or pass -p challenges PATH"
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
    "KAGGLE_ROOT",
    "KAGGLE_SCRATCH",
    "check_accelerator",
    "find_attached_model",
    "find_wheels_dir",
    "install_offline_wheels",
    "kaggle_defaults",
    "on_kaggle",
    "submit_config",
]
