"""IncrementalDetokenizer against whole-run decoding, the spec's definition of a token's piece."""

from __future__ import annotations

import random
import re

import pytest

from nudging.pieces import IncrementalDetokenizer
from tiny import byte_level_tokenizer, garbage_ids, metaspace_tokenizer

PROMPTS = ["The cat reads the question", "Zoë naïvely adds two numbers:\n", "Every café owner"]
BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def full_text(tokenizer, ids) -> str:
    """The decode of the run up to its last token boundary that ends on a whole character."""
    for end in range(len(ids), -1, -1):
        decoded = tokenizer.decode(list(ids[:end]), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if not decoded.endswith("\ufffd"):
            return decoded
    return ""


def full_piece(tokenizer, ids, token) -> str:
    before, after = full_text(tokenizer, ids), full_text(tokenizer, list(ids) + [token])
    assert after.startswith(before), (before, after)
    return after[len(before) :]


def check_run(tokenizer, prompt_ids, tokens, rng: random.Random, pool) -> None:
    """peek (of the token pushed and of another one) and push agree with full decoding at every step."""
    detok = IncrementalDetokenizer(tokenizer, prompt_ids)
    ids = list(prompt_ids)
    for step, token in enumerate(tokens):
        other = rng.choice(pool)
        where = f"step {step}, ids={ids}, token={token}"
        assert detok.peek(ids, other) == full_piece(tokenizer, ids, other), where
        expected = full_piece(tokenizer, ids, token)
        assert detok.peek(ids, token) == expected, where
        ids.append(token)
        assert detok.push(ids) == expected, where


def readable_ids(tokenizer) -> list[int]:
    bad = set(garbage_ids(tokenizer))
    return [i for i in range(len(tokenizer)) if i not in bad]


def random_runs(tokenizer, count: int, length: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = readable_ids(tokenizer)
    for n in range(count):
        prompt = tokenizer(PROMPTS[n % len(PROMPTS)])["input_ids"]
        check_run(tokenizer, prompt, [rng.choice(pool) for _ in range(length)], rng, pool)


@pytest.fixture(scope="module")
def tokenizers():
    return {"byte": byte_level_tokenizer(), "meta": metaspace_tokenizer()}


def byte_tokens(tokenizer, kind: str, char: str) -> list[int]:
    """One token per UTF-8 byte of `char`."""
    if kind == "meta":
        ids = [tokenizer.convert_tokens_to_ids(f"<0x{b:02X}>") for b in char.encode()]
        assert tokenizer.unk_token_id not in ids
    else:
        ids = tokenizer(char, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(char.encode()), (char, ids)
    return ids


@pytest.mark.parametrize("kind", ["byte", "meta"])
def test_random_runs_match_full_decoding(tokenizers, kind):
    random_runs(tokenizers[kind], count=200, length=30, seed=11)


@pytest.mark.parametrize("kind", ["byte", "meta"])
def test_long_runs_with_multibyte_characters_match_full_decoding(tokenizers, kind):
    """100+ tokens so the window moves, with whole characters cut into byte tokens along the way.

    """
    tokenizer = tokenizers[kind]
    pool = readable_ids(tokenizer)
    plain = [i for i in pool if not BYTE_TOKEN.fullmatch(tokenizer.convert_ids_to_tokens(i))]
    chars = [byte_tokens(tokenizer, kind, c) for c in "€🙂é中"]
    rng = random.Random(5)
    for n in range(20):
        tokens: list[int] = []
        while len(tokens) < 100:
            tokens.append(rng.choice(plain))
            if rng.random() < 0.3:
                tokens += rng.choice(chars) + [rng.choice(pool) for _ in range(rng.randint(0, 3))]
        check_run(tokenizer, tokenizer(PROMPTS[n % len(PROMPTS)])["input_ids"], tokens, rng, pool)


@pytest.mark.parametrize(
    "kind, text",
    [
        ("byte", "€"),
        ("byte", "🙂"),
        ("byte", "€🙂"),
        ("byte", "x🙂"),
        ("meta", "€"),
        ("meta", "🙂"),
        ("meta", "€🙂"),
        ("meta", "x🙂"),
    ],
)
def test_character_cut_across_tokens_arrives_whole(tokenizers, kind, text):
    tokenizer = tokenizers[kind]
    tokens, expected = [], []
    for char in text:
        cut = byte_tokens(tokenizer, kind, char)
        tokens += cut
        expected += [""] * (len(cut) - 1) + [char]
    ids = tokenizer(PROMPTS[0])["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, ids)
    peeked, pushed = [], []
    for token in tokens:
        peeked.append(detok.peek(ids, token))
        ids.append(token)
        pushed.append(detok.push(ids))
    assert peeked == expected
    assert pushed == expected


@pytest.mark.parametrize("kind", ["byte", "meta"])
def test_run_that_starts_inside_a_character(tokenizers, kind):
    tokenizer = tokenizers[kind]
    cut = byte_tokens(tokenizer, kind, "🙂")
    space = tokenizer(" the", add_special_tokens=False)["input_ids"]
    ids = tokenizer(PROMPTS[0])["input_ids"] + space + cut[:2]
    detok = IncrementalDetokenizer(tokenizer, ids)
    pieces = []
    for token in cut[2:]:
        ids.append(token)
        pieces.append(detok.push(ids))
    assert pieces == ["", "🙂"]


def converted_folder(prefix: str):
    from nudging.models import cache_dir

    root = cache_dir() / "converted"
    folders = sorted(p for p in root.glob(prefix + "*") if p.is_dir()) if root.is_dir() else []
    return folders[0] if folders else None


@pytest.mark.parametrize("prefix", ["gemma-3-270m", "SmolLM2-135M-Instruct"])
def test_real_demo_tokenizers_match_full_decoding(prefix):
    folder = converted_folder(prefix)
    if folder is None:
        pytest.skip(f"no converted {prefix} folder (run scripts/setup.sh)")
    from transformers import AutoTokenizer

    random_runs(AutoTokenizer.from_pretrained(folder), count=60, length=30, seed=3)


def test_real_gemma_two_byte_fallback_characters():
    folder = converted_folder("gemma-3-270m")
    if folder is None:
        pytest.skip("no converted gemma-3-270m folder (run scripts/setup.sh)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("Q")["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, ids)
    pieces = []
    for token in tokenizer("\U0001F9CC\U0001F9CC", add_special_tokens=False)["input_ids"]:
        ids.append(token)
        pieces.append(detok.push(ids))
    assert "".join(pieces) == "\U0001F9CC\U0001F9CC"


def test_byte_fallback_rewrite_keeps_the_written_text(tokenizers):
    """NUDGING_SPEC.md, "A decoder that rewrites": bytes E4 B5 80 decode to "䵀"; a fourth byte makes the group
    invalid and the decoder turns all four into U+FFFD. "䵀" was written already, so the next piece is what the
    new text adds after the common prefix (found by the differential fuzzer, where the reference used to fail)."""
    meta = tokenizers["meta"]
    group = [meta.convert_tokens_to_ids(f"<0x{b:02X}>") for b in (0xE4, 0xB5, 0x80, 0xA9)]
    ids = meta("reads 19.")["input_ids"]
    detok = IncrementalDetokenizer(meta, ids)
    pieces = []
    for token in group + [meta.convert_tokens_to_ids("▁cat")]:
        ids.append(token)
        pieces.append(detok.push(ids))
    assert pieces == ["", "", "䵀", "", "\ufffd" * 4 + " cat"]


def test_a_prompt_ending_in_a_replacement_character_is_not_held_back(tokenizers):
    """A run starts from its prompt's decode even where that ends in U+FFFD (here a literal one, bytes EF BF BD):
    the run's pieces never repeat it (found by the differential fuzzer, where the reference used to)."""
    meta = tokenizers["meta"]
    ids = meta("a cat \ufffd")["input_ids"]
    assert meta.decode(ids).endswith("\ufffd")
    detok = IncrementalDetokenizer(meta, ids)
    pieces = []
    for byte in "\U00064924".encode():
        ids.append(meta.convert_tokens_to_ids(f"<0x{byte:02X}>"))
        pieces.append(detok.push(ids))
    assert pieces == ["", "", "", "\U00064924"]
