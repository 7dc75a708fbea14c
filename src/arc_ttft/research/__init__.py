"""The measuring commands, beside the pipeline and not part of a run.

``arc-ttft candidates`` (``candidates``), ``arc-ttft lora-rank-sweep`` (``rank_sweep``),
``arc-ttft bench ttt`` (``ttt_speed``), all measured in fresh processes by ``isolation``;
``arc-ttft recall`` (``recall``); the accuracy harness (``learning``) on generated tasks;
the data-mix experiment (``data_mix``); the budget simulator (``simulate``). They call
the library; nothing outside this package imports them (the CLI finds them by name).
"""
