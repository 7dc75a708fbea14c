"""The run's event log: one JSON object per line in ``run.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class EventLog:
    """Append-only JSONL log. Every event gets ``t`` (unix seconds) and ``stage``.

    ``path=None`` keeps events in memory only (tests, library calls without an output dir).
    Lines are flushed at once so a killed run keeps everything it logged.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.events: list[dict[str, Any]] = []
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, stage: str, **fields: Any) -> dict[str, Any]:
        event = {"t": round(time.time(), 3), "stage": stage, **fields}
        self.events.append(event)
        if self.path:
            with self.path.open("a") as f:
                f.write(json.dumps(event, default=jsonable) + "\n")
        return event


def jsonable(x: Any, *, grid: bool = False) -> Any:
    """``json.dumps(default=jsonable)``: what JSON cannot write by itself.

    numpy arrays and scalars (and tensors) become lists and numbers, objects with
    ``to_dict`` their dict, anything else its ``str``. ``grid=True`` (submission files)
    is strict: arrays become lists of ints, numpy integers ints, anything else is a
    TypeError.
    """
    if grid:
        import numpy as np

        if isinstance(x, np.ndarray):
            return x.astype(int).tolist()
        if isinstance(x, np.integer):
            return int(x)
        raise TypeError(f"cannot write {type(x).__name__} into a submission")
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return str(x)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
