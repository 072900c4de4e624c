"""`nudging serve` as a real server process on tiny models, spoken to with the official openai client; and the app
in this process (fastapi's TestClient, no socket) for the status of each kind of error and the OpenAPI document."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import torch
from fastapi.testclient import TestClient

from nudging import LocalModel, Nudger, models, prompts
from nudging.backends.remote.client import ClientSettings
from nudging.errors import InvalidArgumentError, NudgingError, PromptTooLongError, RemoteError
from nudging.serve.app import create_app
from nudging.serve.errors import STATUSES, TooManyRequests, UnknownModel
from nudging.serve.serving import ServerSettings, Service
from nudging.text import Span
from servers import start_server

KEY = "test-key"


@pytest.fixture(scope="module")
def server(tiny_folders):
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--api-key", KEY, "--max-concurrency", "2", "--max-queue", "2")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local(tiny_folders):
    """The same pair in this process, to check the server's answers against the Python API."""
    base = LocalModel(*models.load(tiny_folders["base"], "auto", "cpu"), name="base")
    nudger = LocalModel(*models.load(tiny_folders["nudger"], "auto", "cpu"), name="nudger")
    return Nudger(base, nudger)


def health(server: str) -> dict:
    return httpx.get(server + "/health", timeout=10).json()


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["nudging"]
    assert health(server)["status"] == "ok"


def test_chat_matches_the_python_api(client, local):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The cat reads"}]
    response = client.chat.completions.create(model="nudging", messages=messages, max_tokens=40,
                                              extra_body={"gamma": 0.4})
    expected = local.generate(base_prompt=prompts.base_prompt_for(messages),
                              nudger_prompt=prompts.chat_prompt_for(local.nudger.tokenizer, messages),
                              gamma=0.4, max_new_tokens=40)
    assert response.choices[0].message.content == expected.text
    assert response.choices[0].finish_reason == ("length" if expected.stop_reason == "length" else "stop")
    info = response.model_extra["nudging"]
    assert [(s["text"], s["source"]) for s in info["spans"]] == [(s.text, s.source) for s in expected.spans]
    assert info["stop_reason"] == expected.stop_reason
    assert response.usage.completion_tokens == local.base.count_tokens(expected.text)
    assert response.usage.prompt_tokens == len(local.base.tokenize(prompts.base_prompt_for(messages)))


@pytest.mark.parametrize("settings, other", [
    ({"rule": "margin", "gamma": 0.5, "max_nudged_fraction": 0.2}, {}),  # other: the server's own settings
    ({"rule": "window", "gamma": 0.5, "window": 2}, {"rule": "window", "gamma": 0.5, "window": 1}),
])
def test_a_request_brings_its_own_rule_and_cap(client, local, settings, other):
    response = client.completions.create(model="nudging", prompt="The dog sees", max_tokens=30, extra_body=settings)
    expected = local.generate(base_prompt="The dog sees", nudger_prompt="The dog sees", max_new_tokens=30, **settings)
    assert response.choices[0].text == expected.text
    assert response.model_extra["nudging"]["stop_reason"] == expected.stop_reason
    different = local.generate(base_prompt="The dog sees", nudger_prompt="The dog sees", max_new_tokens=30, **other)
    assert different.text != expected.text  # the request's settings were used


def test_completion_and_base_only(client, local):
    response = client.completions.create(model="nudging", prompt="The dog sees", max_tokens=24)
    expected = local.generate(base_prompt="The dog sees", nudger_prompt="The dog sees", max_new_tokens=24)
    assert response.choices[0].text == expected.text
    plain = client.completions.create(model="nudging", prompt="The dog sees", max_tokens=24,
                                      extra_body={"nudging": False})
    assert {s["source"] for s in plain.model_extra["nudging"]["spans"]} <= {"base"}
    alone = local.generate(base_prompt="The dog sees", nudger_prompt="", mode="base", max_new_tokens=24)
    assert plain.choices[0].text == alone.text


@pytest.mark.parametrize("chat", [True, False])
def test_streaming_gives_the_same_text_and_ends_with_stats(client, chat):
    kwargs = {"model": "nudging", "max_tokens": 30, "stream_options": {"include_usage": True}}
    if chat:
        whole = client.chat.completions.create(messages=[{"role": "user", "content": "A bird"}], **kwargs)
        stream = client.chat.completions.create(messages=[{"role": "user", "content": "A bird"}], stream=True, **kwargs)
    else:
        whole = client.completions.create(prompt="A bird", **kwargs)
        stream = client.completions.create(prompt="A bird", stream=True, **kwargs)
    chunks = list(stream)
    pieces = [(c.choices[0].delta.content if chat else c.choices[0].text) for c in chunks if c.choices]
    text = "".join(p for p in pieces if p)
    assert text == (whole.choices[0].message.content if chat else whole.choices[0].text)
    sources = [c.model_extra["nudging"]["source"] for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert set(sources) <= {"base", "nudger"} and sources
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.model_extra["nudging"]["stats"]["total_words"] >= 1
    # the live share of nudged words: the last piece's is the answer's
    shares = [c.model_extra["nudging"]["nudged_share"] for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert shares[-1] == pytest.approx(last.model_extra["nudging"]["stats"]["nudged_word_fraction"])
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_stop_string_cuts_the_answer(client):
    full = client.completions.create(model="nudging", prompt="The cat reads", max_tokens=40,
                                     extra_body={"nudging": False}).choices[0].text
    assert len(full) > 6
    stop = full[3:6]
    cut = full[: full.index(stop)]
    for stream in (False, True):
        response = client.completions.create(model="nudging", prompt="The cat reads", max_tokens=40, stop=[stop],
                                             stream=stream, extra_body={"nudging": False})
        if stream:
            chunks = list(response)
            assert "".join(c.choices[0].text for c in chunks if c.choices) == cut
            assert chunks[-1].choices[0].finish_reason == "stop"
        else:
            assert response.choices[0].text == cut and response.choices[0].finish_reason == "stop"
            info = response.model_extra["nudging"]
            assert info["stop_reason"] == "stop_string" and "".join(s["text"] for s in info["spans"]) == cut


def test_wrong_or_missing_key_is_401(server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0).models.list()
    response = httpx.get(server + "/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("body, status, code", [
    ('{"prompt": "x", "gamma": 2}', 422, "invalid_value"),
    ('{"prompt": "x", "rule": "top2"}', 422, "invalid_value"),
    ('{"prompt": "x", "max_nudged_fraction": 1.5}', 422, "invalid_value"),
    ('{"prompt": "x", "max_tokens": 0}', 422, "invalid_value"),
    ('{"prompt": "x", "max_tokens": 5000}', 422, "invalid_value"),
    ('{"prompt": ["a", "b"]}', 422, "invalid_value"),
    ('{"prompt": "x", "n": 2}', 422, "invalid_value"),
    ('{"max_tokens": 3}', 422, "invalid_value"),
    ('{"prompt": "x", "model": "gpt-9"}', 404, "model_not_found"),
    ('{"prompt": "x", "logprobs": 1}', 422, "unsupported_parameter"),
    ('{"prompt": "x", "logprobs": 21}', 422, "invalid_value"),
    ('{"prompt": "x", "echo": true, "nudging": false, "stream": true}', 422, "unsupported_parameter"),
    ('{"prompt": ', 400, "invalid_json"),
    ('["a list"]', 400, "invalid_body"),
    ('prompt=hi', 400, "invalid_json"),
    ('{"prompt": "' + "word " * 4000 + '"}', 400, "context_length_exceeded"),
])
def test_bad_requests_get_openai_style_errors(server, body, status, code):
    response = httpx.post(server + "/v1/completions", content=body,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    assert health(server)["status"] == "ok"


def test_chat_errors(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    last_not_user = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    response = httpx.post(server + "/v1/chat/completions", json=last_not_user, headers=headers, timeout=30)
    assert response.status_code == 422 and "last message" in response.json()["error"]["message"]
    big = httpx.post(server + "/v1/chat/completions", content=b"x" * 1_100_000,
                     headers={**headers, "Content-Type": "application/json"}, timeout=30)
    assert big.status_code == 413
    chunked = httpx.post(server + "/v1/chat/completions", content=iter([b'{"messages": []}']),
                         headers={**headers, "Content-Type": "application/json"}, timeout=30)
    assert chunked.status_code == 411 and chunked.json()["error"]["code"] == "length_required"


def test_a_client_that_leaves_mid_stream_stops_its_generation(server):
    before = health(server)["stopped_by_disconnect"]
    body = {"prompt": "The cat reads", "max_tokens": 2000, "stream": True, "nudging": False, "stop": None}
    with httpx.stream("POST", server + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and health(server)["stopped_by_disconnect"] == before:
        time.sleep(0.1)
    state = health(server)
    assert state["stopped_by_disconnect"] == before + 1
    assert state["running"] == 0


def test_requests_over_the_limit_get_429_and_the_rest_finish(server):
    """2 run at once and 2 may wait: of 10 simultaneous long requests, some are refused, none is lost."""
    outcomes: list[int] = []

    def ask() -> None:
        body = {"prompt": "The cat reads", "max_tokens": 600, "nudging": False}
        response = httpx.post(server + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                              timeout=300)
        outcomes.append(response.status_code)
        if response.status_code == 200:
            assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 10 and set(outcomes) <= {200, 429}
    assert outcomes.count(429) >= 1 and 1 <= outcomes.count(200) <= 10
    assert health(server)["running"] == 0


def test_chat_page_is_served(server):
    page = httpx.get(server + "/", timeout=10)
    assert page.status_code == 200 and "/v1/chat/completions" in page.text and "nudger" in page.text


def test_port_in_use_is_a_clear_error(tiny_folders, server):
    port = server.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "nudging.cli", "serve", "--base", tiny_folders["base"], "--port", port],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "choose another --port" in done.stderr


def test_completion_json_shape(server):
    response = httpx.post(server + "/v1/completions", json={"prompt": "Hi", "max_tokens": 5},
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert response["object"] == "text_completion" and response["id"].startswith("cmpl-")
    assert set(response["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    json.dumps(response["nudging"])


def test_logprobs_and_echo_from_a_single_model_server(tiny_folders, local):
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--mode", "base")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        prompt = "The cat reads"
        scored = client.completions.create(model="nudging", prompt=prompt, max_tokens=8, logprobs=1, echo=True)
        plain = client.completions.create(model="nudging", prompt=prompt, max_tokens=8)
        only_new = client.completions.create(model="nudging", prompt=prompt, max_tokens=8, logprobs=1)
    finally:
        process.terminate()
        process.wait(timeout=30)
    logprobs = scored.choices[0].logprobs
    assert scored.choices[0].text == prompt + plain.choices[0].text == "".join(logprobs.tokens)
    assert only_new.choices[0].text == plain.choices[0].text == "".join(only_new.choices[0].logprobs.tokens)
    ids = local.base.tokenize(prompt)
    with torch.inference_mode():
        reference = torch.log_softmax(local.base.model(torch.tensor([ids])).logits[0].float(), dim=-1)
    assert logprobs.token_logprobs[0] is None and len(logprobs.tokens) == len(ids) + 8
    for position in range(1, len(ids)):
        assert logprobs.token_logprobs[position] == pytest.approx(float(reference[position - 1, ids[position]]), abs=1e-4)
    for position in range(len(ids), len(logprobs.tokens)):  # greedy: the written token is the top-1
        assert logprobs.token_logprobs[position] == pytest.approx(max(logprobs.top_logprobs[position].values()))
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    # the same tokens; values agree to float rounding (with echo the first one is read from the prompt's pass)
    assert only_new.choices[0].logprobs.tokens == logprobs.tokens[len(ids):]
    assert only_new.choices[0].logprobs.token_logprobs == pytest.approx(logprobs.token_logprobs[len(ids):], abs=1e-5)


def test_load_test_script_passes_on_a_small_load():
    done = subprocess.run([sys.executable, "scripts/load_test.py", "--requests", "24", "--clients", "6",
                           "--max-concurrency", "2", "--max-tokens", "16"],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "finished 24" in done.stdout and "wrong answers 0" in done.stdout and done.stdout.rstrip().endswith("PASS")


@pytest.mark.parametrize("argv, message", [
    (["--max-concurrency", "0"], "--max-concurrency must be at least 1"),
    (["--max-queue", "-1"], "--max-queue must be at least 0"),
    (["--port", "0"], "--port must be at least 1"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1"),
])
def test_bad_serve_options_are_one_clear_line(capsys, argv, message):
    from nudging.cli import main

    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nudging: error: ") and message in err


# --- the app in this process (no socket): each error type's status, and the OpenAPI document -------------------
@contextmanager
def in_process(pair: Nudger, mode: str = "nudging", replicas: int = 1, queue: int = 16):
    """(service, client) for an app built with create_app around `pair`; the client calls it in this process."""
    service = Service(pair, mode, replicas=replicas, queue=queue)
    with TestClient(create_app(service, ServerSettings()), raise_server_exceptions=False) as client:
        yield service, client


def failing(error: BaseException, pieces: tuple[str, ...] = ()):
    """A generate for a lane that writes `pieces` and then raises `error`."""
    def generate(*, on_span=None, **_):
        for piece in pieces:
            on_span(Span(piece, "base"))
        raise error
    return generate


def events(text: str) -> list:
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:])
            for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("error, status, code", [
    (InvalidArgumentError("lookahead must be at most 256"), 400, "invalid_value"),
    (PromptTooLongError("the base prompt is too long"), 400, "context_length_exceeded"),
    (NudgingError("mode 'x' needs a base model"), 400, "invalid_request"),
    (RemoteError("the model server at http://127.0.0.1:9/v1 gave up after 1 tries"), 502, "upstream_error"),
    (TooManyRequests("busy"), 429, "too_many_requests"),
    (UnknownModel("no such model"), 404, "model_not_found"),
])
def test_each_error_type_gets_its_status_from_the_table(local, error, status, code):
    with in_process(local) as (service, client):
        service.pool.lanes[0].generate = failing(error)
        for stream in (False, True):  # before the first piece a stream still gets its status line
            response = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4, "stream": stream})
            assert response.status_code == status, response.text
            body = response.json()["error"]
            assert body["code"] == code and body["message"] == str(error) and "request_id" not in body
            assert STATUSES[type(error)].status == status


def test_an_unexpected_error_is_500_with_a_request_id_and_no_internals(local, caplog):
    with in_process(local) as (service, client):
        service.pool.lanes[0].generate = failing(RuntimeError("secret: /srv/weights token=abc"))
        with caplog.at_level(logging.ERROR, logger="nudging.serve"):
            response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "internal_error"
        assert error["request_id"].startswith("req-") and error["request_id"] in error["message"]
        assert "secret" not in response.text and "RuntimeError" not in response.text
        logged = [r for r in caplog.records if error["request_id"] in r.getMessage()]
        assert logged and logged[0].exc_info[0] is RuntimeError  # the server's log has the traceback
        assert client.get("/health").json()["running"] == 0


@pytest.mark.parametrize("error, code", [(RuntimeError("secret internals"), "internal_error"),
                                         (RemoteError("the base's server broke off"), "upstream_error")])
def test_an_error_after_the_stream_began_is_one_event_then_done(local, error, code):
    with in_process(local) as (service, client):
        service.pool.lanes[0].generate = failing(error, pieces=("Hello", " world"))
        response = client.post("/v1/completions", json={"prompt": "Hi", "stream": True, "nudging": False})
    assert response.status_code == 200
    sent = events(response.text)
    assert "".join(e["choices"][0]["text"] for e in sent[:-2]) == "Hello world"
    assert sent[-2]["error"]["code"] == code and sent[-1] == "[DONE]"
    assert "secret" not in response.text
    assert ("request_id" in sent[-2]["error"]) == (code == "internal_error")


def test_an_unknown_model_is_404_on_every_route_that_names_one(local):
    with in_process(local) as (_, client):
        for path, body in [("/v1/completions", {"prompt": "Hi"}), ("/tokenize", {"prompt": "Hi"}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})]:
            response = client.post(path, json={**body, "model": "gpt-9"})
            assert response.status_code == 404 and response.json()["error"]["param"] == "model", path


def test_a_request_beyond_the_running_and_waiting_places_is_429(local):
    with in_process(local, replicas=1, queue=0) as (service, client):
        lane = service.pool.lanes[0]
        gate, generate = threading.Event(), lane.generate

        def held(**options):
            gate.wait(30)
            return generate(**options)

        lane.generate = held
        first: list = []
        thread = threading.Thread(target=lambda: first.append(
            client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})))
        thread.start()
        deadline = time.monotonic() + 20
        while service.running == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})
        gate.set()
        thread.join(30)
        deadline = time.monotonic() + 10
        while service.admitted and time.monotonic() < deadline:  # the worker thread ends just after the answer
            time.sleep(0.01)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "too_many_requests"
    assert first[0].status_code == 200 and service.admitted == service.running == 0


def test_a_remote_base_whose_server_is_gone_is_502(tiny_folders):
    upstream, url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--mode", "base")
    try:
        pair = Nudger.from_pretrained(f"openai:nudging@{url}/v1", tiny_folders["nudger"],
                                      base_tokenizer=tiny_folders["base"],
                                      client_settings=ClientSettings(timeout=2, retries=0, backoff=0.01))
    finally:
        upstream.kill()
        upstream.wait(timeout=30)
    with in_process(pair) as (_, client):
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                                 "max_tokens": 8, "stream": stream})
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert error["type"] == "server_error" and error["code"] == "upstream_error" and error["message"]


ROUTE_STATUSES = {
    ("/v1/completions", "post"): {200, 400, 401, 404, 411, 413, 422, 429, 500, 502},
    ("/v1/chat/completions", "post"): {200, 400, 401, 404, 411, 413, 422, 429, 500, 502},
    ("/tokenize", "post"): {200, 400, 401, 404, 411, 413, 422, 500},
    ("/v1/models", "get"): {200, 400, 401, 413, 500},
    ("/health", "get"): {200, 500},
    ("/", "get"): {200, 500},
}


def test_the_openapi_document_lists_every_status_with_the_error_body(local):
    with in_process(local) as (service, client):
        schema = create_app(service, ServerSettings()).openapi()
        assert client.get("/openapi.json").json() == schema
    operations = {(path, method): operation for path, methods in schema["paths"].items()
                  for method, operation in methods.items()}
    assert set(operations) == set(ROUTE_STATUSES)
    for route, statuses in ROUTE_STATUSES.items():
        responses = operations[route]["responses"]
        assert {int(status) for status in responses} == statuses, route
        for status in statuses - {200}:
            assert responses[str(status)]["content"]["application/json"]["schema"] == \
                {"$ref": "#/components/schemas/ErrorBody"}, (route, status)
    # every status the table gives is documented on the generation routes, but 499 (nobody is left to read it)
    # and 405 (a method no route takes has no operation in the document to list it under)
    assert {row.status for row in STATUSES.values()} - {405, 499} <= ROUTE_STATUSES[("/v1/completions", "post")]
    completion = operations[("/v1/completions", "post")]["responses"]["200"]["content"]
    assert completion["application/json"]["schema"] == {"$ref": "#/components/schemas/CompletionResponse"}
    data = completion["text/event-stream"]["schema"]["properties"]["data"]["anyOf"]
    assert data[0] == {"const": "[DONE]"} and data[1]["contentSchema"]["anyOf"] == [
        {"$ref": "#/components/schemas/CompletionChunk"}, {"$ref": "#/components/schemas/ErrorBody"}]
    assert {"CompletionChunk", "ChatCompletionChunk", "PieceInfo"} <= set(schema["components"]["schemas"])
    budget = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]["max_completion_tokens"]
    assert budget["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": ServerSettings().max_tokens_limit}
    page = operations[("/", "get")]["responses"]["200"]["content"]
    assert set(page) == {"text/html"}
    error = schema["components"]["schemas"]["ErrorDetail"]["properties"]
    assert {"message", "type", "param", "code", "request_id"} <= set(error)


def _outside(number: dict, field: str) -> list[float]:
    """Values just outside each bound the schema gives a number field."""
    step = 1 if number["type"] == "integer" else 1e-9
    values = [number["exclusiveMinimum"]] if "exclusiveMinimum" in number else []
    values += [number["exclusiveMaximum"]] if "exclusiveMaximum" in number else []
    values += [number["minimum"] - step] if "minimum" in number else []
    values += [number["maximum"] + step] if "maximum" in number else []
    assert values, field
    return values


def _inside(number: dict) -> list[float]:
    low = number.get("minimum", number.get("exclusiveMinimum"))
    high = number.get("maximum", number.get("exclusiveMaximum"))
    return [value for value, exclusive in ((low, "exclusiveMinimum" in number), (high, "exclusiveMaximum" in number))
            if not exclusive]


@pytest.mark.parametrize("field", ["gamma", "lookahead", "max_tokens", "temperature", "top_p", "seed", "agreement_k",
                                   "window", "max_nudged_fraction"])
def test_the_documented_ranges_are_the_ones_the_server_checks(server, field):
    """Each range the OpenAPI document gives (from nudging.config) is what the server accepts: a value just
    outside a bound is a 422, a bound that is included is answered."""
    document = httpx.get(server + "/openapi.json", timeout=10).json()
    number = document["components"]["schemas"]["CompletionRequest"]["properties"][field]["anyOf"][0]
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"prompt": "The cat reads", "max_tokens": 1, "temperature": 0.5}
    for value in _outside(number, field):
        response = httpx.post(server + "/v1/completions", json={**body, field: value}, headers=headers, timeout=60)
        assert response.status_code == 422 and response.json()["error"]["param"] == field, (value, response.text)
    for value in _inside(number):
        response = httpx.post(server + "/v1/completions", json={**body, field: value}, headers=headers, timeout=60)
        assert response.status_code == 200, (value, response.text)
