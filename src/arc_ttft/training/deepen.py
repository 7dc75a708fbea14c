"""Give a trained base more depth without losing what it knows (`finetune --add-layers`).

Each new decoder layer is a copy of the layer before it with its two output projections
(attention ``o_proj`` and MLP ``down_proj``) set to zero. A pre-norm layer adds
``o_proj(attention) + down_proj(mlp)`` to the residual stream, so a zeroed copy adds
nothing: the deeper model answers exactly as the base did. The gradients of those two
projections are not zero (their inputs are the copy's live activations), so training
grows the new layers from there. Copying rather than drawing fresh weights gives the new
layer's queries and keys a trained start.
"""

from __future__ import annotations

import copy


def insert_after(n_layers: int, n_new: int) -> list[int]:
    """Indices of the layers each new layer follows, spread evenly (repeats when n_new > n_layers)."""
    return [(j * n_layers) // n_new for j in range(n_new)]


def deepen(model, n_new: int) -> list[int]:
    """Insert ``n_new`` identity-initialised decoder layers into a Llama-style causal LM
    (``model.model.layers``: Qwen2/3, Llama, Mistral) in place and update its config.
    Returns the index of the layer each new one copies (``insert_after``)."""
    import torch

    old = list(model.model.layers)
    after = insert_after(len(old), n_new)
    grown, source = [], []  # source: the old index each layer is or copies
    for i, layer in enumerate(old):
        grown.append(layer)
        source.append(i)
        for _ in range(after.count(i)):
            new = copy.deepcopy(layer)
            with torch.no_grad():
                for proj in (new.self_attn.o_proj, new.mlp.down_proj):
                    proj.weight.zero_()
                    if proj.bias is not None:
                        proj.bias.zero_()
            grown.append(new)
            source.append(i)
    for idx, layer in enumerate(grown):  # the KV cache is indexed by layer
        layer.self_attn.layer_idx = idx
    model.model.layers = torch.nn.ModuleList(grown)
    cfg = model.config
    types = getattr(cfg, "layer_types", None)
    if types:  # a copy keeps its source's attention type (full or sliding)
        cfg.layer_types = [types[i] for i in source]
    cfg.num_hidden_layers = len(grown)
    if getattr(cfg, "max_window_layers", None) is not None:
        cfg.max_window_layers = max(cfg.max_window_layers, len(grown))
    return after
