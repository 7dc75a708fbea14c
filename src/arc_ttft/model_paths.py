"""Finding a model's weights offline: ``resolve_model_path`` and its Kaggle / hub helpers.

Where a model comes from (``resolve_model_path``), in order:

1. an explicit folder (a path that exists, holding ``config.json``);
2. ``tiny``: built once, offline, by ``ensure_tiny_model``; ``arc-nano``: the small
   trained base shipped in the package (``BUNDLED_MODELS``);
3. Kaggle inputs (``/kaggle/input/**``): a folder named like the model (short name or the
   hub id's last part, case-insensitive) holding ``config.json``; failing that, its
   instruct variant (``Qwen2-0.5B`` finds ``qwen2-0.5b-instruct``);
4. the local Hugging Face hub cache (``models--org--name/snapshots/*``; HF_HUB_CACHE and
   HF_HOME are respected);
5. the hub itself, only when online (``HF_HUB_OFFLINE`` unset).

Nothing touches the network with ``HF_HUB_OFFLINE=1``. No torch at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from arc_ttft.registry import BUNDLED_MODELS, REGISTRY, Candidate, find_candidate
from arc_ttft.rope import rope_changes
from arc_ttft.tiny import ensure_tiny_model

KAGGLE_INPUT = "/kaggle/input"
_KAGGLE_MAX_DEPTH = 6  # /kaggle/input/<model>/<framework>/<variation>/<version>/config.json


class ModelNotFoundError(FileNotFoundError):
    """No weights for a model anywhere we looked; ``looked`` lists each place and why."""

    def __init__(self, name: str, looked: list[str], fix: str):
        self.name = name
        self.looked = looked
        self.fix = fix
        lines = "\n".join(f"  - {p}" for p in looked)
        super().__init__(f"model {name!r} not found. Looked in:\n{lines}\nfix: {fix}")


def _offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join("~", ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _wanted_names(name: str, cand: Candidate | None) -> set[str]:
    """Folder names that count as an exact match for ``name`` (lower case): the name, its
    last path part, and for a registry entry its short name and hub id's last part."""
    names = {name.lower(), name.rsplit("/", 1)[-1].lower()}
    if cand is not None:
        names |= {cand.name.lower(), cand.hub_id.rsplit("/", 1)[-1].lower()}
    return names


def _variant_names(wanted: set[str]) -> set[str]:
    """The instruct-tuned variant's names for base names: ``Qwen2-0.5B`` also finds an
    attached ``qwen2-0.5b-instruct``, ``Gemma-3-1B`` a ``gemma-3-1b-it`` (Google's suffix;
    people attach the tuned model and type the base name). Used only when no folder
    matches exactly."""
    bases = [n for n in wanted if n and not n.endswith(("-instruct", "-it"))]
    return {f"{n}-{suffix}" for n in bases for suffix in ("instruct", "it")}


def _folder_names(rel: Path) -> set[str]:
    """Names a Kaggle folder answers to: each component, and '<model>-<variation>' for the
    Kaggle Models layout <model>/<framework>/<variation>/<version>."""
    parts = [p.lower() for p in rel.parts]
    names = set(parts)
    if len(parts) >= 3 and parts[1] in ("transformers", "pytorch", "other"):
        names.add(f"{parts[0]}-{parts[2]}")
    return names


def kaggle_model_folders(root: Path) -> list[Path]:
    """Folders under ``root`` holding a config.json (paths relative to ``root``, sorted),
    at most six levels deep; [] when ``root`` is not a folder."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if len(rel.parts) >= _KAGGLE_MAX_DEPTH:
            dirnames.clear()
        dirnames.sort()
        if "config.json" in filenames and rel.parts:
            found.append(rel)
    return found


def folder_candidate(rel: Path) -> Candidate | None:
    """The registry entry a Kaggle folder (path relative to its input root) is named after
    exactly, or None."""
    names = _folder_names(rel)
    for cand in REGISTRY.values():
        if names & _wanted_names(cand.name, cand):
            return cand
    return None


def _version_order(path: Path) -> list[tuple[int, int, str]]:
    """Sort key where numeric parts compare as numbers: Kaggle Models version 10 > 9."""
    return [(1, int(p), "") if p.isdigit() else (0, 0, p) for p in path.parts]


def _list(items: list[str], most: int = 12) -> str:
    if not items:
        return "none"
    more = f", ... and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def kaggle_inputs_seen(roots: list[Path]) -> str:
    """What is attached under ``roots``, for error messages: the model folders (config.json;
    marked when they hold no *.safetensors) and the other top-level inputs."""
    out = []
    for root in roots:
        if not root.is_dir():
            out.append(f"{root} does not exist")
            continue
        folders = kaggle_model_folders(root)
        shown = [
            str(rel) + ("" if any((root / rel).glob("*.safetensors")) else " (no *.safetensors)")
            for rel in folders
        ]
        tops = {rel.parts[0] for rel in folders}
        others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in tops)
        out.append(f"{root}: model folders {_list(shown)}; other inputs {_list(others)}")
    return "; ".join(out) or "no Kaggle input folder"


def find_in_kaggle(name: str, roots: list[Path]) -> Path | None:
    """A folder with config.json under ``roots`` whose name matches ``name``.

    An exact name wins; failing that, the name's instruct variant (``Qwen2-0.5B`` finds
    ``qwen2-0.5b-instruct``). Among matches, folders with safetensors first, then the
    newest Kaggle Models version.
    """
    wanted = _wanted_names(name, find_candidate(name))
    variants = _variant_names(wanted)
    exact: list[Path] = []
    variant: list[Path] = []
    for root in roots:
        for rel in kaggle_model_folders(root):
            names = _folder_names(rel)
            if names & wanted:
                exact.append(root / rel)
            elif names & variants:
                variant.append(root / rel)
    hits = exact or variant
    if not hits:
        return None
    with_st = [p for p in hits if any(p.glob("*.safetensors"))]
    return max(with_st or hits, key=_version_order)


def find_in_hub_cache(hub_id: str, cache: Path | None = None) -> Path | None:
    """The snapshot folder of ``hub_id`` in the hub cache (refs/main first), or None."""
    cache = cache or hub_cache_dir()
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap
    snaps = [p.parent for p in (repo / "snapshots").glob("*/config.json")]
    return max(snaps, key=lambda p: p.stat().st_mtime) if snaps else None


def _download(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py"]
    return Path(snapshot_download(hub_id, allow_patterns=patterns))


def resolve_model_path(
    name_or_path: str,
    *,
    search_roots: list[str | Path] | None = None,
    download: bool | None = None,
) -> Path:
    """The local folder of a model (config.json + weights); see the module docstring for
    the order. ``search_roots`` replaces ``/kaggle/input``; ``download=False`` never asks the
    hub (None: ask only when HF_HUB_OFFLINE is unset). Raises ModelNotFoundError."""
    looked: list[str] = []
    path = Path(name_or_path).expanduser()
    if path.exists():
        if (path / "config.json").is_file():
            return path
        looked.append(f"explicit path {path}: exists but holds no config.json")
    else:
        looked.append(f"explicit path {path}: does not exist")

    if name_or_path.strip().lower() == "tiny":
        return ensure_tiny_model()
    bundled = BUNDLED_MODELS.get(name_or_path.strip().lower())
    if bundled is not None:
        if (bundled / "config.json").is_file():
            return bundled
        looked.append(f"bundled model {bundled}: no config.json (fix: reinstall the package)")

    cand = find_candidate(name_or_path)
    roots = [Path(r) for r in (search_roots if search_roots is not None else [KAGGLE_INPUT])]
    found = find_in_kaggle(name_or_path, roots)
    if found is not None:
        return found
    wanted = _wanted_names(name_or_path, cand)
    names = " / ".join(sorted(wanted) + sorted(_variant_names(wanted)))
    looked.append(
        f"Kaggle inputs {', '.join(map(str, roots))}: no folder named {names} with a "
        f"config.json (seen: {kaggle_inputs_seen(roots)})"
    )

    hub_id = cand.hub_id if cand else (name_or_path if name_or_path.count("/") == 1 else None)
    if hub_id:
        found = find_in_hub_cache(hub_id)
        if found is not None:
            return found
        repo = hub_cache_dir() / ("models--" + hub_id.replace("/", "--"))
        looked.append(f"hub cache {repo}: no snapshot with a config.json")
        online = (not _offline()) if download is None else download
        if online:
            try:
                return _download(hub_id)
            except Exception as e:  # network, auth, missing repo: report, don't crash here
                looked.append(f"hub download of {hub_id}: failed ({type(e).__name__}: {e})")
        else:
            looked.append(f"hub download of {hub_id}: skipped (offline: HF_HUB_OFFLINE=1)")
    else:
        looked.append(
            "hub cache / hub: skipped, not a registry name or hub id "
            f"(known names: {', '.join(REGISTRY)})"
        )
    label = cand.name if cand else name_or_path
    fix = (
        f"on Kaggle, attach the model as an input (Add Input -> search {label!r}: a dataset or "
        "Kaggle Model holding config.json + *.safetensors); or pass --model /path/to/folder; "
        "or run once online (HF_HUB_OFFLINE unset) to fill the hub cache"
    )
    raise ModelNotFoundError(name_or_path, looked, fix)


# ---------------------------------------------------------------------------------------
# What the resolved models look like: the registry listing, RoPE overrides for vLLM
# ---------------------------------------------------------------------------------------


def registry_table(where: bool = False) -> str:
    """The registry as an aligned text table; ``where`` adds the local folder (no download)."""
    head = ["name", "hub id", "params M", "max context", "default seq len"]
    rows = []
    for c in REGISTRY.values():
        row = [c.name, c.hub_id, f"{c.params_m:.1f}", str(c.max_context), str(c.default_seq_len)]
        if where:
            try:
                row.append(str(resolve_model_path(c.name, download=False)))
            except ModelNotFoundError:
                row.append("-")
        rows.append(row)
    if where:
        head.append("local folder")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 3, 4}

    def fmt(r: list[str]) -> str:
        cells = [
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))
        ]
        return "  ".join(cells).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), sep, *map(fmt, rows)])


def _architecture(name_or_path: str) -> dict:
    """config.json of a folder, else the registry's config, else the resolved model's."""
    folder = Path(name_or_path).expanduser()
    if not (folder / "config.json").is_file():
        cand = find_candidate(name_or_path)
        if cand is not None:
            return dict(cand.config)
        folder = resolve_model_path(name_or_path, download=False)
    return json.loads((folder / "config.json").read_text())


def rope_overrides(model_cfg, model_path: str | Path | None = None) -> dict | None:
    """``hf_overrides`` for vLLM's ``LLM(...)`` that apply ``model_cfg.rope_scaling`` to
    the model in ``model_path`` (default: ``model_cfg.model``); None when there is nothing
    to add (no scaling asked, or the folder's config.json carries it already).

    Named for the transformers that runs in this process (vLLM's): ``rope_parameters``
    on 5.x, a flat ``rope_scaling`` on 4.x. Raises ValueError like ``rope_changes``.
    """
    spec = getattr(model_cfg, "rope_scaling", None)
    if not spec:
        return None
    changes = rope_changes(_architecture(str(model_path or model_cfg.model)), spec)
    if not changes:
        return None
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return changes
    rope = changes.pop("rope_parameters")
    flat = rope.get("full_attention", rope)  # 4.x Gemma 3 scales its global layers from this
    return {"rope_scaling": {k: v for k, v in flat.items() if k != "rope_theta"}, **changes}
