"""The training path: what makes the base models that `arc-ttft run` serves.

- ``synthetic``: seeded ARC-like task families (the generated data of arc-nano and
  arc-nano2);
- ``finetune``: `arc-ttft finetune`, a base model trained on a data mix of real and
  generated tasks in the prompts TTT and inference use;
- ``config``: ``FinetuneConfig``, its parameters.

It builds on the library's stages (tasks, encoding, ttt, models) and never on the
pipeline; ``arc_ttft.research`` measures what it makes.
"""
