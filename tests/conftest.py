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
