"""Answers on held-out generated tasks, per family, with and without TTT (arc-nano on CPU).

    python scripts/bench_learning.py                      # base vs default TTT, sides 2-4
    python scripts/bench_learning.py --arm lr1e-3 --set learning_rate=1e-3 --set ttt_steps=64
    python scripts/bench_learning.py --max-size 7 --min-size 3 \
        --families flip_h,flip_v,transpose,rot180

Each arm is `arc-ttft run` (pipeline.run) on the same seeded set, all arms one `arc-ttft
sweep` on Ray (`--address` for a cluster, `--shards` jobs per arm); each arm's result is
appended to benchmarks/learning.jsonl and the tables in benchmarks/learning.md are rebuilt
from every record. Run it alone on the machine: it is CPU-bound.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from arc_ttft.research import learning


def parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE (a `arc-ttft run` field)")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arms", default="base,ttt", help=f"named arms: {', '.join(learning.ARMS)}")
    ap.add_argument(
        "--arm",
        default=None,
        help="run only this arm, named so and made of the --set values (instead of --arms)",
    )
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE run field (repeat)")
    ap.add_argument("--model", default=learning.HARNESS_DEFAULTS["model"])
    ap.add_argument("--n-tasks", type=int, default=40)
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--min-size", type=int, default=2)
    ap.add_argument("--max-size", type=int, default=4)
    ap.add_argument("--families", default=None, help="comma separated (default: all)")
    ap.add_argument("--work", default="runs/learning", help="generated tasks and run outputs")
    ap.add_argument("--shards", type=int, default=1, help="jobs per arm (the sweep's shards)")
    ap.add_argument("--address", default=None, help="Ray cluster (default: Ray starts here)")
    ap.add_argument("--record", default="benchmarks/learning.jsonl")
    ap.add_argument("--markdown", default="benchmarks/learning.md")
    args = ap.parse_args(argv)

    held_out = learning.HeldOutSet(
        args.n_tasks,
        args.seed,
        args.min_size,
        args.max_size,
        args.families.split(",") if args.families else None,
    )
    extra = parse_set(args.set)
    arms: list[tuple[str, dict]] = []
    if args.arm:
        arms.append((args.arm, extra))
        extra = {}
    elif args.arms:
        for name in args.arms.split(","):
            if name not in learning.ARMS:
                raise SystemExit(
                    f"--arms: unknown arm {name!r} (known: {', '.join(learning.ARMS)})"
                )
            arms.append((name, {**learning.ARMS[name], **extra}))
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    results = learning.run_arms(
        arms, held_out, args.work, {"model": args.model}, address=args.address, shards=args.shards
    )
    for result in results:
        result.command = command
        learning.append_record(result, args.record)
        print(result.line(), flush=True)
    learning.write_markdown(learning.read_records(args.record), args.markdown)
    print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
