"""Shared test set-up: offline, everything written under a temporary folder."""

from __future__ import annotations

import fcntl
import glob
import os
import tempfile
import time

import pytest

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
    # One worker per core (README: pytest -n 2): one thread each, or torch in two workers
    # oversubscribes the cores. Set before torch is imported; subprocesses inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _alone_when_timed(request):
    """Under `pytest -n 2` a test marked `alone` (what it asserts depends on the machine's
    speed: a budget's plan, a timing) runs with no test beside it; the others share the
    cores as usual. Shared flock: normal tests; exclusive: `alone` tests, which first post
    a mark so that the other worker starts no new test while they wait."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:  # one process: every test is alone already
        yield
        return
    base = os.path.join(tempfile.gettempdir(), f"arc-ttft-alone-{run}")
    mark = f"{base}.wait.{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}"
    alone = request.node.get_closest_marker("alone") is not None
    with open(base + ".lock", "a") as lock:
        threads = None
        if alone:
            import torch

            open(mark, "a").close()
            fcntl.flock(lock, fcntl.LOCK_EX)
            # the whole machine, as in a run of one process (OMP_NUM_THREADS=1 above is
            # for sharing it): the binding budget's plan is priced at this speed
            threads = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count() or 1)
        else:
            while glob.glob(base + ".wait.*"):
                time.sleep(0.2)
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            if threads is not None:
                torch.set_num_threads(threads)
            if alone and os.path.exists(mark):
                os.remove(mark)
            fcntl.flock(lock, fcntl.LOCK_UN)
