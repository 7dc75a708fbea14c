"""The whole pipeline on CPU with the tiny offline model: same as `arc-ttft dry-run`.

    python scripts/dry_run.py [--output DIR] [--max-tasks 5] [--budget-minutes 3] [...]

Any `arc-ttft run` flag works and overrides the dry-run defaults.
"""

from arc_ttft.cli import main

if __name__ == "__main__":
    import sys

    raise SystemExit(main(["dry-run", *sys.argv[1:]]))
