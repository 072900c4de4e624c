"""Prompts as in the paper: plain text for the base, the nudger's own chat template for the nudger; the built-in
questions (bench, calibration) and questions read from a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nudging.errors import InvalidArgumentError
from nudging.text import check_unicode

DEFAULT_ANSWER_PREFIX = "Answer:\n"


def base_prompt(question: str, system: str | None = None, answer_prefix: str = DEFAULT_ANSWER_PREFIX) -> str:
    """`{system}\\n{question}\\n{answer prefix}`; the system line is left out when there is none."""
    return base_prompt_for(_one_question(question, system), answer_prefix)


def chat_prompt(tokenizer: Any, question: str, system: str | None = None) -> str:
    """The question in the tokenizer's chat template, ready for the assistant's answer (see chat_prompt_for)."""
    return chat_prompt_for(tokenizer, _one_question(question, system))


def base_prompt_for(messages: list[dict[str, str]], answer_prefix: str = DEFAULT_ANSWER_PREFIX) -> str:
    """A conversation as plain text for a base model: the system line, then each user turn followed by
    'Answer:' and the assistant's reply."""
    system = _system_text(messages)
    turns = []
    for message in messages:
        if message["role"] == "user":
            turns.append(message["content"] + "\n" + answer_prefix)
        elif message["role"] == "assistant":
            turns.append(message["content"] + "\n\n")
    return (system + "\n" if system else "") + "".join(turns)


def chat_prompt_for(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """A conversation in the tokenizer's chat template, ready for the assistant's answer.

    A system text goes into a system turn, or is folded into the first user turn where the template has no
    system role. A BOS string the template writes is dropped when the tokenizer adds BOS itself, so a run's
    canonical tokenization does not start with two. Without a chat template the plain base format is used.
    """
    if not getattr(tokenizer, "chat_template", None):
        return base_prompt_for(messages)
    try:
        text = _render(tokenizer, messages)
    except Exception:  # templates without a system role raise (e.g. "System role not supported")
        text = _render(tokenizer, _fold_system(messages))
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and _tokenizer_adds_bos(tokenizer):
        text = text[len(bos) :]
    return text


def _one_question(question: str, system: str | None) -> list[dict[str, str]]:
    system_turn = [{"role": "system", "content": system}] if system else []
    return system_turn + [{"role": "user", "content": question}]


def _system_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] == "system")


def _fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    system = _system_text(messages)
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest:
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _tokenizer_adds_bos(tokenizer: Any) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("x")["input_ids"]
    return bos_id is not None and len(ids) > 0 and ids[0] == bos_id


BUILT_IN_PROMPTS = [
    'Take the last letters of each word in "Ada Lovelace" and concatenate them.',
    "What is 12 * 7? Explain briefly.",
    "Give three tips for staying focused while studying.",
    "Is a tomato a fruit or a vegetable?",
    "Why is the sky blue?",
    "Name the planets of the solar system.",
    "How do I boil an egg?",
    "What is the capital of France?",
    "Write a haiku about autumn.",
    "What causes rain?",
    "Explain what a prime number is.",
    "How many legs does a spider have?",
    "What is photosynthesis?",
    "Translate 'good morning' into Spanish.",
    "Why do we need sleep?",
    "What is 15% of 80?",
]
DEFAULT_PROMPTS = BUILT_IN_PROMPTS[:4]


def default_prompts(batch: int) -> list[str]:
    """The built-in prompts a run uses: four, or as many as the batch holds (up to 16)."""
    return BUILT_IN_PROMPTS[: max(len(DEFAULT_PROMPTS), min(batch, len(BUILT_IN_PROMPTS)))]


RAW_FIELDS = ("base_prompt", "nudger_prompt")


def read_prompts(path: str, raw: bool = False) -> list[Any]:
    """One question per line, or JSONL objects with a `question` (or `prompt`) field. With `raw`, a JSONL object
    may instead hold raw prompts (`base_prompt`, `nudger_prompt`), returned as a dict of those fields."""
    file = Path(path)
    if not file.is_file():
        raise InvalidArgumentError(f"--prompts: no such file {path}")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InvalidArgumentError(f"--prompts: {path} is not UTF-8 text (byte 0x{error.object[error.start]:02X} at "
                                   f"offset {error.start})") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidArgumentError(f"--prompts: line {number} of {path} is not valid JSON: {error}") from None
            if raw and isinstance(record, dict) and any(field in record for field in RAW_FIELDS):
                prompts.append(_raw_prompts(record, f"--prompts: line {number} of {path}"))
                continue
            text = record.get("question", record.get("prompt")) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise InvalidArgumentError(f"--prompts: line {number} of {path} has no 'question' string")
            prompts.append(check_unicode(text, f"--prompts: line {number} of {path}"))
        else:
            prompts.append(line.strip())
    if not prompts:
        raise InvalidArgumentError(f"--prompts: {path} holds no prompts")
    return prompts


def _raw_prompts(record: dict, where: str) -> dict[str, str]:
    fields = {field: record[field] for field in RAW_FIELDS if field in record}
    for field, text in fields.items():
        if not isinstance(text, str):
            raise InvalidArgumentError(f"{where}: '{field}' must be a string")
        check_unicode(text, f"{where}: '{field}'")
    return fields
