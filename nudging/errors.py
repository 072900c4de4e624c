"""Typed exceptions of the public API. The CLI maps every NudgingError to one line on stderr and exit code 2."""


class NudgingError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidArgumentError(NudgingError, ValueError):
    """An argument is outside its allowed range or of the wrong form."""


class ModelNotFoundError(NudgingError):
    """A model spec names nothing that can be loaded (no file, no folder, not on the hub)."""


class NotCausalLMError(NudgingError):
    """A model was found but it is not a causal (decoder-only) language model."""


class PromptTooLongError(NudgingError):
    """A prompt does not fit in a model's context window."""


class ContextWindowFull(NudgingError):
    """Raised inside a run when its ids no longer fit the model's context; the engine ends with `length`."""


class RemoteError(NudgingError):
    """A model server could not be used: unreachable, refused the key, does not serve the model, or failed."""
