"""`herd serve --execute-builtin-tools`: the server runs built-in tool calls and streams the final answer.

A scripted engine stands in for the model (a real small model calls tools too rarely to test on):
it reads the prompt the server built (the real SmolLM2 / Llama 3 chat formats) and answers with a
call or with text. The tools are real (the sandboxed code interpreter and math engine), and so are
uvicorn and the official `openai` client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from serve_helpers import free_port, shared_model, wait_for

from herd.infer.engine import CompletionOutput, RequestOutput
from herd.serve.server_tools import ServerTools

CALL_42 = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(6*7)"}}\n</tool_call>'
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class ScriptedEngine:
    """An async engine whose reply is `script(prompt_text)`, streamed in a few pieces."""

    def __init__(self, tokenizer: Any, script: Callable[[str], str]) -> None:
        self.tokenizer, self.script = tokenizer, script
        self.prompts: list[str] = []
        self.prompt_lengths: list[int] = []

    async def generate(self, prompt_ids: list[int], params: Any, request_id: str = "") -> AsyncIterator[RequestOutput]:
        text = self.tokenizer.decode(prompt_ids)
        self.prompts.append(text)
        self.prompt_lengths.append(len(prompt_ids))
        reply = self.script(text)
        pieces = [reply[i:i + 7] for i in range(0, len(reply), 7)] or [""]
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            new = self.tokenizer.encode(piece)
            ids = ids + new
            last = k == len(pieces) - 1
            out = CompletionOutput(0, reply[: 7 * (k + 1)], list(ids), piece, new, None, "stop" if last else None)
            yield RequestOutput(request_id, prompt_ids, [out], last)

    def shutdown(self) -> None:
        pass


def calls_then_answers(text: str) -> str:
    """Call code_interpreter until a tool result is in the prompt, then answer with it."""
    if "<tool_response>" not in text:
        return CALL_42
    result = text.rsplit("<tool_response>", 1)[1].split("</tool_response>")[0]
    return f"The answer is {result.split('[stdout]')[1].split('[/stdout]')[0].strip()}."


def always_calls(text: str) -> str:
    return CALL_42


class ServerWithScript:
    def __init__(self, script: Callable[[str], str], server_tools: ServerTools | None, guard: Any = None) -> None:
        import threading

        import uvicorn

        from herd.serve import create_app

        loaded = shared_model()
        self.engine = ScriptedEngine(loaded.tokenizer, script)
        app = create_app(self.engine, loaded, "scripted", server_tools=server_tools, guard=guard)
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{port}"
        wait_for(lambda: self._healthy(), timeout=30)
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key="x", max_retries=0, timeout=120)

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.base + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.base + "/v1/chat/completions", json=body, timeout=120)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def tools_server():
    srv = ServerWithScript(calls_then_answers, ServerTools(("code_interpreter", "wolfram_alpha"), max_steps=3))
    yield srv
    srv.stop()


ASK = [{"role": "user", "content": "What is 6 times 7? Use Python."}]


def test_the_server_runs_the_call_and_answers_with_its_result(tools_server):
    tools_server.engine.prompts.clear()
    tools_server.engine.prompt_lengths.clear()
    resp = tools_server.post({"messages": ASK, "max_tokens": 200})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "The answer is 42."}
    assert body["choices"][0]["finish_reason"] == "stop"
    (run,) = body["tool_runs"]
    assert run["name"] == "code_interpreter" and run["arguments"] == {"code": "print(6*7)"}
    assert "42" in run["output"] and run["output"].startswith("completed")
    first, second = tools_server.engine.prompts
    # the built-ins are offered as functions in the ChatML tools section; the second round carries
    # the model's call and the sandbox's result
    assert '"name": "code_interpreter"' in first and '"name": "wolfram_alpha"' in first
    assert second.startswith(first) and '"code": "print(6*7)"' in second
    assert "<|im_start|>tool\n<tool_response>\ncompleted\n[stdout]\n42\n[/stdout]\n</tool_response>" in second
    assert body["usage"]["prompt_tokens"] == sum(tools_server.engine.prompt_lengths)


def test_the_official_client_streams_only_the_final_answer(tools_server):
    stream = tools_server.client.chat.completions.create(model="scripted", messages=ASK, stream=True,
                                                         stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is 42."
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # the tool run is reported as an SSE comment, which the client skipped
    raw = httpx.post(tools_server.base + "/v1/chat/completions", json={"messages": ASK, "stream": True}, timeout=120)
    assert ": tool code_interpreter " in raw.text and raw.text.rstrip().endswith("data: [DONE]")


def test_a_client_function_call_goes_back_to_the_client(tools_server):
    def call_weather(text: str) -> str:
        return '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

    tools_server.engine.script = call_weather
    try:
        body = tools_server.post({"messages": ASK, "tools": [WEATHER_TOOL]}).json()
    finally:
        tools_server.engine.script = calls_then_answers
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and body["tool_runs"] == []
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}


def test_tool_choice_none_offers_no_tools_and_n_above_one_is_refused(tools_server):
    tools_server.engine.prompts.clear()
    body = tools_server.post({"messages": ASK, "tool_choice": "none"}).json()
    assert "code_interpreter" not in tools_server.engine.prompts[0]
    # plain mode: the call-shaped reply is content, nothing runs
    assert "tool_runs" not in body and body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == CALL_42
    resp = tools_server.post({"messages": ASK, "n": 2})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "n"


def test_the_last_round_returns_the_call_instead_of_running_it():
    srv = ServerWithScript(always_calls, ServerTools(("code_interpreter",), max_steps=2))
    try:
        body = srv.post({"messages": ASK}).json()
    finally:
        srv.stop()
    assert len(body["tool_runs"]) == 2 and len(srv.engine.prompts) == 3
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"code": "print(6*7)"}


def test_llama3_names_the_builtins_in_the_system_prompt(llama3_tokenizer):
    from herd.serve.protocol import ChatCompletionRequest, parse_request
    from herd.serve.tools import build_chat_prompt
    from herd.tokenizer.chat import Message, ToolCall
    from herd.tokenizer.llama3_chat import Llama3ChatFormat

    fmt = Llama3ChatFormat(llama3_tokenizer)
    req = parse_request(json.dumps({"model": "m", "messages": ASK}).encode(), ChatCompletionRequest)
    plan = build_chat_prompt(fmt, req.messages, None, None, ("code_interpreter", "brave_search", "wolfram_alpha"))
    assert plan.mode == "auto"
    assert plan.messages[0].content.startswith("Environment: ipython\nTools: brave_search, wolfram_alpha\n")
    assert [m.role for m in plan.messages] == ["system", "user"]  # no custom tools: no tool-list message
    extra = [Message("assistant", "", tool_calls=[ToolCall("code_interpreter", {"code": "print(6*7)"})],
                     end_of_message=True), Message("ipython", "completed\n[stdout]\n42\n[/stdout]")]
    text = llama3_tokenizer.decode(build_chat_prompt(fmt, req.messages, None, None, ("code_interpreter",),
                                                     extra).prompt_ids)
    assert "<|python_tag|>print(6*7)<|eom_id|>" in text
    assert text.endswith("<|start_header_id|>ipython<|end_header_id|>\n\ncompleted\n[stdout]\n42\n[/stdout]<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n")
    # a forced call is the client's: the built-ins are not offered
    forced = parse_request(json.dumps({"model": "m", "messages": ASK, "tools": [WEATHER_TOOL],
                                       "tool_choice": "required"}).encode(), ChatCompletionRequest)
    plan = build_chat_prompt(fmt, forced.messages, forced.tools, forced.tool_choice, ("brave_search",))
    assert "brave_search" not in plan.messages[0].content


def test_server_tools_check_their_settings():
    with pytest.raises(ValueError, match="at least one tool"):
        ServerTools(())
    with pytest.raises(ValueError, match=">= 1"):
        ServerTools(("code_interpreter",), max_steps=0)
    from herd.tools.agent import builtin_tool_names

    assert builtin_tool_names("code, search") == ["code_interpreter", "brave_search"]
    with pytest.raises(ValueError, match="--execute-builtin-tools: unknown"):
        builtin_tool_names("code,shell", "--execute-builtin-tools")
