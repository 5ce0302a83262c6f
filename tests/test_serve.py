"""The OpenAI-compatible server end to end: real SmolLM2 engine, uvicorn in a thread, the official client.

Also unit tests of the pieces that need no server (tool prompts per chat format, call parsing).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from serve_helpers import API_KEY, MODEL_NAME, running_server, shared_model, wait_for

from herd.serve.metrics import Metrics, parse_metrics
from herd.serve.protocol import ChatCompletionRequest, OpenAIError, parse_request
from herd.serve.tools import ChoiceParser, ChoiceResult, JsonEnd, build_chat_prompt

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time in a timezone",
                 "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server():
    loaded = shared_model()
    with running_server(loaded, api_key=API_KEY, kv_cache_bytes=256 << 20, max_num_seqs=32) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.api_url, api_key=API_KEY, max_retries=0, timeout=120)


def post(server, path, body, **kw):
    return httpx.post(server.base_url + path, content=body if isinstance(body, bytes) else json.dumps(body),
                      headers={**server.headers(), "Content-Type": "application/json"}, timeout=120, **kw)


def assert_openai_error(resp, status, code=None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# ------------------------------------------------------------------------------ basic routes


def test_models_health_and_page(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    assert httpx.get(server.base_url + "/health").status_code == 200  # no key needed
    page = httpx.get(server.base_url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/chat/completions" in page.text and "getReader" in page.text
    assert_openai_error(httpx.get(server.base_url + "/v1/nothing-here", headers=server.headers()), 404)


def test_chat_plain(server, client):
    resp = client.chat.completions.create(model=MODEL_NAME, messages=ASK, max_tokens=12, temperature=0)
    assert resp.object == "chat.completion" and resp.model == MODEL_NAME
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    prompt = server.loaded.chat_format.encode_dialog(ASK).tokens
    assert resp.usage.prompt_tokens == len(prompt)
    assert 0 < resp.usage.completion_tokens <= 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_stream_joins_to_nonstream_text(server, client):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colors."}]
    full = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=20, temperature=0)
    stream = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, finish, usage, roles = [], None, None, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert roles == ["assistant"]
    assert len(pieces) > 1
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_n_choices_seeded(server, client):
    kw = dict(model=MODEL_NAME, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=8,
              temperature=1.0, n=3, seed=1234)
    first = client.chat.completions.create(**kw)
    second = client.chat.completions.create(**kw)
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in second.choices]
    assert len(set(texts)) > 1  # three independent samples
    assert 3 <= first.usage.completion_tokens <= 3 * 8  # counted over all choices


def test_logprobs(server, client):
    resp = client.chat.completions.create(model=MODEL_NAME, messages=ASK, max_tokens=6, temperature=0,
                                          logprobs=True, top_logprobs=3)
    entries = resp.choices[0].logprobs.content
    assert len(entries) == resp.usage.completion_tokens
    for e in entries:
        assert e.logprob <= 0
        assert len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token  # greedy picks the most likely token
        assert abs(e.top_logprobs[0].logprob - e.logprob) < 1e-4
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
        # `bytes` are the token's UTF-8 bytes and `token` their text (U+FFFD for a partial character)
        for t in (e, *e.top_logprobs):
            assert t.bytes and bytes(t.bytes).decode("utf-8", errors="replace") == t.token, t
    # the chosen tokens' bytes, joined, are the reply (a character split across tokens included)
    joined = b"".join(bytes(e.bytes) for e in entries).decode("utf-8")
    assert resp.choices[0].message.content and joined.startswith(resp.choices[0].message.content)


# ----------------------------------------------------------------------------------- tools


def test_tool_call_round_trip(server, client):
    messages = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    resp = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], max_tokens=40, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args, dict)
    assert calls[0].id

    # Streaming the same request gives the same call, in pieces
    stream = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], max_tokens=40, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True,
    )
    name, arguments, finish = None, "", None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                assert tc.index == 0
                name = tc.function.name or name
                arguments += tc.function.arguments or ""
            finish = c.finish_reason or finish
    assert (name, arguments, finish) == ("get_weather", calls[0].function.arguments, "tool_calls")

    # Send the call and its result back: the model answers in text
    followup = messages + [
        {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps({"city": "Paris", "weather": "sunny, 24 C"})},
    ]
    final = client.chat.completions.create(model=MODEL_NAME, messages=followup, tools=[WEATHER_TOOL, TIME_TOOL],
                                           max_tokens=24, temperature=0)
    print(final.choices[0])
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.usage.prompt_tokens > resp.usage.prompt_tokens  # the call and its result are in the prompt


def test_tool_choice_required_and_auto(server, client):
    resp = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[WEATHER_TOOL],
        tool_choice="required", max_tokens=30, temperature=0,
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
    auto = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[WEATHER_TOOL],
        max_tokens=40, temperature=0,
    )
    msg = auto.choices[0].message
    assert msg.content or msg.tool_calls  # the model decides; either shape is well formed
    if msg.tool_calls:
        assert auto.choices[0].finish_reason == "tool_calls"
        json.loads(msg.tool_calls[0].function.arguments)
    bad = post(server, "/v1/chat/completions", {"model": MODEL_NAME, "messages": ASK, "tools": [WEATHER_TOOL],
                                                "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert assert_openai_error(bad, 400)["param"] == "tool_choice"


# ----------------------------------------------------------------------------- completions


def test_completions(server, client):
    tok = server.loaded.tokenizer
    resp = client.completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=5, temperature=0)
    text = resp.choices[0].text
    assert resp.object == "text_completion" and text
    assert resp.usage.prompt_tokens == len(tok.encode("The capital of France is"))

    echo = client.completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=5,
                                     temperature=0, echo=True, logprobs=2)
    assert echo.choices[0].text == "The capital of France is" + text
    lp = echo.choices[0].logprobs
    n_prompt = resp.usage.prompt_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None   # nothing predicts the first token
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert all(len(t) <= 2 for t in lp.top_logprobs[1:])
    assert all(len(t) <= 2 for t in lp.top_logprobs[n_prompt:])
    assert len(lp.tokens) == n_prompt + echo.usage.completion_tokens

    ids = tok.encode("Once upon a time")
    batch = client.completions.create(model=MODEL_NAME, prompt=["The capital of France is", ids], max_tokens=4,
                                      temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == text[: len(batch.choices[0].text)]

    stream = client.completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=5,
                                       temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == text


def _reference_logprobs(model, ids):
    """log p(ids[i] | ids[:i]) for i >= 1 and the greedy token at each position, by one plain forward."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids]), torch.arange(len(ids))[None])[0].float()
    logp = torch.log_softmax(logits, -1)
    return [logp[i - 1, ids[i]].item() for i in range(1, len(ids))], logp.argmax(-1).tolist()


def test_echo_prompt_logprobs_equal_a_forward_pass_and_score(server, client):
    """lm-eval's local-completions request (echo, logprobs=1, max_tokens 0 or 1) gets real prompt logprobs."""
    tok = server.loaded.tokenizer
    ids = tok.encode("The capital of France is Paris, and the capital of Italy is Rome.")
    want, argmax = _reference_logprobs(server.loaded.model, ids)
    for max_tokens in (0, 1):
        resp = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=max_tokens, echo=True,
                                         logprobs=1, temperature=0)
        lp = resp.choices[0].logprobs
        assert len(lp.tokens) == len(ids) + max_tokens
        assert lp.token_logprobs[0] is None
        got = lp.token_logprobs[1:len(ids)]
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
        for i, top in enumerate(lp.top_logprobs[1:len(ids)], start=1):
            best_piece, best = max(top.items(), key=lambda kv: kv[1])
            assert best_piece == server.loaded.tokenizer.token_bytes(argmax[i - 1]).decode("utf-8", "replace")
            assert (abs(best - got[i - 1]) < 1e-6) == (argmax[i - 1] == ids[i])
        assert resp.choices[0].finish_reason == "length"
    # the same numbers through the engine's scoring API (context = the first 5 tokens)
    from herd.infer.engine import LLMEngine

    engine = LLMEngine(server.loaded)
    scored = engine.score(ids[:5], [ids[5:]])[0]
    assert max(abs(a - b) for a, b in zip(scored.token_logprobs, want[4:])) < 1e-4
    assert scored.greedy == all(argmax[i - 1] == ids[i] for i in range(5, len(ids)))


def test_metrics(server, client):
    client.chat.completions.create(model=MODEL_NAME, messages=ASK, max_tokens=2, temperature=0)
    resp = httpx.get(server.base_url + "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert "# TYPE herd_requests_total counter" in text
    assert "# TYPE herd_request_latency_seconds histogram" in text
    m = parse_metrics(text)
    assert m['herd_requests_total{endpoint="/v1/chat/completions",status="200"}'] >= 1
    assert m['herd_request_latency_seconds_count{endpoint="/v1/chat/completions"}'] >= 1
    assert m['herd_request_latency_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}'] >= 1
    label = f'{{model_name="{MODEL_NAME}"}}'
    assert m["herd_prompt_tokens_total" + label] > 0
    assert m["herd_generation_tokens_total" + label] > 0
    assert m["herd_kv_blocks_total" + label] == server.stats().kv_blocks_total
    for name in ("herd_num_requests_running", "herd_num_requests_waiting", "herd_kv_blocks_used"):
        assert name + label in m


# ----------------------------------------------------------------------------- concurrency


def test_sixteen_concurrent_streams(server):
    async def one(aclient, i):
        stream = await aclient.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": f"Count to {i + 3}."}], max_tokens=12,
            temperature=0.8, seed=i, stream=True,
        )
        text, finish = "", None
        async for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        return text, finish

    async def main():
        async with openai.AsyncOpenAI(base_url=server.api_url, api_key=API_KEY, max_retries=0, timeout=120) as ac:
            return await asyncio.gather(*(one(ac, i) for i in range(16)))

    results = asyncio.run(main())
    assert len(results) == 16
    assert all(finish in ("stop", "length") for _, finish in results)
    assert sum(bool(text) for text, _ in results) >= 15
    server.wait_idle(timeout=30)  # every stream's request ended and freed its KV blocks
    label = f'{{model_name="{MODEL_NAME}"}}'
    m = server.metrics()
    assert m["herd_kv_blocks_used" + label] == 0 and m["herd_num_requests_running" + label] == 0


# ---------------------------------------------------------------------------------- errors


def test_malformed_requests(server, client):
    base = {"model": MODEL_NAME, "messages": ASK, "max_tokens": 2}
    e = assert_openai_error(post(server, "/v1/chat/completions", b'{"model": "x", "messages": [}'), 400)
    assert e["type"] == "invalid_request_error"
    assert_openai_error(post(server, "/v1/chat/completions", b"[1, 2]"), 400)
    assert assert_openai_error(post(server, "/v1/chat/completions", {**base, "messages": "hello"}), 400)["param"] == "messages"
    assert assert_openai_error(post(server, "/v1/chat/completions", {**base, "n": 0}), 400)["param"] == "n"
    assert assert_openai_error(post(server, "/v1/chat/completions", {**base, "max_tokens": -5}), 400)["param"] == "max_tokens"
    assert_openai_error(post(server, "/v1/chat/completions", {**base, "temperature": "hot"}), 400)
    assert_openai_error(post(server, "/v1/chat/completions", {**base, "messages": [{"role": "user"}], "n": 1,
                                                              "stop": 5}), 400)
    assert_openai_error(post(server, "/v1/chat/completions", {"messages": [{"content": "hi"}]}), 400)
    assert_openai_error(post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": []}), 400)
    assert_openai_error(post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": [10**9]}), 400)
    assert_openai_error(post(server, "/v1/chat/completions", {**base, "model": "gpt-17"}), 404, "model_not_found")
    long_prompt = "hello " * 9000
    e = assert_openai_error(post(server, "/v1/chat/completions",
                                 {**base, "messages": [{"role": "user", "content": long_prompt}]}), 400)
    assert "context" in e["message"]
    assert_openai_error(post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": long_prompt}), 400)
    assert_openai_error(post(server, "/v1/chat/completions", {**base, "max_tokens": 10**6}), 400)

    # the official client maps them to its exception types
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-17", messages=ASK)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=ASK, max_tokens=-1)
    assert info.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_NAME, messages=ASK, n=0)
    # ...and the server keeps serving
    ok = client.chat.completions.create(model=MODEL_NAME, messages=ASK, max_tokens=2, temperature=0)
    assert ok.choices[0].message.content
    assert 'status="422"' not in httpx.get(server.base_url + "/metrics").text
    server.wait_idle()


def raw_post(server, path, text):
    """POST a JSON body written by hand (json.dumps cannot produce a lone surrogate escape)."""
    return post(server, path, text.encode("ascii"))


SURROGATE_BODIES = [
    # (path, body, the param the error must name)
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "\\udc80"}], "max_tokens": 2}',
     "messages.0.content"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "ok \\ud800 x"}]}',
     "messages.0.content"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": [{"type": "text", '
     '"text": "\\udfff"}]}]}', "messages.0.content.0.text"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"]}',
     "stop.0"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
     '"function", "function": {"name": "f", "description": "\\udc80"}}]}', "tools.0.function.description"),
    ("/v1/completions", '{"model": "%s", "prompt": "\\udc80", "max_tokens": 2}', "prompt"),
    ("/v1/completions", '{"model": "%s", "prompt": ["fine", "\\ud800"], "max_tokens": 2}', "prompt.1"),
    ("/v1/completions", '{"model": "%s", "prompt": "fine", "stop": "\\udc80", "max_tokens": 2}', "stop"),
]


@pytest.mark.parametrize("path,body,param", SURROGATE_BODIES)
def test_lone_surrogate_is_a_400(server, path, body, param):
    """Valid JSON, invalid Unicode: a lone UTF-16 surrogate cannot be encoded to UTF-8 (issue 13: it was a 500)."""
    e = assert_openai_error(raw_post(server, path, body % MODEL_NAME), 400)
    assert e["type"] == "invalid_request_error"
    assert e["param"] == param
    assert "surrogate" in e["message"]
    # a correctly paired surrogate (U+1F600) is ordinary text
    ok = raw_post(server, path, ('{"model": "%s", "prompt": "\\ud83d\\ude00", "max_tokens": 1}'
                                                 if path == "/v1/completions" else
                                                 '{"model": "%s", "messages": [{"role": "user", "content": '
                                                 '"\\ud83d\\ude00"}], "max_tokens": 1}') % MODEL_NAME)
    assert ok.status_code == 200, ok.text


BAD_INPUTS = [
    ("/v1/chat/completions", {"messages": 5}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 7}]}),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}),
    ("/v1/chat/completions", {"messages": []}),
    ("/v1/chat/completions", {"messages": ASK, "n": "two"}),
    # integer fields take integers only: not true, not 2.0 (pydantic's lax mode would coerce them)
    ("/v1/chat/completions", {"messages": ASK, "max_tokens": True}),
    ("/v1/chat/completions", {"messages": ASK, "n": 2.0}),
    ("/v1/chat/completions", {"messages": ASK, "seed": 1.5}),
    ("/v1/chat/completions", {"messages": ASK, "logprobs": True, "top_logprobs": True}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 1.0}),
    ("/v1/completions", {"prompt": "hi", "logprobs": True}),
    ("/v1/chat/completions", {"messages": ASK, "n": -1}),
    ("/v1/chat/completions", {"messages": ASK, "max_tokens": 1.5}),
    ("/v1/chat/completions", {"messages": ASK, "max_tokens": 10**30}),
    ("/v1/chat/completions", {"messages": ASK, "max_completion_tokens": 10**6}),
    ("/v1/chat/completions", {"messages": ASK, "stream": "yes please"}),
    ("/v1/chat/completions", {"messages": ASK, "temperature": -1}),
    ("/v1/chat/completions", {"messages": ASK, "top_p": 0}),
    ("/v1/chat/completions", {"messages": ASK, "top_k": -3}),
    ("/v1/chat/completions", {"messages": ASK, "seed": "abc"}),
    ("/v1/chat/completions", {"messages": ASK, "stop": [""] * 3 + [5]}),
    ("/v1/chat/completions", {"messages": ASK, "stop_token_ids": [-1]}),
    ("/v1/chat/completions", {"messages": ASK, "logprobs": True, "top_logprobs": 21}),
    ("/v1/chat/completions", {"messages": ASK, "top_logprobs": 2}),
    ("/v1/chat/completions", {"messages": ASK, "logit_bias": {"1": 5}}),
    ("/v1/chat/completions", {"messages": ASK, "tools": [{"type": "function", "function": {"name": ""}}]}),
    ("/v1/chat/completions", {"messages": ASK, "tool_choice": "sometimes"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    ("/v1/completions", {"prompt": 5}),
    ("/v1/completions", {"prompt": "hi", "n": 0}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 10**6}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": -1}),
    ("/v1/completions", {"prompt": "hi", "logprobs": 99}),
    ("/v1/completions", {"prompt": [[]]}),
    ("/v1/completions", {"prompt": [-1]}),
    ("/v1/completions", {"prompt": "hi", "suffix": "x"}),
    ("/v1/completions", {"prompt": "hi", "best_of": 3}),
    ("/v1/completions", {"prompt": "hi", "echo": "loud"}),
]


@pytest.mark.parametrize("path,body", BAD_INPUTS, ids=[f"{p.rsplit('/', 1)[1]}-{json.dumps(b)[:60]}" for p, b in BAD_INPUTS])
def test_bad_input_is_a_4xx_with_an_openai_error(server, path, body):
    resp = post(server, path, {"model": MODEL_NAME, **body})
    assert 400 <= resp.status_code < 500, resp.text
    assert_openai_error(resp, resp.status_code)


TOKEN_ID_BODIES = [
    # (path, body, the param the error must name, a piece of its message)
    ("/v1/completions", {"prompt": [True]}, "prompt.0", "JSON boolean"),
    ("/v1/completions", {"prompt": [1, False]}, "prompt.1", "got false"),
    ("/v1/completions", {"prompt": [[5, True]]}, "prompt.0.1", "JSON boolean"),
    ("/v1/completions", {"prompt": ["hi", [True]]}, "prompt.1.0", "JSON boolean"),
    ("/v1/completions", {"prompt": [1.0]}, "prompt.0", "must be integers, got 1.0"),
    ("/v1/completions", {"prompt": [["7"]]}, "prompt.0.0", 'must be integers, got "7"'),
    ("/v1/completions", {"prompt": [None]}, "prompt.0", "got null"),
    ("/v1/completions", {"prompt": [-1]}, "prompt.0", ">= 0, got -1"),
    ("/v1/completions", {"prompt": [[3, -2]]}, "prompt.0.1", ">= 0, got -2"),
    ("/v1/completions", {"prompt": ["hi", 7]}, "prompt.1", "strings and token-id lists"),
    ("/v1/completions", {"prompt": [10**9]}, "prompt.0", "must be in [0, 49152), got 1000000000"),
    ("/v1/completions", {"prompt": ["hi", [1, 49152]]}, "prompt.1.1", "must be in [0, 49152)"),
    ("/v1/chat/completions", {"messages": ASK, "stop_token_ids": [True]}, "stop_token_ids.0", "JSON boolean"),
    ("/v1/chat/completions", {"messages": ASK, "stop_token_ids": [2.0]}, "stop_token_ids.0", "got 2.0"),
    ("/v1/completions", {"prompt": "hi", "stop_token_ids": [1, -4]}, "stop_token_ids.1", ">= 0"),
]


@pytest.mark.parametrize("path,body,param,message", TOKEN_ID_BODIES,
                         ids=[json.dumps({k: v for k, v in b.items() if k != "messages"})
                              for _, b, _, _ in TOKEN_ID_BODIES])
def test_token_ids_are_integers_in_the_vocabulary(server, path, body, param, message):
    """A token id is a JSON integer in [0, vocab): `true` is no token id 1 (bool is an int in Python, and
    pydantic's lax mode coerced it), nor 1.0 or "1"; the error names the element and the problem."""
    e = assert_openai_error(post(server, path, {"model": MODEL_NAME, "max_tokens": 1, **body}), 400)
    assert e["type"] == "invalid_request_error"
    assert e["param"] == param, e
    assert message in e["message"] and param in e["message"], e


def test_integer_token_ids_are_a_prompt(server):
    """The control of the test above: real ids (one prompt, a batch, mixed with text) still generate."""
    for prompt in ([1, 2, 3], [[1, 2], [49151]], ["hi", [4, 5]]):
        resp = post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": prompt, "max_tokens": 1,
                                                "stop_token_ids": [0, 2]})
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["choices"]) == (1 if isinstance(prompt[0], int) else 2)
    server.wait_idle()


def test_too_many_samples_names_n(server):
    for path, body in (("/v1/chat/completions", {"messages": ASK}), ("/v1/completions", {"prompt": "hi"})):
        e = assert_openai_error(post(server, path, {"model": MODEL_NAME, "max_tokens": 2, "n": 10**6, **body}), 400)
        assert e["param"] == "n" and "at most 32" in e["message"], e


def test_metrics_registry_per_app():
    """Two apps in one process keep separate counts (prometheus_client's default registry is global)."""
    first, second = Metrics(lambda: {"kv_blocks_used": 3, "kv_blocks_total": 4}, "a"), Metrics(None, "b")
    first.observe_request("/health", 200, 0.01)
    a, b = parse_metrics(first.render().decode()), parse_metrics(second.render().decode())
    assert a['herd_requests_total{endpoint="/health",status="200"}'] == 1
    assert a['herd_kv_cache_usage_ratio{model_name="a"}'] == 0.75
    assert not any(k.startswith("herd_requests_total") for k in b)
    assert not any("kv" in k for k in b)


def test_non_finite_numbers_are_a_400(server):
    """Python's json accepts NaN/Infinity (not JSON): a NaN temperature would pass `< 0` checks unnoticed."""
    for field in ("temperature", "top_p", "min_p", "presence_penalty", "repetition_penalty"):
        for value in ("NaN", "Infinity", "-Infinity"):
            body = '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "%s": %s}'
            e = assert_openai_error(raw_post(server, "/v1/chat/completions", body % (MODEL_NAME, field, value)), 400)
            assert e["param"] == field, (field, value, e)
    server.wait_idle()


def test_disconnect_mid_stream_frees_blocks(server):
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
            "max_tokens": 2000, "ignore_eos": True, "temperature": 0.7, "stream": True}
    before = server.wait_idle().generation_tokens_total
    with httpx.Client(timeout=60, headers=server.headers()) as http:
        with http.stream("POST", server.api_url + "/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            chunks = 0
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    chunks += 1
                if chunks >= 4:
                    break
            assert server.stats().running == 1
            assert server.stats().kv_blocks_used > 0
    # The connection is closed: the request is aborted (not run to its 2000 tokens) and its blocks freed
    generated = server.wait_idle(timeout=60).generation_tokens_total  # idle: no request, no KV block in use
    assert generated - before < 2000
    time.sleep(0.5)
    assert server.stats().generation_tokens_total == generated


def test_api_key(server):
    e = assert_openai_error(httpx.post(server.api_url + "/chat/completions", json={"messages": ASK}), 401)
    assert e["code"] == "invalid_api_key"
    assert_openai_error(httpx.get(server.api_url + "/models", headers={"Authorization": "Bearer wrong"}), 401)
    assert httpx.get(server.api_url + "/models", headers=server.headers()).status_code == 200
    assert httpx.get(server.base_url + "/metrics").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.api_url, api_key="wrong", max_retries=0).models.list()


# ------------------------------------------------------------------- units (no server needed)


def _req(**kw):
    return parse_request(json.dumps({"model": "m", **kw}).encode(), ChatCompletionRequest)


def test_llama3_tool_prompt_placement(llama3_tokenizer):
    from herd.tokenizer.llama3_chat import Llama3ChatFormat

    fmt = Llama3ChatFormat(llama3_tokenizer)
    req = _req(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
                         {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                             "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "rain"}],
               tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    plan = build_chat_prompt(fmt, req.messages, req.tools, req.tool_choice)
    text = llama3_tokenizer.decode(plan.prompt_ids)
    system, tools_msg = plan.messages[0], plan.messages[1]
    assert system.role == "system" and system.content.startswith("Environment: ipython\n")
    assert "Today Date:" in system.content and system.content.endswith("Be brief.\n")
    assert tools_msg.role == "user" and '"name": "get_weather"' in tools_msg.content
    assert tools_msg.content.endswith("Return function calls in JSON format.")
    assert plan.messages[2].content == "Weather?"
    assert '{"type": "function", "name": "get_weather", "parameters": {"city": "Oslo"}}<|eot_id|>' in text
    assert "<|start_header_id|>ipython<|end_header_id|>\n\nrain<|eot_id|>" in text
    # the prefill starts the call, and its arguments with the first required property
    assert text.endswith('<|start_header_id|>assistant<|end_header_id|>\n\n'
                         '{"type": "function", "name": "get_weather", "parameters": {"city": "')

    parser = ChoiceParser(fmt, plan)
    events = parser.feed('Ber') + parser.feed('lin"}} trailing')
    assert parser.done
    more, reason = parser.finish(None)
    result = ChoiceResult()
    result.add(events + more)
    assert reason == "tool_calls"
    assert result.message()["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Berlin"}'}

    # auto: a reply that starts with JSON is held back and parsed as a call
    auto = build_chat_prompt(fmt, _req(messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL]).messages,
                             _req(messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL]).tools, None)
    parser = ChoiceParser(fmt, auto)
    assert parser.feed('{"name": "get_weather", ') == []
    assert parser.feed('"parameters": {"city": "Rome"}}') == []
    more, reason = parser.finish("stop")
    assert reason == "tool_calls" and more[0].name == "get_weather" and json.loads(more[0].arguments) == {"city": "Rome"}
    parser = ChoiceParser(fmt, auto)
    assert "".join(e for e in parser.feed("It is ") + parser.feed("sunny.") if isinstance(e, str)) == "It is sunny."


def test_chatml_tool_prompt_and_parsing(smollm2_path):
    loaded = shared_model()
    fmt = loaded.chat_format
    req = _req(messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER_TOOL])
    plan = build_chat_prompt(fmt, req.messages, req.tools, req.tool_choice)
    assert plan.mode == "auto"
    system = plan.messages[0].content
    assert system.startswith(fmt.default_system) and "<tools>\n" + json.dumps(WEATHER_TOOL) + "\n</tools>" in system
    parser = ChoiceParser(fmt, plan)
    events = []
    for piece in ["Let me check.", "\n<tool", '_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}',
                  "\n</tool_call>"]:
        events += parser.feed(piece)
    assert events == ["Let me check."]  # the partial "<tool" was never shown
    more, reason = parser.finish("stop")
    assert reason == "tool_calls" and more[0].name == "get_weather"
    # a malformed call is plain text after all
    parser = ChoiceParser(fmt, plan)
    text = parser.feed("<tool_call>\n{not json}") + parser.finish("stop")[0]
    assert "".join(text) == "<tool_call>\n{not json}"

    named = _req(messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required")
    plan = build_chat_prompt(fmt, named.messages, named.tools, named.tool_choice)
    assert plan.prefill == '<tool_call>\n{"name": "'
    parser = ChoiceParser(fmt, plan)
    parser.feed('get_time", "arguments": {"tz": "UTC"}}\n</tool_call>')
    assert parser.done
    more, reason = parser.finish(None)
    assert (more[0].name, json.loads(more[0].arguments), reason) == ("get_time", {"tz": "UTC"}, "tool_calls")
    with pytest.raises(OpenAIError):
        build_chat_prompt(fmt, named.messages, None, "required")


def test_json_end_scanner():
    s = JsonEnd()
    assert s.feed(' {"a": "}{\\"", ') is None
    assert s.feed('"b": [1, {"c": 2}]} tail') == len('"b": [1, {"c": 2}]}')
    assert JsonEnd().feed('"str" x') == 5
    assert JsonEnd('{"name": "').feed('f", "arguments": {}}!') == len('f", "arguments": {}}')
