"""Per task: what a run without TTT answered, what a run with TTT answered, the votes.

    python scripts/compare_runs.py runs/base runs/ttt --challenges arc1-simple > ttt.md

Both runs must cover the same tasks (the same --challenges, --tasks, --max-tasks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from arc_ttft import report
from arc_ttft.tasks import load_tasks, select_tasks


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("base_dir", type=Path, help="the run without TTT (--ttt-steps 0)")
    p.add_argument("ttt_dir", type=Path, help="the run with TTT")
    p.add_argument("--challenges", required=True, help="the runs' --challenges")
    p.add_argument("--tasks", default=None, help="the runs' --tasks (comma separated ids)")
    p.add_argument("--max-tasks", type=int, default=None, help="the runs' --max-tasks")
    args = p.parse_args(argv)
    ids = args.tasks.split(",") if args.tasks else None
    tasks = select_tasks(load_tasks(args.challenges).tasks, ids, args.max_tasks)
    print(report.compare_runs(args.base_dir, args.ttt_dir, tasks), end="")


if __name__ == "__main__":
    main()
