"""Faster linear layers for decoding on a CPU: the same products, computed as weight @ inputs.T for a few rows.

Decoding feeds one to a few tokens per pass, so each linear layer multiplies a skinny [rows, in] input by a big
[out, in] weight. PyTorch computes that as input @ weight.T, and MKL then either runs a one-row product on a
single thread or repacks the whole weight for every call; both read the weights at half the memory bandwidth
a two-core machine has (measured: a pass of gemma-3-270m 72 ms, of Qwen2.5-1.5B 320 ms, one token, float32). The
transposed product, weight @ input.T with a contiguous input of at least two rows, streams the weight once over
every core: one token then costs 36 ms and 200 ms, and two to four tokens cost about what one did, which is what
makes verifying drafts cheap. The values are the same products summed in another order (float rounding only).

`install` swaps the class of a CPU model's plain `nn.Linear` layers (subclasses, e.g. quantized ones, are left
alone); base-only decoding through the same model object (`plain_decode`) gets the same speed-up, so the ratios
that `nudging bench` prints compare like with like.
"""

from __future__ import annotations

from typing import Any

import torch

SKINNY_ROWS = 4  # above this many rows PyTorch's own product is as fast (measured on 2 cores, 135M to 1.5B models)
FLOAT_TYPES = (torch.float32, torch.float64)


class SkinnyLinear(torch.nn.Linear):
    """nn.Linear whose product for up to SKINNY_ROWS rows is weight @ input.T (see the module's docstring)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Linear's own argument name)
        width = input.shape[-1]
        rows = input.numel() // width if width else 0
        if rows == 0 or rows > SKINNY_ROWS or input.device.type != "cpu" or input.dtype not in FLOAT_TYPES:
            return super().forward(input)
        flat = input.reshape(rows, width)
        # An even, contiguous row count keeps MKL on its multi-threaded, no-repacking path (one row, or a
        # strided input such as act(gate) * up, falls back to the slow ones).
        flat = torch.cat([flat, flat[-1:]]) if rows % 2 else flat.contiguous()
        output = (self.weight @ flat.t()).t()[:rows]
        if self.bias is not None:
            output = output + self.bias
        return output.reshape(*input.shape[:-1], self.out_features)


def install(model: Any) -> int:
    """Use SkinnyLinear for every plain nn.Linear of a model whose weights are float32/float64 on the CPU; returns
    how many layers it swapped (a model on a GPU, or in another dtype, is left as it is)."""
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.device.type == "cpu" and module.weight.dtype in FLOAT_TYPES:
            module.__class__ = SkinnyLinear
            swapped += 1
    return swapped
