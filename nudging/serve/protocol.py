"""The OpenAI-compatible request and response shapes of `nudging serve`.

Request fields are checked by the config dataclasses the engine itself uses (nudging.config), so a range lives in
one place; a field left out (None) takes the server's default. Response fields that OpenAI's responses only carry
sometimes (usage on a chunk, nudging details, a request id) are left out of the JSON when they are None.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from nudging.config import (
    GAMMA_RANGE, MAX_LOOKAHEAD, MAX_TOP_K, RULES, SEED_RANGE, TOP_P_RANGE, NudgingConfig, SamplingConfig,
)
from nudging.errors import InvalidArgumentError
from nudging.text import check_unicode

MAX_TEMPERATURE = 2.0  # OpenAI's API takes temperatures up to 2


def _omitted_if_none(**kwargs: Any) -> Any:
    return Field(default=None, exclude_if=lambda value: value is None, **kwargs)


def _in_range(**bounds: float) -> Callable[[dict[str, Any]], None]:
    """Writes a field's range (checked by the config dataclasses) into its number branch of the OpenAPI document,
    so clients and the schema fuzz see it; the values come from nudging.config, written there once."""
    def add(schema: dict[str, Any]) -> None:
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") in ("number", "integer"):
                branch.update(bounds)

    return add


def _check(build: Callable[..., object], **values: object) -> None:
    """Call `build` (a config dataclass, a check) with `values`: its own validation decides what is valid."""
    try:
        build(**values)
    except InvalidArgumentError as error:
        raise PydanticCustomError("invalid_value", "{reason}", {"reason": str(error)}) from None


def _text(value: str) -> str:
    """A text the models read: valid Unicode (the field's name leads the error message)."""
    _check(check_unicode, text=value, what="the text")
    return value


# --- requests ------------------------------------------------------------------------------------------------
class _Request(BaseModel):
    """Fields take the JSON types the OpenAPI document gives them, no others (no "stream": 0, no "max_tokens":
    "8"); fields this server does not know are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class NudgingFields(_Request):
    """Per-request nudging settings, sent as extra body fields (OpenAI clients: `extra_body=`)."""

    gamma: float | None = Field(default=None, description="the uncertainty threshold; default: the server's",
                                json_schema_extra=_in_range(exclusiveMinimum=GAMMA_RANGE[0],
                                                            exclusiveMaximum=GAMMA_RANGE[1]))
    lookahead: int | None = Field(default=None, description="nudger tokens per round; default: the server's",
                                  json_schema_extra=_in_range(minimum=1, maximum=MAX_LOOKAHEAD))
    rule: str | None = Field(default=None, description="acceptance rule (docs/NUDGING_SPEC.md); default: the server's",
                             json_schema_extra={"enum": list(RULES)})
    agreement_k: int | None = Field(default=None, description="rule agreement: the base's strings a nudged word may "
                                    "start with; default: the server's",
                                    json_schema_extra=_in_range(minimum=1, maximum=MAX_TOP_K))
    window: int | None = Field(default=None, description="rule window: base tokens of the nudger's text the base's "
                               "top-1 is averaged over; default: the server's",
                               json_schema_extra=_in_range(minimum=1, maximum=MAX_LOOKAHEAD))
    max_nudged_fraction: float | None = Field(default=None, description="once the nudger wrote more than this share "
                                              "of the words, the base writes the rest; default: the server's",
                                              json_schema_extra=_in_range(minimum=0, maximum=1))
    nudging: bool = True  # false: the base model alone

    @field_validator("gamma", "lookahead", "rule", "agreement_k", "window", "max_nudged_fraction")
    @classmethod
    def _nudging_setting(cls, value: float | int | None, info: ValidationInfo) -> float | int | None:
        if value is not None:
            _check(NudgingConfig, **{info.field_name: value})
        return value


class SamplingFields(_Request):
    model: str | None = None
    max_tokens: int | None = Field(default=None, description="answer budget; default: the server's",
                                   json_schema_extra=_in_range(minimum=1))
    temperature: float | None = Field(default=None, description="0 is greedy (the default)",
                                      json_schema_extra=_in_range(minimum=0, maximum=MAX_TEMPERATURE))
    top_p: float | None = Field(default=None, description="default 1",
                                json_schema_extra=_in_range(exclusiveMinimum=TOP_P_RANGE[0], maximum=TOP_P_RANGE[1]))
    seed: int | None = Field(default=None, json_schema_extra=_in_range(minimum=SEED_RANGE[0], maximum=SEED_RANGE[1]))
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = Field(default=None, validate_default=True)
    user: str | None = None

    @field_validator("max_tokens")
    @classmethod
    def _budget(cls, value: int | None) -> int | None:
        if value is not None:
            _check(NudgingConfig, max_new_tokens=value)
        return value

    @field_validator("temperature", "top_p", "seed")
    @classmethod
    def _sampling_setting(cls, value: float | int | None, info: ValidationInfo) -> float | int | None:
        if value is not None:
            _check(SamplingConfig, **{info.field_name: value})
            if info.field_name == "temperature" and value > MAX_TEMPERATURE:
                raise PydanticCustomError("invalid_value", f"temperature may be at most {MAX_TEMPERATURE:g}")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def sampling(self) -> SamplingConfig:
        """This request's sampling settings; those it leaves out keep SamplingConfig's defaults."""
        given = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        return SamplingConfig(**{name: value for name, value in given.items() if value is not None})


class CompletionRequest(SamplingFields, NudgingFields):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_K)  # top-k strings per position (0 and 1: top-1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str:
        if isinstance(value, list):
            if len(value) != 1 or not isinstance(value[0], str):
                raise ValueError("prompt must be one string (batches of prompts are not supported)")
            value = value[0]
        return _text(value)


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] = Field(description="a text, or parts: the text of each text part is read, "
                                                            "other parts are ignored")

    @field_validator("content")
    @classmethod
    def _texts(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, str):
            return _text(value)
        for index, part in enumerate(value):
            if part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise PydanticCustomError("invalid_value", "part {index} is a text part whose 'text' is not a "
                                              "string", {"index": index})
                _text(part["text"])
        return value

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part["text"] for part in self.content if part.get("type") == "text")


class ChatCompletionRequest(SamplingFields, NudgingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, json_schema_extra=_in_range(minimum=1))

    @field_validator("max_completion_tokens")
    @classmethod
    def _completion_budget(cls, value: int | None) -> int | None:
        if value is not None:
            _check(NudgingConfig, max_new_tokens=value)
        return value

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if value[-1].role != "user":
            raise ValueError("the last message must come from the user")
        return value


class TokenizeRequest(_Request):
    """vLLM's /tokenize body (prompt form)."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True

    @field_validator("prompt")
    @classmethod
    def _readable(cls, value: str) -> str:
        return _text(value)


# --- responses -----------------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> "Usage":
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class SpanInfo(BaseModel):
    text: str
    source: str


class NudgingInfo(BaseModel):
    """The end of an answer: its spans by source, the engine's stop reason and the generation's stats."""

    spans: list[SpanInfo]
    stop_reason: str
    stats: dict[str, Any]


class PieceInfo(BaseModel):
    """Which model wrote the piece of a stream chunk, and the share of the answer's words so far the nudger wrote."""

    source: str
    nudged_share: float


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: Logprobs | None = None


class _Frame(BaseModel):
    """The fields every response and chunk of one request share."""

    id: str
    created: int
    model: str


class CompletionResponse(_Frame):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage
    nudging: NudgingInfo | None = _omitted_if_none()


class CompletionChunk(_Frame):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = _omitted_if_none()
    nudging: NudgingInfo | PieceInfo | None = _omitted_if_none()


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(_Frame):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage
    nudging: NudgingInfo | None = _omitted_if_none()


class Delta(BaseModel):
    role: Literal["assistant"] | None = _omitted_if_none()
    content: str | None = _omitted_if_none()


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionChunk(_Frame):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = _omitted_if_none()
    nudging: NudgingInfo | PieceInfo | None = _omitted_if_none()


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "nudging"
    max_model_len: int | None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    mode: str
    running: int
    waiting: int
    stopped_by_disconnect: int  # generations stopped because their client went away
    gamma: float
    lookahead: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = _omitted_if_none(description="on a server error: where to find it in the server's log")


class ErrorBody(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
