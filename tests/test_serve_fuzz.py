"""A schema-driven fuzz of a real `nudging serve` process on tiny models: schemathesis reads the server's own
OpenAPI document, sends requests made from it (valid ones and broken ones), and checks that none gets a server
error and that every status, content type and body (JSON, or each event of a stream) is one the document
describes. Derandomized, so a run is the same every time; the long run is behind the schema_fuzz_long marker:

    PYTHONPATH=$PWD python -m pytest -q -s -m schema_fuzz_long tests/test_serve_fuzz.py
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Iterator

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance, negative_data_rejection, not_a_server_error, response_schema_conformance,
    status_code_conformance, unsupported_method,
)

from servers import start_server

TOKENS = 8  # the fuzzed server's answer budget and limit: a larger max_tokens is refused before any decoding
EXAMPLES = 30  # per operation and generation mode (valid, broken), besides the coverage phase's boundary cases
LONG_EXAMPLES = 2000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, unsupported_method]

sent: Counter[str] = Counter()  # the statuses the fuzz got, per route


@pytest.fixture(scope="module")
def fuzz_server(tiny_folders) -> Iterator[str]:
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--max-tokens", str(TOKENS),
                                "--max-tokens-limit", str(TOKENS))
    yield url
    process.terminate()
    process.wait(timeout=30)


def fuzzing(url: str, examples: int) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    schema.config.seed = 0
    schema.config.generation.update(max_examples=examples, deterministic=True,
                                    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    schema.config.update(request_timeout=60, continue_on_failure=True)
    schema.config.output.sanitization.update(enabled=False)  # it would hide max_tokens in a failure's curl line
    return schema


def reported(schema: schemathesis.BaseSchema) -> Iterator[schemathesis.BaseSchema]:
    """The schema to fuzz; afterwards, what was sent (shown with pytest -s)."""
    sent.clear()
    started = time.monotonic()
    yield schema
    lines = "".join(f"\n  {count:6d}  {what}" for what, count in sorted(sent.items()))
    print(f"\nschema fuzz: {sum(sent.values())} requests in {time.monotonic() - started:.0f} s{lines}")


@pytest.fixture(scope="module")
def api(fuzz_server):
    yield from reported(fuzzing(fuzz_server, EXAMPLES))


@pytest.fixture(scope="module")
def api_long(fuzz_server):
    yield from reported(fuzzing(fuzz_server, LONG_EXAMPLES))




def check(case) -> None:
    response = case.call_and_validate(checks=CHECKS)
    method = case.method.upper() if case.method.lower() == case.operation.method.lower() else "another method"
    sent[f"{method} {case.operation.path} {response.status_code}"] += 1


fuzzed = schemathesis.pytest.from_fixture("api")
fuzzed_long = schemathesis.pytest.from_fixture("api_long")


@fuzzed.parametrize()
def test_every_answer_is_one_the_schema_describes(case):
    check(case)


@pytest.mark.schema_fuzz_long
@fuzzed_long.parametrize()
def test_every_answer_is_one_the_schema_describes_long(case):
    check(case)


# --- what the fuzz found, kept as plain cases ---------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1e-300, 5e-324])
def test_a_temperature_too_small_to_divide_by_samples_as_greedy(fuzz_server, temperature):
    body = {"prompt": "The cat reads", "nudging": False, "seed": 1}
    greedy = httpx.post(fuzz_server + "/v1/completions", json=body, timeout=60)
    tiny = httpx.post(fuzz_server + "/v1/completions", json={**body, "temperature": temperature}, timeout=60)
    assert tiny.status_code == greedy.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


def test_max_tokens_over_the_limit_is_refused_even_beside_max_completion_tokens(fuzz_server):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 1, "max_tokens": TOKENS + 1}
    response = httpx.post(fuzz_server + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 422 and response.json()["error"]["param"] == "max_tokens", response.text


@pytest.mark.parametrize("method, path, content, status, code", [
    ("POST", "/tokenize", b'{"prompt": "\xff\xfe"}', 400, "invalid_json"),  # not UTF-8
    ("GET", "/v1/nowhere", None, 404, "unknown_url"),
    ("DELETE", "/v1/completions", None, 405, "method_not_allowed"),
])
def test_the_routers_own_errors_get_openai_style_bodies(fuzz_server, method, path, content, status, code):
    response = httpx.request(method, fuzz_server + path, content=content, timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
    assert status != 405 or response.headers["allow"] == "POST"


TEXT_PART = {"role": "user", "content": [{"type": "text", "text": 3}]}
# Bad inputs that were 500s before issue 18 (one per class), and the inputs next to each.
FORMER_FAILURES = [
    ("/v1/completions", {"prompt": ""}), ("/v1/completions", {"prompt": [""]}), ("/tokenize", {"prompt": "a\ud800"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\udc00"}]}),
    ("/v1/completions", {"prompt": "a", "seed": 2**64}), ("/v1/completions", {"prompt": "a", "seed": -2**63 - 1}),
    ("/v1/completions", {"prompt": "a", "top_p": 1e-300, "temperature": 1}),
    ("/v1/chat/completions", {"messages": [TEXT_PART]}),
    ("/v1/completions", {"prompt": " "}), ("/tokenize", {"prompt": ""}),
    ("/v1/completions", {"prompt": "a", "user": "\ud800"}),
    ("/v1/completions", {"prompt": "a", "seed": 2**63 - 1}),
    ("/v1/completions", {"prompt": "a", "seed": -2**63, "temperature": 1}),
    ("/v1/completions", {"prompt": "a", "top_p": 1e-300}),
    ("/v1/completions", {"prompt": "a", "top_p": 1e-40, "temperature": 1}),
    ("/v1/chat/completions", {"messages": [{**TEXT_PART, "content": [{"type": "text"}]}]}),
]


@pytest.mark.parametrize("path, body", FORMER_FAILURES)
def test_former_server_errors_get_an_answer_or_a_4xx(fuzz_server, path, body):
    response = httpx.post(fuzz_server + path, content=json.dumps(body), timeout=60,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 200 or 400 <= response.status_code < 500, (body, response.text)
    if response.status_code != 200:
        assert response.json()["error"]["message"], response.text
