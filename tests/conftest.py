"""Shared test set-up: offline, everything written under a temporary folder."""

from __future__ import annotations

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="arc-ttft-tests-")
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": os.path.join(_TMP, "hf"),
    "ARC_TTFT_CACHE": os.environ.get("ARC_TTFT_CACHE", os.path.join(_TMP, "cache")),
    "MPLCONFIGDIR": os.path.join(_TMP, "mpl"),
    "IPYTHONDIR": os.path.join(_TMP, "ipython"),
    "JUPYTER_CONFIG_DIR": os.path.join(_TMP, "jupyter"),
    "JUPYTER_DATA_DIR": os.path.join(_TMP, "jupyter-data"),
    "TOKENIZERS_PARALLELISM": "false",
    "MPLBACKEND": "Agg",
}.items():
    os.environ.setdefault(_k, _v)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The README's command runs one pytest worker per core (`-n 2` in pyproject): one
    # torch thread each, or two workers oversubscribe the cores. Set before torch is
    # imported; the runs a test starts inherit it. Budget tests therefore plan at one
    # core's speed beside another test, as on a loaded CI machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The files that take most of the suite's time (`--durations`, one worker a core), longest
# first. `--dist loadfile` hands out whole files in collection order
# (`--no-loadscope-reorder`): started first, they run beside the many short files, and the
# two workers end together instead of one running a long file alone at the end.
LONGEST_FILES = (
    "test_pipeline_kaggle.py",  # a killed worker, the binding budget: ~190 s
    "test_notebooks.py",  # papermill: the data-mix sweep, the submit notebook: ~140 s
    "test_pipeline.py",  # killed mid-TTT, a short budget, two workers: ~90 s
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))
