"""Start a real `nudging serve` process on a free port, for tests and the load test."""

from __future__ import annotations

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


def start_server(base: str | None, nudger: str | None, *extra: str, wait_s: float = 180) -> tuple[subprocess.Popen, str]:
    """A `nudging serve` process on a free loopback port, once /health answers; returns (process, base url).

    base/nudger None: the demo pair."""
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads could fill up and block the server
    models = (["--base", base] if base else []) + (["--nudger", nudger] if nudger else [])
    process = subprocess.Popen(
        [sys.executable, "-m", "nudging.cli", "serve", *models, "--port", str(port), "--max-tokens-limit", "2000",
         *extra],
        stdout=subprocess.DEVNULL, stderr=log, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start in time")
