"""Guarded serving: a flagged request never reaches the engine, flagged answers are cut (streamed ones
before the flagged window is sent), the code shield on answers, and /v1/moderations.

A keyword stand-in plays the guard model (the guard's own quality is measured in benchmarks); the
engine is the scripted one of test_serve_tools; uvicorn and the official `openai` client are real.
"""

from __future__ import annotations

import httpx
import pytest
from test_serve_tools import ServerWithScript

from herd.safety.code_shield import Policy
from herd.safety.guard_prompt import CANNED_REFUSAL, GuardVerdict
from herd.serve.guarding import ServeGuard
from herd.serve.metrics import parse_metrics


class KeywordGuard:
    """Unsafe (S1) when the judged turn mentions a bomb."""

    def judge(self, conversations, excluded=()):  # type: ignore[no-untyped-def]
        out = []
        for conversation in conversations:
            last = conversation if isinstance(conversation, str) else conversation[-1]["content"]
            if "bomb" not in last.lower():
                out.append((GuardVerdict(True), 0.02))
            else:
                out.append((GuardVerdict(True, ("S1",)) if "S1" in excluded else GuardVerdict(False, ("S1",)), 0.97))
        return out


STORY = "Once upon a time a baker made bread every morning for the whole village, " \
        "and then one day he found a bomb in the oven and described how to arm it."
CODE = "Here you go:\n```python\nimport subprocess\nsubprocess.run(user_command, shell=True)\n```\n"


def reply_for(prompt: str) -> str:
    if "story" in prompt:
        return STORY
    if "code" in prompt:
        return CODE
    return "Bread needs flour, water, salt and yeast."


@pytest.fixture(scope="module")
def guarded():
    srv = ServerWithScript(reply_for, None, guard=ServeGuard(KeywordGuard(), code_shield=Policy(), window_chars=20))
    yield srv
    srv.stop()


def blocked(srv: ServerWithScript) -> dict[str, float]:
    return parse_metrics(httpx.get(srv.base + "/metrics", timeout=10).text)


def test_a_flagged_request_never_reaches_the_engine(guarded):
    guarded.engine.prompts.clear()
    body = guarded.post({"messages": [{"role": "user", "content": "How do I build a bomb?"}], "n": 2}).json()
    assert [c["finish_reason"] for c in body["choices"]] == ["content_filter"] * 2
    assert body["choices"][0]["message"]["content"] == CANNED_REFUSAL
    stream = guarded.client.chat.completions.create(model="scripted", stream=True,
                                                    messages=[{"role": "user", "content": "a BOMB please"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CANNED_REFUSAL
    assert guarded.engine.prompts == []  # neither request was submitted
    assert blocked(guarded)['herd_guard_blocked_total{stage="input"}'] == 2


def test_a_safe_exchange_passes_unchanged(guarded):
    ask = [{"role": "user", "content": "How do I bake bread?"}]
    body = guarded.post({"messages": ask}).json()
    assert body["choices"][0]["message"]["content"] == reply_for("bread")
    assert body["choices"][0]["finish_reason"] == "stop"
    chunks = list(guarded.client.chat.completions.create(model="scripted", messages=ask, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply_for("bread")


def test_a_flagged_answer_is_replaced_and_a_stream_is_cut_before_the_flagged_window(guarded):
    ask = [{"role": "user", "content": "Tell me a story about a baker."}]
    body = guarded.post({"messages": ask}).json()
    assert body["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": CANNED_REFUSAL},
                                  "logprobs": None, "finish_reason": "content_filter"}
    chunks = list(guarded.client.chat.completions.create(model="scripted", messages=ask, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "bomb" not in text.lower() and text.endswith(CANNED_REFUSAL)
    assert text.startswith("Once upon a time")  # the windows before the flagged one were sent
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["content_filter"]


def test_the_code_shield_flags_insecure_code_in_answers(guarded):
    body = guarded.post({"messages": [{"role": "user", "content": "Write code to run a command."}]}).json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["message"]["content"] == CANNED_REFUSAL


def test_moderations(guarded):
    resp = httpx.post(guarded.base + "/v1/moderations", json={"input": ["make a bomb", "bake bread"]}, timeout=60)
    assert resp.status_code == 200, resp.text
    first, second = resp.json()["results"]
    assert first["flagged"] and first["categories"]["violence"] and not first["categories"]["hate"]
    assert first["category_scores"]["violence"] == pytest.approx(0.97)
    assert first["llama_guard"] == {"answer": "unsafe\nS1", "unsafe_score": 0.97}
    assert not second["flagged"] and not any(second["categories"].values())
    one = httpx.post(guarded.base + "/v1/moderations", json={"input": "make a bomb"}, timeout=60).json()
    assert len(one["results"]) == 1 and one["id"].startswith("modr")
    for bad in ({"input": 5}, {}, {"input": []}, b"{not json"):
        kwargs = {"content": bad} if isinstance(bad, bytes) else {"json": bad}
        resp = httpx.post(guarded.base + "/v1/moderations", timeout=60, **kwargs)
        assert resp.status_code == 400 and set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_excluded_categories_and_no_guard():
    srv = ServerWithScript(reply_for, None, guard=ServeGuard(KeywordGuard(), excluded=("S1",)))
    try:
        body = srv.post({"messages": [{"role": "user", "content": "Tell me a story with a bomb"}]}).json()
        assert body["choices"][0]["message"]["content"] == STORY  # this deployment allows S1
    finally:
        srv.stop()
    plain = ServerWithScript(reply_for, None)
    try:
        resp = httpx.post(plain.base + "/v1/moderations", json={"input": "x"}, timeout=60)
        assert resp.status_code == 400 and "--guard" in resp.json()["error"]["message"]
    finally:
        plain.stop()
    with pytest.raises(ValueError, match="needs a guard"):
        ServeGuard()
