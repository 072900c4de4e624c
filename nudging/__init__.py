"""nudging: training-free, inference-time alignment of a base LLM by a small aligned model.

Implements Nudging (Fei, Razeghi, Singh, ACL 2025, arXiv 2410.09300).
"""

from nudging.backend import LocalModel
from nudging.config import BaselineConfig, NudgingConfig, SamplingConfig
from nudging.errors import (
    InvalidArgumentError,
    ModelNotFoundError,
    NotCausalLMError,
    NudgingError,
    PromptTooLongError,
    RemoteError,
)
from nudging.methods import METHODS, MODES
from nudging.nudger import Nudger
from nudging.result import GenerationResult, GenerationStats
from nudging.text import Span

__all__ = [
    "BaselineConfig",
    "GenerationResult",
    "GenerationStats",
    "InvalidArgumentError",
    "LocalModel",
    "METHODS",
    "MODES",
    "ModelNotFoundError",
    "NotCausalLMError",
    "Nudger",
    "NudgingConfig",
    "NudgingError",
    "PromptTooLongError",
    "RemoteError",
    "SamplingConfig",
    "Span",
]
__version__ = "0.1.0"
