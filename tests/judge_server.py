"""A small OpenAI-compatible chat server for judge tests, run as its own process.

It grades like a strict rule: 'correct' when the gold answer's text appears in the response, and rates every
open-ended response 4. It prints its port on the first line and counts the requests it answers.
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

answered = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/stats":
            self._send(200, {"answered": answered})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        global answered
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if request.get("model") != "test-judge":
            self._send(400, {"error": {"message": f"unknown model {request.get('model')}"}})
            return
        prompt = request["messages"][-1]["content"]
        gold = re.search(r"Gold answer: (.*)\n", prompt)
        if gold:
            response = prompt.split("Response:\n", 1)[1].rsplit("\n\nIs the response", 1)[0]
            answer = gold.group(1).split(". ", 1)[-1].lower()
            reply = "correct" if answer in response.lower() else "incorrect"
        else:
            reply = "4"
        answered += 1
        self._send(200, {"id": "judge", "object": "chat.completion", "model": request["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": reply}}]})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.timeout = 1
    server.serve_forever()
