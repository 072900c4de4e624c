"""nudging: training-free, inference-time alignment of a base LLM by a small aligned model.

Implements Nudging (Fei, Razeghi, Singh, ACL 2025, arXiv 2410.09300). The public names below load on first use,
so that `import nudging.backends.interface` (or the remote backend) does not bring in torch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

_EXPORTS = {
    "BaselineConfig": "nudging.config",
    "GenerationResult": "nudging.result",
    "GenerationStats": "nudging.result",
    "InvalidArgumentError": "nudging.errors",
    "LocalModel": "nudging.backends.local",
    "METHODS": "nudging.methods",
    "MODES": "nudging.methods",
    "ModelNotFoundError": "nudging.errors",
    "NotCausalLMError": "nudging.errors",
    "Nudger": "nudging.nudger",
    "NudgingConfig": "nudging.config",
    "NudgingError": "nudging.errors",
    "PromptTooLongError": "nudging.errors",
    "RemoteError": "nudging.errors",
    "SamplingConfig": "nudging.config",
    "Span": "nudging.text",
}
__all__ = sorted(_EXPORTS)


def _version() -> str:
    try:
        return importlib.metadata.version("nudging")  # written once, in pyproject.toml
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # a source tree that was never installed


__version__ = _version()


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nudging' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
