"""`arc-ttft` command line (also `python -m arc_ttft`).

Thin: each subcommand builds a config from flags and calls one library function.
Flags come from the config dataclasses (arc_ttft.config), so the CLI, the notebooks
and the library share one set of names. A command is a function ``cmd_x(args) -> int``
registered in ``COMMANDS`` with a function adding its flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from arc_ttft import config as C

# name -> (help, add_flags(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help: str, add_flags: Callable[[argparse.ArgumentParser], None]):
    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, add_flags, fn)
        return fn

    return register


def _data_flags(p: argparse.ArgumentParser) -> None:
    C.add_arguments(p, C.DataConfig)


# ---------------------------------------------------------------------------------------
# tasks / submission: validate, score
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# encoding: tokens
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# models / ttt: models, ttt, candidates, lora-rank-sweep, bench
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# inference: predict
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# pipeline: run, dry-run, recall
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arc-ttft", description="ARC-AGI with small LLMs and test-time fine-tuning."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add_flags, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        add_flags(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _, _, run = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except C.ConfigError as e:
        print(f"arc-ttft {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
