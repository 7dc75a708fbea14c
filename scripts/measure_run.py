"""Run a command and report its wall time and the peak memory of its whole process tree.

    python scripts/measure_run.py -- arc-ttft run --workers 2 ...

Workers are separate processes, so the peak of one process (``/usr/bin/time``) says
little: this samples the summed RSS of the command and all its descendants every
``--every`` seconds. Last line: ``wall: S s, peak tree RSS: G GiB (max processes: N)``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(summed RSS in bytes, number of processes) of ``proc`` and its descendants."""
    total, n = 0, 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
            n += 1
        except psutil.Error:  # ended between listing and reading
            continue
    return total, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command after --")
    t0 = time.monotonic()
    child = subprocess.Popen(cmd)
    proc = psutil.Process(child.pid)
    peak, most = 0, 0
    while child.poll() is None:
        rss, n = tree_rss(proc)
        peak, most = max(peak, rss), max(most, n)
        time.sleep(args.every)
    wall = time.monotonic() - t0
    print(f"wall: {wall:.1f} s, peak tree RSS: {peak / 2**30:.2f} GiB (max processes: {most})")
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
