"""arc-ttft: ARC-AGI with small LLMs and test-time fine-tuning.

A run, in order (``pipeline.run`` joins them; ``workers`` runs one ``shard`` per GPU,
``schedule`` orders a shard's work, ``budget`` guards the clock and ``costs`` prices the
work; ``results`` holds the per-task files): ``tasks`` -> ``augment`` -> ``encoding`` ->
``ttt`` -> ``infer`` -> ``selection`` -> ``submission``. Beside the stages: ``config``
(every parameter), ``events`` (the run log), ``models`` with ``registry``,
``model_paths``, ``tiny``, ``rope`` and ``shrunk_vocab`` (what the model is and where it
comes from), ``report`` and ``viz`` (what people read), ``kaggle`` (the submit
notebook's start), ``cli``. ``arc_ttft.training`` makes the base models (``finetune``,
the ``synthetic`` task families); ``arc_ttft.research`` measures (candidates, rank
sweep, TTT speed, recall, the accuracy harness, the data-mix experiment, the budget
simulator), and nothing outside it imports it. docs/api.md draws the import layers.
"""

__version__ = "0.1.0"
