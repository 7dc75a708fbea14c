"""The samples TTT and `arc-ttft finetune` train on, and the loss on them.

Leave-one-out samples (each train pair in turn is the query, the others the examples),
each under a random view (dihedral x colours x order), pre-tokenised before the first
step so that a training loop does no string work. Loss only on the answer tokens
(option: on every output grid after the first), and logits are computed only at those
positions (``logits_to_keep``): with a 150k vocabulary the full logits dominate memory.
``pack`` batches without padding: equal lengths as rows, the others in one packed row.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from arc_ttft import augment, encoding
from arc_ttft.infer.base import query_cap
from arc_ttft.tasks import Example, Task

IGNORE = -100


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One training sequence: token ids and labels (IGNORE where there is no loss)."""

    input_ids: list[int]
    labels: list[int]
    dropped: list[int] = field(default_factory=list)

    @property
    def n_answer(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _output_spans(text: str, outputs: list[str], start: int = 0) -> list[tuple[int, int]]:
    """Character spans of the rendered output grids, found in order in the prompt text."""
    spans = []
    pos = start
    for out in outputs:
        i = text.find(out, pos)
        if i < 0:
            break
        spans.append((i, i + len(out)))
        pos = i + len(out)
    return spans


def _encode(
    examples: list[tuple[Any, Any]],
    query: Example,
    fmt: str,
    tokenizer,
    max_seq_len: int | None,
    label_mode: str,
) -> Sample:
    # Trim with the room inference keeps for its answer, not this answer's own length:
    # inference does not know it, and must see the prompt that was trained on.
    reserve = query_cap(examples, query.input, fmt, tokenizer) if max_seq_len else None
    prompt = encoding.build_prompt(
        examples, query.input, fmt, tokenizer, query.output, max_seq_len, reserve
    )
    ids, labels = encoding.tokenize_prompt(prompt, tokenizer)
    if label_mode == "outputs":
        # Also learn the example outputs after the first one: locate their characters in
        # the prompt and label the tokens inside those spans.
        kept = [ex for i, ex in enumerate(examples) if i not in set(prompt.dropped)]
        render = encoding.get_format(fmt).render
        spans = _output_spans(prompt.text, [render(out) for _, out in kept])[1:]
        if spans:
            enc = tokenizer(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
            for t, (a, b) in enumerate(enc["offset_mapping"]):
                if any(a >= s and b <= e for s, e in spans) and b > a:
                    labels[t] = ids[t]
    return Sample(ids, labels, list(prompt.dropped))


def make_samples(
    task: Task,
    fmt: str,
    tokenizer,
    n: int,
    seed: int,
    max_seq_len: int | None = None,
    label_mode: str = "answer",
    holdout: int | None = None,
    n_views: int | None = None,
    transforms: str = "dihedral",
) -> list[Sample]:
    """``n`` leave-one-out samples of ``task`` under random views (seeded).

    The first ``len(train)`` samples use the identity view, so short runs still see every
    pair plain. ``n_views`` caps the distinct views (cycled; None = a new view for every
    pass over the pairs). ``holdout`` leaves one train pair out entirely (validation).
    ``transforms`` names the geometric transforms views may use (augment.TRANSFORM_SETS).
    """
    pairs = [ex for i, ex in enumerate(task.train) if i != holdout]
    if len(pairs) < 2:
        # Nothing to leave out: learn the single pair with no examples but itself.
        pairs = pairs * 2
    base = Task(task.id, pairs, [])
    passes = max(1, math.ceil(n / len(pairs)))
    views = augment.make_views(
        len(pairs),
        min(passes, n_views or passes),
        seed,
        transforms=transforms,
    )
    views = [views[i % len(views)] for i in range(passes)]
    rng = random.Random(seed)
    out: list[Sample] = []
    for v in views:
        vt = augment.apply_task(v, base)
        queries = list(range(len(vt.train)))
        rng.shuffle(queries)
        for q in queries:
            examples = [(ex.input, ex.output) for i, ex in enumerate(vt.train) if i != q]
            out.append(_encode(examples, vt.train[q], fmt, tokenizer, max_seq_len, label_mode))
            if len(out) == n:
                return out
    return out


def holdout_sample(
    task: Task, index: int, fmt: str, tokenizer, max_seq_len: int | None = None
) -> Sample:
    """The held-out pair ``index`` asked with all other train pairs as examples (identity view)."""
    examples = [(ex.input, ex.output) for i, ex in enumerate(task.train) if i != index]
    return _encode(examples, task.train[index], fmt, tokenizer, max_seq_len, "answer")


def pack(samples: list[Sample], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Padding-free batch: equal-length samples as rows, others packed into one row.

    Rows of one length need no mask beyond the causal one, so SDPA keeps its flash
    kernel (on GPU this is what makes batch > 1 fast). Unequal lengths go into one row
    with position ids restarting at every sequence; transformers detects the restarts and
    masks attention per sequence (only with ``use_cache=False``; see docs/stack-facts.md). The first
    label of every sequence is IGNORE so no loss crosses a boundary.

    The answer positions are found here, once, so the training step itself has no
    host-device sync (``answer_index``).
    """
    t = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    if len(samples) > 1 and len({len(s.input_ids) for s in samples}) == 1:
        labels = t([[IGNORE] + s.labels[1:] for s in samples])
        batch = {"input_ids": t([s.input_ids for s in samples]), "labels": labels}
    else:
        ids: list[int] = []
        flat: list[int] = []
        pos: list[int] = []
        for s in samples:
            ids += s.input_ids
            flat += [IGNORE] + s.labels[1:]
            pos += list(range(len(s.input_ids)))
        batch = {"input_ids": t([ids]), "labels": t([flat]), "position_ids": t([pos])}
    return {**batch, **answer_index(batch["labels"])}


def answer_index(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Where the loss is: ``keep`` (sequence positions any row needs logits at),
    ``rows``/``cols`` (each labelled token; the logit at p predicts token p+1) and
    ``targets``."""
    tgt = labels[:, 1:]
    rows, cols = (tgt != IGNORE).nonzero(as_tuple=True)
    keep = torch.unique(cols)  # sorted
    return {
        "keep": keep,
        "rows": rows,
        "cols": torch.searchsorted(keep, cols),  # column of each token in the kept logits
        "targets": tgt[rows, cols],
    }


def answer_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over labelled tokens, logits computed only where needed."""
    if "keep" not in batch:
        batch = {**batch, **answer_index(batch["labels"])}
    n = batch["targets"].numel()
    if n == 0:
        raise ValueError("batch has no labelled tokens (answer truncated away?)")
    kwargs = {"position_ids": batch["position_ids"]} if "position_ids" in batch else {}
    out = model(
        input_ids=batch["input_ids"], use_cache=False, logits_to_keep=batch["keep"], **kwargs
    )
    logits = out.logits[batch["rows"], batch["cols"]].float()
    return torch.nn.functional.cross_entropy(logits, batch["targets"], reduction="mean"), n


def task_seed(s: str) -> int:
    """A seed offset from a task id that is the same in every process (unlike hash())."""
    import zlib

    return zlib.crc32(s.encode()) % 100_000
