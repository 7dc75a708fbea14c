"""Kaggle specifics for the submit notebook: where the competition files are, offline wheels.

Kaggle runs the notebook without internet. The competition data sits under
``/kaggle/input/arc-prize-20XX/``, outputs go to ``/kaggle/working/``, and extra packages
come from an attached dataset of wheels (``scripts/build_wheels.sh``). Nothing here ever
touches the network: pip always runs with ``--no-index``.

Everything is found relative to :data:`KAGGLE_ROOT` so that tests can point it at a fake
folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from arc_ttft import config as C

KAGGLE_ROOT = Path("/kaggle")

# Newest competition first: the 2025 test set when both are attached.
COMPETITION_CHALLENGES = (
    "input/arc-prize-2025/arc-agi_test_challenges.json",
    "input/arc-prize-2024/arc-agi_test_challenges.json",
)

# Defaults of the submit notebook away from Kaggle (config field names).
LOCAL_DEFAULTS = {"challenges": "arc1-eval", "output": "runs/notebook"}


def on_kaggle() -> bool:
    """True inside a Kaggle notebook (``/kaggle/input`` exists)."""
    return (KAGGLE_ROOT / "input").is_dir()


def kaggle_defaults() -> dict[str, str | None]:
    """Config defaults on Kaggle: ``challenges`` (the first competition test file that
    exists, else None) and ``output`` (``/kaggle/working``). Empty dict elsewhere."""
    if not on_kaggle():
        return {}
    found = [KAGGLE_ROOT / rel for rel in COMPETITION_CHALLENGES]
    challenges = next((str(p) for p in found if p.is_file()), None)
    return {"challenges": challenges, "output": str(KAGGLE_ROOT / "working")}


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
    """pip-install every wheel of ``wheels_dir`` (default: :func:`find_wheels_dir`) with
    ``--no-index --find-links``, so dependencies also resolve from that folder only.

    Returns the pip command that ran (or would run, with ``dry_run``), or None when there
    is no wheels folder (nothing to do: the normal case away from Kaggle). A given
    ``wheels_dir`` that does not exist or holds no wheels raises FileNotFoundError.
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
    wheels = sorted(str(w) for w in folder.glob("*.whl"))
    if not wheels:
        raise FileNotFoundError(
            f"wheels_dir: {folder} holds no .whl files; build them with scripts/build_wheels.sh"
        )
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",  # never the network: Kaggle has none, and we want exactly these
        "--disable-pip-version-check",
        "--find-links",
        str(folder),
        *wheels,
    ]
    if not dry_run:
        subprocess.run(cmd, check=True)
    return cmd


# Notebook parameter names that differ from the config field they set.
_RENAMED = {"output_dir": "output"}


def submit_config(params: dict[str, Any], overrides: dict[str, Any] | None = None) -> C.RunConfig:
    """The submit notebook's RunConfig from its parameters.

    ``params``: the notebook's named parameters (config field names, plus ``output_dir``
    for ``output``); None means "the default". ``overrides``: any other RunConfig field.
    Defaults: on Kaggle the competition challenges and ``/kaggle/working``; elsewhere
    ``arc1-eval`` and ``runs/notebook``. Raises ConfigError for unknown names, a name given
    both ways, or Kaggle without competition data.
    """
    overrides = {_RENAMED.get(k, k): v for k, v in (overrides or {}).items()}
    given = {_RENAMED.get(k, k): v for k, v in params.items() if v is not None}
    twice = sorted(set(given) & set(overrides))
    if twice:
        raise C.ConfigError(
            [f"{k}: given as a parameter and in overrides; keep one of them" for k in twice]
        )
    defaults = kaggle_defaults() if on_kaggle() else dict(LOCAL_DEFAULTS)
    values = {**defaults, **given, **overrides}
    if values.get("challenges") is None:
        tried = ", ".join(str(KAGGLE_ROOT / rel) for rel in COMPETITION_CHALLENGES)
        raise C.ConfigError(
            [
                f"challenges: no competition file found (tried {tried}); attach the "
                "competition data or pass -p challenges PATH"
            ]
        )
    return C.validate(C.from_flat(C.RunConfig, values))


__all__ = [
    "KAGGLE_ROOT",
    "find_wheels_dir",
    "install_offline_wheels",
    "kaggle_defaults",
    "on_kaggle",
    "submit_config",
]
