"""Start llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on a GGUF, for tests."""

from __future__ import annotations

import subprocess
import sys

from servers import free_port, launch


def start_llama_server(gguf: str, alias: str, *extra: str, wait_s: float = 120) -> tuple[subprocess.Popen, str]:
    """A llama-cpp-python server for one model on a free loopback port; returns (process, base url with /v1)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", alias, "--host",
               "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false", *extra]
    return launch(command, url + "/models", "llama-cpp-python server", wait_s), url
