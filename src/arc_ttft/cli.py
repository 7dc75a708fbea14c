"""`arc-ttft` command line (also `python -m arc_ttft`).

Thin: each subcommand builds a config from flags and calls one library function.
Flags come from the config dataclasses (arc_ttft.config), so the CLI, the notebooks
and the library share one set of names. A command is a function ``cmd_x(args) -> int``
registered in ``COMMANDS`` with a function adding its flags. The measuring commands
(``arc_ttft.research``) are reached by module name, as torchtune's CLI finds its recipes:
the library, this module included, never imports research code.

Over 500 lines: one thin function per subcommand (twelve of them), each only mapping flags
to one library call and printing its contract lines.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from arc_ttft import config as C
from arc_ttft import submission as S
from arc_ttft import tasks as T
from arc_ttft.training.config import FinetuneConfig

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


def _with_submission(help: str, required: bool = False) -> Callable:
    def add(p: argparse.ArgumentParser) -> None:
        _data_flags(p)
        p.add_argument("--submission", required=required, help=help)

    return add


def _load(cfg: C.DataConfig):
    """The tasks a DataConfig names: (LoadResult, the selected tasks)."""
    loaded = T.load_tasks(cfg.challenges, cfg.solutions, skip_invalid=cfg.skip_invalid)
    return loaded, T.select_tasks(loaded.tasks, cfg.tasks or None, cfg.max_tasks)


@command(
    "validate",
    "Check a task source (and optionally a submission); list every problem.",
    _with_submission("Also check this submission.json against the tasks."),
)
def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 with a one-line summary when valid, 1 with every problem otherwise."""
    cfg = C.validate(C.from_namespace(C.DataConfig, args))
    problems: list[str] = []
    try:
        loaded, tasks = _load(cfg)
        problems += [str(p) for p in loaded.problems]
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


@command(
    "score",
    "Score a submission (ARC Prize rule) against --solutions or the outputs of --challenges.",
    _with_submission("The submission.json to score.", required=True),
)
def cmd_score(args: argparse.Namespace) -> int:
    """Per-task lines ``TASK_ID  solved/total``, then ``score: X.XXXX (S/T tasks)`` last."""
    cfg = C.validate(C.from_namespace(C.DataConfig, args))
    try:
        sub = S.read_submission(args.submission)
        if hasattr(args, "challenges") or not cfg.solutions:
            loaded, tasks = _load(cfg)
            for p in loaded.problems:
                print(f"warning: {p}", file=sys.stderr)
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


def _tokens_flags(p: argparse.ArgumentParser) -> None:
    _data_flags(p)
    C.add_arguments(p, C.ModelConfig, only=["format", "max_seq_len"])
    p.add_argument(
        "--tokenizer",
        help="Tokenizer folder (transformers AutoTokenizer, local only); "
        "default: a Qwen2-like estimate (see scripts/qwen_tokenizer.py for the real one).",
    )


@command(
    "tokens",
    "Tokens per task (all train pairs + first test pair) in one grid format, and what fits.",
    _tokens_flags,
)
def cmd_tokens(args: argparse.Namespace) -> int:
    """Statistics lines, then ``median: N tokens, fit4096: P%, fit8192: Q%`` last."""
    from arc_ttft import encoding as E

    data = C.validate(C.from_namespace(C.DataConfig, args))
    model = C.validate(C.from_namespace(C.ModelConfig, args))
    try:
        fmt = E.get_format(model.format)
    except ValueError as e:
        raise C.ConfigError([str(e)]) from None
    tokenizer, tok_name = None, "Qwen2-like estimate (no --tokenizer)"
    if args.tokenizer:
        import os

        from transformers import AutoTokenizer

        if not os.path.isdir(args.tokenizer):
            raise C.ConfigError(
                [
                    f"tokenizer: {args.tokenizer!r} is not a folder; give a saved tokenizer "
                    "(e.g. python scripts/qwen_tokenizer.py --out DIR)"
                ]
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
        except (OSError, ValueError) as e:
            raise C.ConfigError([f"tokenizer: cannot load {args.tokenizer!r} ({e})"]) from None
        tok_name = args.tokenizer
    try:
        loaded, tasks = _load(data)
    except T.TaskValidationError as e:
        print(str(e), file=sys.stderr)
        return 1
    for p in loaded.problems:
        print(f"warning: {p}", file=sys.stderr)
    if not tasks:
        print("arc-ttft tokens: no tasks selected", file=sys.stderr)
        return 1
    lengths = [4096, 8192]
    if model.max_seq_len and model.max_seq_len not in lengths:
        lengths.append(model.max_seq_len)
    rep = E.token_report(tasks, fmt, tokenizer, lengths)
    med, lb_med = rep.percentile(50), rep.percentile(50, lower_bound=True)
    print(f"tasks: {len(tasks)} from {data.challenges}; format: {fmt.name}; tokenizer: {tok_name}")
    print(
        f"lower bound (cells + row ends): median {lb_med}, "
        f"p90 {rep.percentile(90, lower_bound=True)}, max {rep.percentile(100, lower_bound=True)}, "
        f"fit4096: {rep.fit(4096, lower_bound=True):.1f}%, "
        f"fit8192: {rep.fit(8192, lower_bound=True):.1f}%"
    )
    ratio = f" ({med / lb_med:.3f}x the lower bound)" if lb_med else ""
    p90, top = rep.percentile(90), rep.percentile(100)
    print(f"tokens per task: median {med}{ratio}, p90 {p90}, max {top}")
    for length in lengths:
        print(
            f"at {length}: fit {rep.fit(length):.1f}%, {rep.dropped[length]} tasks need train "
            f"pairs dropped, {rep.overflow[length]} do not fit even with one pair"
        )
    print(f"median: {med} tokens, fit4096: {rep.fit(4096):.1f}%, fit8192: {rep.fit(8192):.1f}%")
    return 0


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


def _ttt_flags(p: argparse.ArgumentParser) -> None:
    for group in (C.DataConfig, C.ModelConfig, C.TTTConfig):
        C.add_arguments(p, group)
    p.add_argument("--output", default="runs/adapters", help="Folder for one adapter per task.")


@command("ttt", "Train a LoRA adapter per task; report steps, seconds and loss.", _ttt_flags)
def cmd_ttt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from arc_ttft import ttt
    from arc_ttft.events import EventLog
    from arc_ttft.tasks import load_tasks, select_tasks

    data = C.validate(C.from_namespace(C.DataConfig, args))
    model = C.validate(C.from_namespace(C.ModelConfig, args))
    cfg = C.validate(C.from_namespace(C.TTTConfig, args))
    loaded = load_tasks(data.challenges, data.solutions, skip_invalid=data.skip_invalid)
    tasks = select_tasks(loaded.tasks, data.tasks or None, data.max_tasks)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    events = EventLog(out / "run.jsonl")
    results = ttt.run_ttt(tasks, model, cfg, out, events=events)
    print(f"{'task':<20} {'steps':>6} {'seconds':>8} {'s/step':>7} {'first':>7} {'final':>7}  stop")
    for r in results:
        first = f"{r.first_loss:.4f}" if r.first_loss is not None else "-"
        final = f"{r.final_loss:.4f}" if r.final_loss is not None else "-"
        sps = f"{r.seconds_per_step:.3f}" if r.seconds_per_step else "-"
        print(
            f"{r.task_id:<20} {r.steps:>6} {r.seconds:>8.2f} {sps:>7} {first:>7} {final:>7}  {r.stop_reason}"
        )
    print(f"adapters: {out}")
    return 0


def _flags_from(module: str, config: str) -> Callable[[argparse.ArgumentParser], None]:
    """Flags from a config class, its module imported only when the command is built."""
    return lambda p: C.add_arguments(p, getattr(importlib.import_module(module), config))


def _research_command(name: str, help: str, module: str, config: str, run: str, text: str):
    """A research command: flags from ``module.config``, then ``module.run(cfg)``; prints
    the result's ``text`` and a last line ``written: PATHS``."""

    def cmd(args: argparse.Namespace) -> int:
        mod = importlib.import_module(module)
        result = getattr(mod, run)(C.from_namespace(getattr(mod, config), args))
        print(getattr(result, text))
        print("written: " + ", ".join(result.paths.values()))
        return 0

    command(name, help, _flags_from(module, config))(cmd)


_research_command(
    "candidates",
    "Time the LoRA TTT step of candidate models at several lengths; project the test set.",
    "arc_ttft.research.candidates", "CandidatesConfig", "run_candidates", "markdown",
)  # fmt: skip
_research_command(
    "lora-rank-sweep",
    "Train and validation loss (held-out train pair) per LoRA rank; CSV + plot.",
    "arc_ttft.research.rank_sweep", "RankSweepConfig", "run_rank_sweep", "table",
)  # fmt: skip
_research_command(
    "sweep",
    "Arms x seeds x shards of `arc-ttft run` as Ray tasks (here, or on a cluster with "
    "--address); per-arm scores with a 95 percent interval over seeds.",
    "arc_ttft.research.sweep", "SweepConfig", "run_sweep", "markdown",
)  # fmt: skip


def _bench_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what", choices=["ttt"], help="ttt: the TTT step, ours vs the 2024 reference recipe."
    )
    _flags_from("arc_ttft.research.ttt_speed", "TTTSpeedConfig")(p)


@command(
    "bench",
    "Benchmarks. ttt: answer tokens/s, s/step and peak memory, ours vs the reference recipe.",
    _bench_flags,
)
def cmd_bench(args: argparse.Namespace) -> int:
    """Rows per length and configuration, a table, then ``speedup: X.XXx tokens/s, memory:
    Y.YYx peak`` (ours over baseline at the longest length) last."""
    ttt_speed = importlib.import_module("arc_ttft.research.ttt_speed")  # a recipe: by name

    return ttt_speed.main_bench(C.validate(C.from_namespace(ttt_speed.TTTSpeedConfig, args)))


@command(
    "finetune",
    "Train a base model on a data mix of ARC tasks (TTT's prompts and views); write a model "
    "folder for `arc-ttft run --model`.",
    lambda p: C.add_arguments(p, FinetuneConfig),
)
def cmd_finetune(args: argparse.Namespace) -> int:
    """Prints the data, then ``model: DIR`` (or ``adapter: DIR``) and a last line
    ``steps: N, final loss: X (stop)``. Data-parallel under torchrun."""
    from arc_ttft.training import finetune

    cfg = C.validate(C.from_namespace(FinetuneConfig, args))
    result = finetune.run(cfg)
    if result.model_dir is None and result.adapter_dir is None:
        return 0  # a data-parallel rank other than 0: rank 0 reports
    print(f"data: {','.join(cfg.data)}: {result.n_train_tasks} tasks, {result.n_samples} samples")
    if result.holdout_ids:
        print(f"held out: {len(result.holdout_ids)} tasks ({result.output / 'holdout.json'})")
    if result.model_dir is not None:
        print(f"model: {result.model_dir}  (arc-ttft run --model {result.model_dir})")
    if result.adapter_dir is not None:
        print(f"adapter: {result.adapter_dir}  (--adapter-mode continue --base-adapter ...)")
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "-"
    print(f"steps: {result.steps}, final loss: {loss} ({result.stop_reason})")
    return 0


# ---------------------------------------------------------------------------------------
# inference: predict
# ---------------------------------------------------------------------------------------


def _predict_flags(p: argparse.ArgumentParser) -> None:
    _data_flags(p)
    C.add_arguments(p, C.ModelConfig)
    C.add_arguments(p, C.InferConfig)
    C.add_arguments(p, C.TTTConfig, only=["ttt_transforms"])  # what the adapters saw
    p.add_argument(
        "--adapters",
        help="Folder with one LoRA adapter subfolder per task id (adapter_config.json + "
        "adapter_model.safetensors); tasks without one use the base model.",
    )
    p.add_argument("--output", required=True, help="Output folder (candidates/, submission.json).")
    p.add_argument("--seed", type=int, default=0, help="Seed for the views and sampling.")


@command(
    "predict",
    "Generate candidates over augmented views, vote/re-score, write submission.json.",
    _predict_flags,
)
def cmd_predict(args: argparse.Namespace) -> int:
    """Prints one line per task (candidates, attempt sources) and a summary (and the score
    when solutions are known); writes OUTPUT/candidates/<task>.json and submission.json."""
    import json
    import time
    from pathlib import Path

    from arc_ttft import infer, models, selection

    # One RunConfig, so the model's registered defaults apply as in `run`.
    cfg = C.validate(C.from_namespace(C.RunConfig, args))
    data, mcfg, icfg = cfg.data, cfg.model, cfg.infer
    loaded, tasks = _load(data)
    for p in loaded.problems:
        print(f"skipped: {p}", file=sys.stderr)
    adapters: dict[str, str | None] = {}
    if args.adapters:
        root = Path(args.adapters)
        if not root.is_dir():
            print(f"arc-ttft predict: --adapters {root}: not a folder", file=sys.stderr)
            return 2
        for t in tasks:
            sub = root / t.id
            adapters[t.id] = str(sub) if (sub / "adapter_config.json").is_file() else None
    out = Path(args.output)
    (out / "candidates").mkdir(parents=True, exist_ok=True)
    max_seq_len = models.resolve_max_seq_len(mcfg)
    cfg.ttt.seed = args.seed
    if adapters:
        from arc_ttft.infer.vllm import adapter_rank  # no vllm import: reads adapter_config.json

        ranks = [adapter_rank(a) for a in adapters.values() if a]
        cfg.ttt.lora_rank = max(ranks, default=cfg.ttt.lora_rank)
    t0 = time.monotonic()
    backend = infer.make_backend(cfg, device=models.default_device())
    try:
        sels = selection.predict_tasks(
            tasks, backend, backend.tokenizer, icfg, mcfg.format, adapters, max_seq_len,
            seed=args.seed, adapter_transforms=cfg.ttt.ttt_transforms,
        )  # fmt: skip
    finally:
        backend.close()
    answers = {}
    for t in tasks:
        answers[t.id] = [s.attempts(t, i) for i, s in enumerate(sels[t.id])]
        record = {
            "task_id": t.id,
            "adapter": adapters.get(t.id),
            "selections": [s.to_dict() for s in sels[t.id]],
        }
        (out / "candidates" / f"{t.id}.json").write_text(json.dumps(record, indent=1))
        counts = ",".join(str(len(s.candidates)) for s in sels[t.id])
        invalid = sum(s.invalid for s in sels[t.id])
        print(f"{t.id}: candidates {counts} invalid {invalid}")
    sub = S.build_submission(tasks, answers)
    S.write_submission(sub, out / "submission.json")
    print(
        f"predicted {len(tasks)} tasks with {backend.name} in {time.monotonic() - t0:.1f} s "
        f"-> {out / 'submission.json'}"
    )
    if all(ex.output is not None for t in tasks for ex in t.test):
        print(S.format_score(S.score_submission(sub, tasks)))
    return 0


# ---------------------------------------------------------------------------------------
# pipeline: run, dry-run, recall
# ---------------------------------------------------------------------------------------


def _run_flags(p: argparse.ArgumentParser) -> None:
    C.add_arguments(p, C.RunConfig)


# The dry run's embedded defaults: the bundled arc-nano2 model (its registered TTT
# settings apply) on 5 real ARC-AGI-1 tasks it never trained on (docs/real-arc.md):
# three it solves with TTT (a rotation, a scaling by 3, a colour map) and two it misses
# (a rotation and a transpose: 8 of 8 votes for one wrong grid), in 3 minutes.
DRY_RUN_TASKS = "3c9b0459,9172f3a0,b1948b0a,6150a2bd,74dd1130"
DRY_RUN_DEFAULTS = {
    "challenges": "arc1-simple",
    "tasks": DRY_RUN_TASKS,
    "model": "arc-nano2",
    "max_seq_len": 1024,
    "budget_minutes": 3.0,
    "safety_margin_minutes": 0.25,
    "views": 4,
    "rescore": 2,
    "backend": "hf",
    "output": "runs/dry-run",
}


def _run(cfg: C.RunConfig) -> int:
    from arc_ttft import pipeline

    result = pipeline.run(cfg)
    print(f"outputs: {result.output}")
    for name in ("submission.json", "summary.md", "report.html", "run.jsonl", "config.json"):
        print(f"  {result.output / name}")
    print(f"tasks: {result.n_tasks}, seconds: {result.seconds:.1f}")
    if result.faults:  # the run went on with fallbacks; say what failed
        print(f"faults: {len(result.faults)} (details in run.jsonl)")
        for f in result.faults:
            print(f"  {f}")
    if result.score is not None:
        print(result.score_line())
    return 0


@command("run", "The whole pipeline under the budget guard; writes submission.json.", _run_flags)
def cmd_run(args: argparse.Namespace) -> int:
    return _run(C.validate(C.from_namespace(C.RunConfig, args)))


@command(
    "dry-run",
    "The whole pipeline on this machine with the bundled arc-nano2 model: 5 real ARC tasks "
    "it never trained on (arc1-simple), 3 minutes.",
    _run_flags,
)
def cmd_dry_run(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if k in C.flat_fields(C.RunConfig)}
    return _run(C.validate(C.from_flat(C.RunConfig, {**DRY_RUN_DEFAULTS, **given})))


@command(
    "recall",
    "Train per task, then ask each demonstration through the test path, with and without "
    "the adapter (CPU preset: recall.RECALL_DEFAULTS).",
    _run_flags,
)
def cmd_recall(args: argparse.Namespace) -> int:
    recall = importlib.import_module("arc_ttft.research.recall")  # a recipe: by name

    given = {k: v for k, v in vars(args).items() if k in C.flat_fields(C.RunConfig)}
    cfg = C.validate(C.from_flat(C.RunConfig, {**recall.RECALL_DEFAULTS, **given}))
    result = recall.recall_from_config(cfg)
    for task_id, (hit, base, n) in result.per_task.items():
        print(f"{task_id}: {hit}/{n} with TTT, {base}/{n} without")
    print(result.line())
    return 0


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


def _quiet_library_warnings() -> None:
    """Deprecation chatter from transformers/torch internals says nothing to a user."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
    # bitsandbytes on CPU logs that an optional kernels package is missing; nf4 works
    # without it (docs/stack-facts.md), so the line only alarms.
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    _quiet_library_warnings()
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


def entry() -> None:
    """The ``arc-ttft`` console script: ``main``, then an exit that survives a call the
    budget abandoned (budget.exit_code)."""
    from arc_ttft import budget

    raise SystemExit(budget.exit_code(main()))


if __name__ == "__main__":
    entry()
