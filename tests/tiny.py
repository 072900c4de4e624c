"""Tiny models and tokenizers built in the tests: fast, and shaped so every branch of the algorithm runs.

Two tokenizers trained here on a small corpus: a byte-level BPE (GPT-2 style, no BOS, ChatML end-of-turn as
EOS) and a SentencePiece-style BPE (Metaspace, byte fallback, adds BOS), so cross-tokenizer paths run. Models are
small Llama configs with random weights whose output layer is scaled ("sharpened") so that top-1 probabilities
spread from near 0 to near 1. The models run in float64: the cached and uncached forward passes then agree to
about 1e-12, so a threshold test never flips between the engine and the reference.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from nudging import LocalModel

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus() -> list[str]:
    subjects = ["the cat", "a robot", "my friend", "the old café owner", "every student", "Zoë", "the model"]
    verbs = ["reads", "writes", "counts", "answers", "finds", "naïvely adds"]
    objects = ["the question", "two numbers", "a long letter", "the last word", "three apples", "the answer"]
    tails = [".", " today.", " quickly.", "\n", ": 12 + 7 = 19.", " step by step.", "?"]
    lines = [f"{s} {v} {o}{t}" for s, v, o, t in itertools.product(subjects, verbs, objects, tails)]
    return [line[0].upper() + line[1:] for line in lines]


def byte_level_tokenizer(vocab_size: int = 360) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", bos_token="<|im_start|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


def metaspace_tokenizer(vocab_size: int = 420) -> PreTrainedTokenizerFast:
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tokenizer = Tokenizer(models.BPE(byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens)
    tokenizer.train_from_iterator(corpus(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def lone_byte_ids(tokenizer) -> list[int]:
    """Ids whose text alone ends inside (or is part of) a multi-byte character: lone UTF-8 bytes."""
    return [i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i])]


def control_ids(tokenizer) -> list[int]:
    """Ids that decode to control characters other than the newline."""
    return [i for i in range(len(tokenizer)) if any(ord(ch) < 32 and ch != "\n" for ch in tokenizer.decode([i]))]


def garbage_ids(tokenizer) -> list[int]:
    """Ids that decode to part of a multi-byte character (lone bytes) or to control characters."""
    return sorted(set(lone_byte_ids(tokenizer)) | set(control_ids(tokenizer)))


def spacing_ids(tokenizer) -> list[int]:
    """Ids whose text is only spaces or punctuation (at least one character, no letter or digit, no newline)."""
    def spacing(text: str) -> bool:
        return bool(text) and "\ufffd" not in text and all(ch == " " or (not ch.isalnum() and ch.isprintable())
                                                            for ch in text)

    special = set(tokenizer.all_special_ids)
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"]  # a token's text after a letter (a metaspace
    before = tokenizer.decode(anchor)  # decoder drops the leading space of a text's first token)
    return [i for i in range(len(tokenizer))
            if i not in special and spacing(tokenizer.decode(anchor + [i])[len(before) :])]


def tiny_llama(
    tokenizer,
    *,
    seed: int,
    sharpness: float = 25.0,
    eos_logit_scale: float = 1.0,
    max_positions: int = 1024,
    keep_lone_bytes: bool = False,
    logit_bias: dict[int, float] | None = None,
) -> LlamaForCausalLM:
    """A random tiny Llama for `tokenizer`. Lone-byte and control-character tokens get zero logits, so random
    weights write readable characters (a model that emits random bytes makes text that byte-fallback decoders
    rewrite); the multi-byte cases are tested on purpose in test_pieces.py and, with `keep_lone_bytes` (only
    control characters zeroed, so pieces end inside multi-byte characters), in test_fuzz_engine.py.
    `logit_bias` adds a constant to the logits of the given ids (an output layer with a bias)."""
    vocab_size, eos_id = len(tokenizer), tokenizer.eos_token_id
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        eos_token_id=eos_id,
        bos_token_id=None,
        pad_token_id=None,
    )
    model = LlamaForCausalLM(config).to(torch.float64)
    with torch.no_grad():
        for layer in model.model.layers:  # stronger attention so the context matters (and a bad cache shows)
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
            layer.self_attn.o_proj.weight.mul_(20.0)
        model.lm_head.weight.mul_(sharpness)
        model.lm_head.weight[eos_id].mul_(eos_logit_scale)
        model.lm_head.weight[control_ids(tokenizer) if keep_lone_bytes else garbage_ids(tokenizer)] = 0.0
        if logit_bias:
            head = torch.nn.Linear(config.hidden_size, vocab_size, bias=True, dtype=torch.float64)
            head.weight.copy_(model.lm_head.weight)
            head.bias.zero_()
            for token, bias in logit_bias.items():
                head.bias[token] = bias
            model.lm_head = head
    return model.eval()


def stuck_llama(tokenizer, token: int | None) -> LlamaForCausalLM:
    """A model that writes `token` forever, almost surely: its logits ignore the context."""
    if not isinstance(token, int) or not 0 <= token < len(tokenizer):
        raise ValueError(f"stuck_llama: token must be an id of the tokenizer (0 to {len(tokenizer) - 1}), got "
                         f"{token!r} (convert_tokens_to_ids returns None for a string that is not a token)")
    model = tiny_llama(tokenizer, seed=0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[token, 0] = 10.0
    return model


def single_token(tokenizer, text: str) -> int:
    """The id of the one token that `text` tokenizes to (no special tokens); an error if it takes several."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"single_token: {text!r} is {len(ids)} tokens for this tokenizer, expected one")
    return ids[0]


def local(model, tokenizer, name: str) -> LocalModel:
    return LocalModel(model, tokenizer, name=name)


# name: (tokenizer factory, seed, eos logit scale, context length)
TINY_FOLDERS = {
    "base": (metaspace_tokenizer, 2, 1.0, 2048),  # room for the in-context prompt
    "nudger": (byte_level_tokenizer, 5, 1.4, 2048),
    "short": (byte_level_tokenizer, 6, 1.0, 24),
    # with "nudger", one vocabulary: a base and an anti-expert for proxy tuning and the exact ensemble
    "byte-base": (byte_level_tokenizer, 1, 1.0, 2048),
    "byte-anti": (byte_level_tokenizer, 9, 1.0, 2048),
}


def save_tiny_models(root: Path, names: tuple[str, ...] = tuple(TINY_FOLDERS)) -> dict[str, str]:
    """Tiny models saved as Hugging Face folders (specs are their paths): a base and a nudger with different
    tokenizers, one with a 24-token context, and a base and anti-expert that share the nudger's vocabulary."""
    folders = {}
    for name in names:
        make_tokenizer, seed, eos_logit_scale, positions = TINY_FOLDERS[name]
        tokenizer = make_tokenizer()
        model = tiny_llama(tokenizer, seed=seed, eos_logit_scale=eos_logit_scale, max_positions=positions)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders


def bigram_llama(tokenizer, next_probs: dict[int, dict[int, float]]) -> LlamaForCausalLM:
    """A model whose next-token distribution depends on the last token only, exactly as given: after token t it
    is `next_probs[t]` (the rest of its mass spread evenly over the other tokens); after any other token, even.

    One-hot embeddings (hidden size = vocabulary), the layer's outputs zeroed, so the final norm sees the
    embedding alone and the output layer holds the log-probabilities. float64.
    """
    vocab_size = len(tokenizer)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=vocab_size, intermediate_size=8, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
        tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id, bos_token_id=None, pad_token_id=None,
        rms_norm_eps=1e-12,
    )
    model = LlamaForCausalLM(config).to(torch.float64)
    scale = vocab_size**0.5  # the norm turns a one-hot embedding into sqrt(vocab) times itself
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab_size, dtype=torch.float64))
        model.model.norm.weight.fill_(1.0)
        table = torch.full((vocab_size, vocab_size), 1.0 / vocab_size, dtype=torch.float64)  # [previous, next]
        for previous, probs in next_probs.items():
            if sum(probs.values()) >= 1.0:
                raise ValueError(f"next_probs[{previous}] sums to {sum(probs.values())}, must be below 1")
            rest = (1.0 - sum(probs.values())) / (vocab_size - len(probs))
            table[previous] = rest
            for token, prob in probs.items():
                table[previous, token] = prob
        model.lm_head.weight.copy_((table.log() / scale).T)
    return model.eval()
