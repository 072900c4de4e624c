"""Where a local model's tensors go."""

from __future__ import annotations

from typing import Any

import torch


def input_device(model: Any) -> torch.device:
    """Where a model takes its input ids: its embedding's device, which on a model sharded by accelerate is the
    first layer's (an embedding offloaded to CPU memory or disk runs where its hook puts it)."""
    embeddings = model.get_input_embeddings()
    if embeddings.weight.device.type != "meta":
        return embeddings.weight.device
    hook = getattr(embeddings, "_hf_hook", None)
    return torch.device(getattr(hook, "execution_device", None) or "cpu")
