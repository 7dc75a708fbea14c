"""Thin entry point for the TTT speed benchmark (results and notes: ttt_speed.md).

    python benchmarks/ttt_speed.py [flags]   ==   arc-ttft bench ttt [flags]

Defaults: Qwen2-0.5B architecture with random weights, 1024 and 2048 tokens, 1 warm-up +
3 timed steps per configuration, baseline (the 2024 reference recipe) and ours alternating.
The last line printed is ``speedup: X.XXx tokens/s, memory: Y.YYx peak``.
"""

from __future__ import annotations

import sys

from arc_ttft.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "ttt", *sys.argv[1:]]))
