"""Write a seeded synthetic ARC task set in Kaggle's format (challenges + solutions).

    python scripts/make_synthetic.py --n-tasks 1000 --seed 0 --min-size 3 --max-size 7 \
        --out data/synth --prefix synth [--families rot90,flip_h,colour_map]

Prints the two paths written; load them with
``arc_ttft.tasks.load_tasks(challenges_path, solutions_path)``.
"""

from __future__ import annotations

import argparse

from arc_ttft.training.synthetic import DEFAULT_FAMILIES, SPECS, generate, write_kaggle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-tasks", type=int, default=100, help="number of tasks (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
    ap.add_argument("--min-size", type=int, default=3, help="smallest input side (default 3)")
    ap.add_argument("--max-size", type=int, default=10, help="largest input side (default 10)")
    ap.add_argument(
        "--families",
        default=None,
        help="comma-separated families, or all (default: arc-nano's 14: all but copy and "
        f"the ARC families). Known: {', '.join(SPECS)}",
    )
    ap.add_argument("--out", default="synthetic", help="output folder (default ./synthetic)")
    ap.add_argument("--prefix", default="synthetic", help="file name prefix (default synthetic)")
    args = ap.parse_args(argv)
    try:
        challenges, solutions = generate(
            args.n_tasks,
            args.seed,
            families=args.families or list(DEFAULT_FAMILIES),
            min_size=args.min_size,
            max_size=args.max_size,
        )
    except ValueError as e:
        ap.error(str(e))
    for path in write_kaggle(challenges, solutions, args.out, args.prefix):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
