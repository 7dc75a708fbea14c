"""arc-ttft: ARC-AGI with small LLMs and test-time fine-tuning.

A run, in order (``pipeline.run`` joins them, ``schedule`` orders a shard's work and
``budget`` guards the clock): ``tasks`` -> ``augment`` -> ``encoding`` -> ``ttt`` ->
``infer`` -> ``selection`` -> ``submission``. Beside the stages: ``config`` (every
parameter), ``events`` (the run log), ``models`` with ``registry``, ``model_paths``,
``tiny``, ``rope`` and ``vocab`` (what the model is and where it comes from), ``report``
and ``viz`` (what people read), ``kaggle`` (the submit notebook's start), ``cli``.
The research commands (candidates, rank sweep, TTT speed, recall, finetune, the accuracy
harness, the budget simulator) live in ``arc_ttft.research``; no stage imports them.
"""

__version__ = "0.1.0"
