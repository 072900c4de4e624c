"""Start llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on a GGUF, for tests."""

from __future__ import annotations

import subprocess
import sys

from servers import free_port, launch

# The servers' llama.cpp settings, also used by the in-process reference (llama_reference.py). n_batch 1: with the
# default 512, a position's logits depend on the batch it was computed in (measured on gemma-3-270m: the top-1
# probability moved by up to 0.02, logits by up to 1.0), and the server keeps the longest cached prefix of each
# new prompt, including tokens a cut stream went on generating, so the numbers would depend on timing. One token
# per batch makes every position's numbers the same whatever was evaluated before.
LLAMA_SETTINGS = {"n_ctx": 2048, "n_batch": 1, "n_threads": 2, "n_threads_batch": 2}


def start_llama_server(gguf: str, alias: str, *extra: str, wait_s: float = 120) -> tuple[subprocess.Popen, str]:
    """A llama-cpp-python server for one model on a free loopback port; returns (process, base url with /v1)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    settings = [arg for name, value in LLAMA_SETTINGS.items() for arg in (f"--{name}", str(value))]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", alias, "--host",
               "127.0.0.1", "--port", str(port), *settings, "--verbose", "false", *extra]
    return launch(command, url + "/models", "llama-cpp-python server", wait_s), url
