"""The research commands, beside the pipeline and not part of a run.

``arc-ttft candidates`` (``candidates``), ``arc-ttft lora-rank-sweep`` (``rank_sweep``),
``arc-ttft bench ttt`` (``ttt_speed``), all measured in fresh processes by ``harness``;
``arc-ttft recall`` (``recall``); ``arc-ttft finetune`` (``finetune``, the base trained on
ARC before TTT); the accuracy harness (``learning``) on generated tasks (``synthetic``);
the budget simulator (``simulate``). They call the pipeline's stages; no stage imports
them.
"""
