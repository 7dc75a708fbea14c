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


def _validate_flags(p: argparse.ArgumentParser) -> None:
    _data_flags(p)
    p.add_argument("--submission", help="Also check this submission.json against the tasks.")


@command(
    "validate",
    "Check a task source (and optionally a submission); list every problem.",
    _validate_flags,
)
def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 with a one-line summary when valid, 1 with every problem otherwise."""
    from arc_ttft import submission as S
    from arc_ttft import tasks as T

    cfg = C.validate(C.from_namespace(C.DataConfig, args))
    problems: list[str] = []
    try:
        loaded = T.load_tasks(cfg.challenges, cfg.solutions, skip_invalid=cfg.skip_invalid)
        problems += [str(p) for p in loaded.problems]
        tasks = T.select_tasks(loaded.tasks, cfg.tasks or None, cfg.max_tasks)
    except T.TaskValidationError as e:
        problems += [str(p) for p in e.problems]
        tasks = None
    summary = ""
    if tasks is not None:
        n_test = sum(len(t.test) for t in tasks)
        known = sum(ex.output is not None for t in tasks for ex in t.test)
        outputs = "all outputs known" if known == n_test else f"{known}/{n_test} outputs known"
        sols = f", solutions {loaded.solutions}" if loaded.solutions else ""
        summary = f"{len(tasks)} tasks, {n_test} test inputs, {outputs} ({cfg.challenges}{sols})"
        if args.submission:
            try:
                problems += S.validate_submission(S.read_submission(args.submission), tasks)
                summary += f"; {args.submission}: complete"
            except ValueError as e:
                problems.append(str(e))
    if problems:
        print("\n".join(problems))
        print(f"invalid: {len(problems)} problem(s)")
        return 1
    print(f"valid: {summary}")
    return 0


def _score_flags(p: argparse.ArgumentParser) -> None:
    _data_flags(p)
    p.add_argument("--submission", required=True, help="The submission.json to score.")


@command(
    "score",
    "Score a submission (ARC Prize rule) against --solutions or the outputs of --challenges.",
    _score_flags,
)
def cmd_score(args: argparse.Namespace) -> int:
    """Per-task lines ``TASK_ID  solved/total``, then ``score: X.XXXX (S/T tasks)`` last."""
    from arc_ttft import submission as S
    from arc_ttft import tasks as T

    cfg = C.validate(C.from_namespace(C.DataConfig, args))
    try:
        sub = S.read_submission(args.submission)
        if hasattr(args, "challenges") or not cfg.solutions:
            loaded = T.load_tasks(cfg.challenges, cfg.solutions, skip_invalid=cfg.skip_invalid)
            for p in loaded.problems:
                print(f"warning: {p}", file=sys.stderr)
            tasks = T.select_tasks(loaded.tasks, cfg.tasks or None, cfg.max_tasks)
            problems = S.validate_submission(sub, tasks)
            result = S.score_submission(sub, tasks)
        else:  # solutions alone: the outputs are all scoring needs
            truth = T.load_solutions(cfg.solutions)
            ids = [i for i in truth if not cfg.tasks or i in cfg.tasks][: cfg.max_tasks]
            problems = [f"{i}: submission: missing" for i in ids if i not in sub]
            result = S.score_submission(sub, {i: truth[i] for i in ids})
    except T.TaskValidationError as e:
        print(str(e), file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"arc-ttft score: {e}", file=sys.stderr)
        return 1
    for p in problems[:20]:
        print(f"warning: {p} (counts as wrong)", file=sys.stderr)
    if len(problems) > 20:
        print(f"warning: ... {len(problems) - 20} more submission problems", file=sys.stderr)
    for tid, solved in result.per_task.items():
        print(f"{tid}  {sum(solved)}/{len(solved)}")
    print(S.format_score(result))
    return 0


# ---------------------------------------------------------------------------------------
# encoding: tokens
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# models / ttt: models, ttt, candidates, lora-rank-sweep, bench
# ---------------------------------------------------------------------------------------


def _models_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--where", action="store_true",
        help="Add a column with each model's local folder (Kaggle inputs, hub cache; never downloads).",
    )  # fmt: skip


@command("models", "List the candidate models (name, hub id, size, context).", _models_flags)
def cmd_models(args: argparse.Namespace) -> int:
    from arc_ttft import models

    print(models.registry_table(where=args.where))
    return 0


def _candidates_flags(p: argparse.ArgumentParser) -> None:
    from arc_ttft.bench import CandidatesConfig

    C.add_arguments(p, CandidatesConfig)


@command(
    "candidates",
    "Time the LoRA TTT step of candidate models at several lengths; project the test set.",
    _candidates_flags,
)
def cmd_candidates(args: argparse.Namespace) -> int:
    from arc_ttft import bench

    result = bench.run_candidates(C.from_namespace(bench.CandidatesConfig, args))
    print(result.markdown)
    print("written: " + ", ".join(result.paths.values()))
    return 0


def _rank_sweep_flags(p: argparse.ArgumentParser) -> None:
    from arc_ttft.bench import RankSweepConfig

    C.add_arguments(p, RankSweepConfig)


@command(
    "lora-rank-sweep",
    "Train and validation loss (held-out train pair) per LoRA rank; CSV + plot.",
    _rank_sweep_flags,
)
def cmd_lora_rank_sweep(args: argparse.Namespace) -> int:
    from arc_ttft import bench

    result = bench.run_rank_sweep(C.from_namespace(bench.RankSweepConfig, args))
    print(result.table)
    print("written: " + ", ".join(result.paths.values()))
    return 0


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
