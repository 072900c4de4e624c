"""A real HTTP proxy process in front of a model server that injects one kind of fault, for the remote tests.

    python tests/fault_proxy.py PORT UPSTREAM FAULT [N]

FAULT: "none"; "fail" (the first N completion requests get HTTP 500); "busy" (the first N get 429 with
Retry-After: 0); "stall" (completion requests are never answered); "cut" (the first N streamed completions that
reach 5 events are cut off there, mid-answer); "plain-stream" (streamed chunks lose their logprobs, like a server
that cannot stream them). /v1/models always passes through.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

PORT, UPSTREAM, FAULT = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
COUNT = int(sys.argv[4]) if len(sys.argv) > 4 else 1
faults_left = COUNT
lock = threading.Lock()
client = httpx.Client(timeout=300)


def take_fault() -> bool:
    global faults_left
    with lock:
        if faults_left > 0:
            faults_left -= 1
            return True
        return False


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._forward(b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.endswith("/completions"):
            if FAULT == "stall":
                time.sleep(3600)
            if FAULT in ("fail", "busy") and take_fault():
                status, extra = (500, {}) if FAULT == "fail" else (429, {"Retry-After": "0"})
                self._reply(status, b'{"error": {"message": "injected fault"}}', extra)
                return
        self._forward(body)

    def _reply(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
        request = client.build_request(self.command, UPSTREAM + self.path, content=body or None, headers=headers)
        response = client.send(request, stream=True)
        streamed = response.headers.get("content-type", "").startswith("text/event-stream")
        self.send_response(response.status_code)
        self.send_header("Content-Type", response.headers.get("content-type", "application/json"))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = 0
        parts = response.iter_lines() if streamed and FAULT == "plain-stream" else response.iter_bytes()
        for part in parts:
            if isinstance(part, str):
                part = (_without_logprobs(part) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            events += part.count(b"data:")
            if streamed and FAULT == "cut" and events >= 5 and take_fault():
                response.close()
                self.close_connection = True
                self.connection.shutdown(2)  # mid-answer, without the closing chunk: a broken stream
                return
        response.close()
        self.wfile.write(b"0\r\n\r\n")


def _without_logprobs(line: str) -> str:
    if not line.startswith("data: {"):
        return line
    chunk = json.loads(line[6:])
    for choice in chunk.get("choices") or []:
        choice["logprobs"] = None
    return "data: " + json.dumps(chunk)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
