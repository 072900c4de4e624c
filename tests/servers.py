"""Start a real `nudging serve` process on a free port, for tests and the load test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def quiet_threads() -> dict[str, str]:
    """The environment for a server process that shares the CPU cores with others: OpenMP threads sleep when
    idle instead of spinning (an idle server otherwise slows a busy one several times)."""
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def launch(command: list[str], ready_url: str, what: str, wait_s: float) -> subprocess.Popen:
    """Start a server process and wait until GET ready_url answers 200; its stderr goes into the error if it
    exits first."""
    log = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads could fill up and block the server
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True, env=quiet_threads())
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{what} exited: {log.read()[-3000:]}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{what} did not start in time")


def start_server(base: str | None, nudger: str | None, *extra: str, wait_s: float = 180) -> tuple[subprocess.Popen, str]:
    """A `nudging serve` process on a free loopback port, once /health answers; returns (process, base url).

    base/nudger None: the demo pair."""
    port = free_port()
    models = (["--base", base] if base else []) + (["--nudger", nudger] if nudger else [])
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "nudging.cli", "serve", *models, "--port", str(port), "--max-tokens-limit", "2000",
               *extra]
    return launch(command, url + "/health", "server", wait_s), url
