"""`nudging bench` on a GPU with randomly initialised models of realistic shapes (no download, no weights).

A prepared device check: it builds a ~1B-parameter Llama-shaped base and a SmolLM2-135M-shaped nudger (random
weights, the test suite's small trained tokenizers, output layers sharpened so that top-1 probabilities spread as
a trained model's do), saves them, and runs `nudging bench` on them in bf16: base-only, nudging one at a time and
16 at a time. It prints the bench report (JSON) and writes it to $OUT/gpu_bench.json when $OUT is set.

    python scripts/gpu_bench.py                        # CUDA, bfloat16, realistic shapes
    python scripts/gpu_bench.py --device cpu --dtype float32 --small   # a quick dry run anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny import byte_level_tokenizer, garbage_ids, metaspace_tokenizer  # noqa: E402 - the tests' tokenizers

SHAPES = {  # hidden, intermediate, layers, heads, kv heads
    "base": (2048, 8192, 16, 16, 8),
    "nudger": (576, 1536, 30, 9, 3),
}
SHARPNESS = 25.0
SMALL = {"base": (256, 512, 4, 4, 2), "nudger": (128, 256, 4, 4, 2)}


def build(folder: Path, tokenizer, shape: tuple[int, ...], seed: int) -> None:
    hidden, intermediate, layers, heads, kv_heads = shape
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # as the tests' tiny models: top-1 probabilities spread from near 0 to near 1, and
        for layer in model.model.layers:  # no lone bytes or control characters
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
        model.lm_head.weight.mul_(SHARPNESS * (32 / hidden) ** 0.5)
        model.lm_head.weight[garbage_ids(tokenizer)] = 0.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--small", action="store_true", help="small shapes (a dry run on a CPU)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
          f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}", flush=True)
    shapes = SMALL if args.small else SHAPES
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        build(Path(root) / "base", metaspace_tokenizer(), shapes["base"], seed=2)
        build(Path(root) / "nudger", byte_level_tokenizer(), shapes["nudger"], seed=5)
        print(f"models built in {time.perf_counter() - started:.0f} s", flush=True)
        command = [sys.executable, "-m", "nudging", "bench", "--base", str(Path(root) / "base"),
                   "--nudger", str(Path(root) / "nudger"), "--device", args.device, "--dtype", args.dtype,
                   "--method", "nudging", "--max-new-tokens", str(args.max_new_tokens), "--batch", str(args.batch),
                   "--json"]
        completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        print(completed.stderr[-4000:], file=sys.stderr)
        return completed.returncode
    report = json.loads(completed.stdout)
    del report["rows"]
    print(json.dumps(report, indent=2))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
