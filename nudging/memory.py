"""Will a model's weights fit? Estimated from its config before any weights load (the model is built on the meta
device, so even a 70B config costs no memory), against the memory free on the device it would load onto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nudging.errors import InvalidArgumentError

GB = 1024**3
QUANTIZED_BYTES = {"8bit": 1.0, "4bit": 0.5}  # bytes per weight of bitsandbytes' linear layers
ALTERNATIVES = ("use --device-map auto (layers over the GPUs, the rest in CPU memory and on disk), "
                "--quantize 8bit|4bit (CUDA), or a served base (openai:MODEL@URL)")


def parameter_bytes(source: str, dtype: Any, quantize: str | None = None) -> int:
    """Bytes the weights of the model at `source` take in `dtype` (quantized: its linear layers at 1 or 1/2 byte
    per weight, the embeddings and norms in `dtype`)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    size = torch.finfo(dtype).bits // 8
    total = 0.0
    for module in model.modules():
        quantized = quantize is not None and isinstance(module, torch.nn.Linear) and module is not _output(model)
        for parameter in module.parameters(recurse=False):
            total += parameter.numel() * (QUANTIZED_BYTES[quantize] if quantized else size)
    return int(total)


def _output(model: Any) -> Any:
    return model.get_output_embeddings()  # bitsandbytes leaves the output layer unquantized


def free_bytes(device: str) -> int:
    """Memory free now on `device`: the GPU's free memory, or the system's available memory for the CPU."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    import psutil  # not Linux: no /proc/meminfo

    return int(psutil.virtual_memory().available)


def check_fits(spec: str, needed: int, free: int, device: str) -> None:
    """One line saying what is needed, what is free and what to use instead, when the weights won't fit."""
    if needed > free:
        raise InvalidArgumentError(
            f"{spec}: its weights need about {needed / GB:.1f} GB, but {device} has {free / GB:.1f} GB free; "
            + ALTERNATIVES)
