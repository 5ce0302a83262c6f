"""Chat formats: Llama 3 ids equal llama-models' reference ChatFormat, ChatML ids equal the SmolLM2
GGUF's own jinja template, masks mark exactly the assistant bodies / template tokens, and tool calls
survive render -> parse (malformed output stays text)."""

from __future__ import annotations

import jinja2
import pytest

from herd.tokenizer.base import Tokenizer, TokenizerError
from herd.tokenizer.chat import EncodedDialog, Message, ToolCall, ToolDefinition, chat_format_for
from herd.tokenizer.chatml import ChatMLFormat, default_system_prompt
from herd.tokenizer.llama3_chat import Llama3ChatFormat, custom_tools_prompt, system_prompt_with_tools
from herd.tokenizer.tool_calls import encode_llama3_call

# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def llama(llama3_tokenizer) -> Llama3ChatFormat:
    return Llama3ChatFormat(llama3_tokenizer)


@pytest.fixture(scope="module")
def reference(reference_llama3_tokenizer):
    from llama_models.llama3.chat_format import ChatFormat

    return ChatFormat(reference_llama3_tokenizer)


@pytest.fixture(scope="module")
def smollm2_meta(smollm2_path):
    from herd.checkpoint.gguf_metadata import read_gguf_metadata

    return read_gguf_metadata(smollm2_path)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_meta) -> Tokenizer:
    from herd.tokenizer.bpe import BPETokenizer

    return BPETokenizer.from_gguf_metadata(smollm2_meta, name="smollm2")


@pytest.fixture(scope="module")
def chatml(smollm2_tokenizer, smollm2_meta) -> ChatMLFormat:
    return ChatMLFormat(smollm2_tokenizer, smollm2_meta["tokenizer.chat_template"])


def to_reference(messages: list[Message]):
    """Our messages as llama-models RawMessages (role tool, StopReason, its ToolCall type)."""
    from llama_models.datatypes import RawMessage, StopReason
    from llama_models.datatypes import ToolCall as RefToolCall

    out = []
    for m in messages:
        stop = None
        if m.role == "assistant":
            stop = StopReason.end_of_message if m.end_of_message else StopReason.end_of_turn
        calls = [
            RefToolCall(call_id=f"c{i}", tool_name=c.name, arguments=c.arguments) for i, c in enumerate(m.tool_calls)
        ]
        role = "tool" if m.role == "ipython" else m.role
        out.append(RawMessage(role=role, content=m.content, stop_reason=stop, tool_calls=calls))
    return out


# ------------------------------------------------------------------------------------ dialogs

SYSTEM_BUILTIN = system_prompt_with_tools(
    ["brave_search", "wolfram_alpha", "code_interpreter"], date="21 September 2024", instructions="You are helpful."
)
TRENDING = ToolDefinition(
    name="trending_songs",
    description="Returns the trending songs on a Music site",
    parameters={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
)
SYSTEM_CUSTOM = system_prompt_with_tools([], [TRENDING], date="21 September 2024", instructions="Be brief.")

PRIME_CODE = "def is_prime(n):\n    return n > 1 and all(n % i for i in range(2, n))\n\nprint(is_prime(7))"

DIALOGS: dict[str, list[Message]] = {
    "system_user": [Message("system", "You are a helpful assistant"), Message("user", "Who are you?")],
    "user_only": [Message("user", "Hi")],
    "multi_turn": [
        Message("system", "Answer briefly."),
        Message("user", "What is 2+2?"),
        Message("assistant", "4."),
        Message("user", "And 3+3?\n\nExplain."),
        Message("assistant", " Six, because 3+3 = 6.  "),
        Message("user", "Thanks!"),
    ],
    "brave_search": [
        Message("system", SYSTEM_BUILTIN),
        Message("user", "Search the web for the latest price of 1oz gold?"),
        Message(
            "assistant",
            tool_calls=[ToolCall("brave_search", {"query": "latest price of 1oz gold"})],
            end_of_message=True,
        ),
        Message("ipython", '{"price": "2,650 USD"}'),
        Message("assistant", "Gold costs about $2,650 per ounce."),
    ],
    "wolfram_alpha": [
        Message("system", SYSTEM_BUILTIN),
        Message("user", "What is the 100th decimal of pi?"),
        Message(
            "assistant", tool_calls=[ToolCall("wolfram_alpha", {"query": "100th decimal of pi"})], end_of_message=True
        ),
        Message("tool", '{\n    "queryresult": {"success": true, "plaintext": "7"}\n}\n'),
        Message("assistant", "The 100th decimal of pi is 7."),
    ],
    "code_interpreter": [
        Message("system", SYSTEM_BUILTIN),
        Message("user", "Is 7 prime? Use code."),
        Message(
            "assistant",
            tool_calls=[ToolCall("code_interpreter", {"code": PRIME_CODE})],
            end_of_message=True,
        ),
        Message("ipython", "True\n"),
        Message("assistant", "Yes, 7 is prime."),
    ],
    "content_and_two_calls": [
        Message("user", "Search twice."),
        Message(
            "assistant",
            "Searching.",
            [ToolCall("brave_search", {"query": "a"}), ToolCall("wolfram_alpha", {"query": "b"})],
            end_of_message=True,
        ),
    ],
    "custom_tools": [
        Message("system", SYSTEM_CUSTOM),
        Message("user", custom_tools_prompt([TRENDING])),
        Message("user", "Use tools to get latest trending songs"),
        Message("assistant", tool_calls=[ToolCall("trending_songs", {"n": 10, "genre": "all"})], end_of_message=True),
        Message("ipython", '["Song A", "Song B"]'),
        Message("assistant", "The top songs are Song A and Song B."),
    ],
    "two_custom_calls": [
        Message("user", "Both."),
        Message(
            "assistant",
            tool_calls=[ToolCall("get_weather", {"city": "Paris", "days": [1, 2]}), ToolCall("get_time", {})],
        ),
    ],
    "unicode": [
        Message("system", "Réponds en français. 🧀"),
        Message("user", "日本語で答えて — über naïve café? 👋🏽 \u200b<|eot_id|> is text here"),
        Message("assistant", "はい！ 🎉 Ça marche. ∑x² ≠ 0"),
        Message("user", "Спасибо\tmerci\r\nשלום"),
    ],
}


@pytest.mark.parametrize("tool_format", ["json", "function_tag", "python_list"])
@pytest.mark.parametrize("name", list(DIALOGS))
def test_llama3_dialog_matches_reference(llama, reference, name, tool_format):
    messages = DIALOGS[name]
    from llama_models.datatypes import ToolPromptFormat

    expected = reference.encode_dialog_prompt(to_reference(messages), ToolPromptFormat(tool_format)).tokens
    assert llama.encode_dialog(messages, tool_format=tool_format).tokens == expected
    # Without the generation prompt: the reference's ids minus its trailing assistant header.
    closed = llama.encode_dialog(messages, add_generation_prompt=False, tool_format=tool_format).tokens
    assert closed == expected[: len(expected) - len(llama.header("assistant"))]
    for m, raw in zip(messages, to_reference(messages)):
        ref_ids, _ = reference.encode_message(raw, ToolPromptFormat(tool_format))
        assert llama.encode_message(m, tool_format=tool_format) == ref_ids


def test_llama3_accepts_dicts_and_tool_alias(llama):
    as_dicts = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "content": "2"},
    ]
    as_messages = [
        Message("user", "hi"),
        Message("assistant", tool_calls=[ToolCall("f", {"x": 1})]),
        Message("ipython", "2"),
    ]
    assert llama.encode_dialog(as_dicts).tokens == llama.encode_dialog(as_messages).tokens
    with pytest.raises(ValueError, match="role"):
        Message("narrator", "x")
    with pytest.raises(ValueError, match="only assistant"):
        Message("user", tool_calls=[ToolCall("f", {})])


# ------------------------------------------------------------------------------------ masks


def runs(enc: EncodedDialog, mask: list[bool]) -> list[list[int]]:
    """Maximal runs of consecutive masked tokens."""
    out: list[list[int]] = []
    prev = False
    for tok, m in zip(enc.tokens, mask):
        if m and not prev:
            out.append([])
        if m:
            out[-1].append(tok)
        prev = m
    return out


def expected_llama3_body(m: Message, tool_format: str) -> str:
    tag = "<|python_tag|>" if m.tool_calls and m.tool_calls[0].name == "code_interpreter" else ""
    calls = "".join(encode_llama3_call(c, tool_format) for c in m.tool_calls)
    return tag + m.content + calls


@pytest.mark.parametrize("tool_format", ["json", "function_tag"])
@pytest.mark.parametrize("name", list(DIALOGS))
def test_llama3_masks(llama, llama3_tokenizer, name, tool_format):
    tok = llama3_tokenizer
    messages = DIALOGS[name]
    for gen in (True, False):
        enc = llama.encode_dialog(messages, add_generation_prompt=gen, tool_format=tool_format)
        assistants = [m for m in messages if m.role == "assistant"]
        bodies = [expected_llama3_body(m, tool_format) for m in assistants]
        ends = ["<|eom_id|>" if m.end_of_message else "<|eot_id|>" for m in assistants]
        # SFT targets: each assistant body and its closing token, nothing else.
        assert [tok.decode(r) for r in runs(enc, enc.target_mask)] == [b + e for b, e in zip(bodies, ends)]
        # DPO: targets minus template tokens are the bodies exactly.
        dpo = [t and not f for t, f in zip(enc.target_mask, enc.format_mask)]
        assert [tok.decode(r) for r in runs(enc, dpo)] == [b for b in bodies if b]
        # Format tokens, derived independently from the special ids: bos, every header
        # (start_header .. end_header and the "\n\n" token after it), every eot/eom.
        ids = enc.tokens
        special = {tok.special_tokens[t] for t in ("<|begin_of_text|>", "<|eot_id|>", "<|eom_id|>")}
        want = [False] * len(ids)
        in_header = False
        for i, t in enumerate(ids):
            if t == tok.special_tokens["<|start_header_id|>"]:
                in_header = True
            want[i] = in_header or t in special
            if i > 0 and ids[i - 1] == tok.special_tokens["<|end_header_id|>"]:
                assert tok.decode([t]) == "\n\n"
                in_header = False
        assert enc.format_mask == want
        headers = "".join(f"<|start_header_id|>{m.role}<|end_header_id|>\n\n" for m in messages)
        closes = "".join("<|eom_id|>" if m.role == "assistant" and m.end_of_message else "<|eot_id|>" for m in messages)
        format_text = tok.decode([t for t, f in zip(ids, enc.format_mask) if f])
        gen_header = "<|start_header_id|>assistant<|end_header_id|>\n\n" if gen else ""
        assert sorted(format_text) == sorted("<|begin_of_text|>" + headers + closes + gen_header)


# ------------------------------------------------------------------------------------ parsing


def assert_same_calls(got: list[ToolCall], want: list[ToolCall]) -> None:
    assert [(c.name, c.arguments) for c in got] == [(c.name, c.arguments) for c in want]


@pytest.mark.parametrize("tool_format", ["json", "function_tag", "python_list"])
@pytest.mark.parametrize(
    "name",
    ["brave_search", "wolfram_alpha", "code_interpreter", "custom_tools", "two_custom_calls", "content_and_two_calls"],
)
def test_llama3_parse_round_trip(llama, llama3_tokenizer, name, tool_format):
    """Render each tool-calling assistant turn, decode its target tokens, parse: same calls back."""
    messages = DIALOGS[name]
    enc = llama.encode_dialog(messages, add_generation_prompt=False, tool_format=tool_format)
    assistants = [m for m in messages if m.role == "assistant"]
    for m, run in zip(assistants, runs(enc, enc.target_mask)):
        parsed = llama.parse_assistant(llama3_tokenizer.decode(run))
        assert parsed.role == "assistant" and parsed.end_of_message == m.end_of_message
        assert_same_calls(parsed.tool_calls, m.tool_calls)
        assert parsed.content == ("" if m.tool_calls else m.content)
        assert all(c.call_id for c in parsed.tool_calls)


@pytest.mark.parametrize(
    "text",
    [
        '<|python_tag|>brave_search.call(query="latest price of 1oz gold")<|eom_id|>',  # prompt_format.md's form
        'wolfram_alpha.call(query="100th decimal of pi")',
        "<|python_tag|>def is_prime(n):\n    return n > 1\n\nprint(is_prime(7))<|eom_id|>",
        '<|python_tag|>{"type": "function", "name": "trending_songs", "parameters": {"n": "10", "genre": "all"}}'
        "<|eom_id|>",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '<function=trending_songs>{"n": 10}</function><|eot_id|>',
        '[get_weather(city="Paris", days=3)]',
        '{"type": "function", "name": "brave_search", "parameters": {"q": "gold"}}',
        "Just a plain answer.<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n  Hello there  <|eot_id|>",
    ],
)
def test_llama3_parse_agrees_with_reference(llama, reference, text):
    from llama_models.datatypes import StopReason

    ref = reference.decode_assistant_message_from_content(text, StopReason.end_of_turn)
    got = llama.parse_assistant(text)
    assert got.content == ref.content
    assert got.end_of_message == (ref.stop_reason == StopReason.end_of_message)
    want = [ToolCall(getattr(c.tool_name, "value", c.tool_name), c.arguments) for c in ref.tool_calls]
    assert_same_calls(got.tool_calls, want)


def test_llama3_parse_extensions(llama):
    """Beyond the reference: several calls, nested arguments, no "parameters", eom without a token."""
    got = llama.parse_assistant('{"name": "a", "parameters": {"x": 1}};\n{"name": "b", "arguments": {"y": [1, 2]}}')
    assert_same_calls(got.tool_calls, [ToolCall("a", {"x": 1}), ToolCall("b", {"y": [1, 2]})])
    got = llama.parse_assistant('<function=a>{"o": {"p": {"q": 1}}}</function>\n<function=b>{}</function>')
    assert_same_calls(got.tool_calls, [ToolCall("a", {"o": {"p": {"q": 1}}}), ToolCall("b", {})])
    got = llama.parse_assistant('{"type": "function", "name": "now"}', end_of_message=True)
    assert_same_calls(got.tool_calls, [ToolCall("now", {})])
    assert got.end_of_message
    got = llama.parse_assistant('{"type": "function", "name": "code_interpreter", "parameters": {"src": "print(1)"}}')
    assert_same_calls(got.tool_calls, [ToolCall("code_interpreter", {"code": "print(1)"})])


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "function", "name": "f", "parameters": {"x": 1}',  # truncated
        '{"type": "function", "name": "f", "parameters": {"x": 1}} trailing words',
        "<function=f>{not json}</function>",
        "<function=f>[1, 2]</function>",
        '{"name": "Bob", "age": 3}',  # JSON data with a "name" is not a call
        '{"type": "function", "parameters": {}}',
        "[1, 2, 3]",
        "[f(1)]",
        "[__import__('os').system('x')]",
        'brave_search.call(query="unterminated)',
        "",
        "}{][<|python_tag|",
        "null",
    ],
)
def test_parse_malformed_is_plain_text(llama, chatml, text):
    got = llama.parse_assistant(text)
    assert got.tool_calls == [] and got.content == text.strip(" ")
    got = chatml.parse_assistant(text)
    assert got.tool_calls == [] and got.content == text


def test_parse_never_raises_on_garbage(llama, chatml):
    import random

    rng = random.Random(0)
    pieces = ['{', '}', '[', ']', '(', ')', '"', "'", "\\", ":", ",", ";", "\n", " ", "name", '"name"', '"parameters"',
              "<function=f>", "</function>", "<tool_call>", "</tool_call>", "<|python_tag|>", "<|eom_id|>",
              ".call(query=", "brave_search", "f(a=", "1", "null", "é", "🎉"]
    texts = ["[" * 5000, "{" * 5000, '{"a":' * 3000, "<function=f>" + "[" * 5000, "<tool_call>" + "{" * 5000]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(2000)]
    for text in texts:
        for fmt in (llama, chatml):
            msg = fmt.parse_assistant(text)
            assert msg.role == "assistant" and isinstance(msg.content, str)


# ------------------------------------------------------------------------------------ system prompts


def test_system_prompts_follow_prompt_format_md():
    """Texts copied from llama_models/llama3_1/prompt_format.md."""
    assert system_prompt_with_tools(
        ["brave_search", "wolfram_alpha"], date="21 September 2024", instructions="You are a helpful assistant."
    ) == (
        "Environment: ipython\nTools: brave_search, wolfram_alpha\nCutting Knowledge Date: December 2023\n"
        "Today Date: 21 September 2024\n\nYou are a helpful assistant.\n"
    )
    assert system_prompt_with_tools(["code_interpreter"]) == "Environment: ipython"
    assert system_prompt_with_tools(["brave_search", "wolfram_alpha"]) == (
        "Environment: ipython\nTools: brave_search, wolfram_alpha\n"
    )
    custom = system_prompt_with_tools(
        [], [TRENDING], date="21 September 2024", instructions="You are a helpful assistant."
    )
    assert custom == (
        "Environment: ipython\n\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\n"
        "You are a helpful assistant.\n"
    )
    import datetime

    assert "Today Date: 05 March 2025\n" in system_prompt_with_tools([], date=datetime.date(2025, 3, 5))
    with pytest.raises(ValueError, match="unknown builtin"):
        system_prompt_with_tools(["google"])
    json_prompt = custom_tools_prompt([TRENDING])
    assert json_prompt.startswith("Answer the user's question by making use of the following functions if needed.\n")
    assert '\n        "name": "trending_songs",\n' in json_prompt
    assert json_prompt.endswith("}\n\nReturn function calls in JSON format.")
    tag_prompt = custom_tools_prompt([TRENDING], "function_tag")
    assert tag_prompt.startswith(
        "You have access to the following functions:\n\n"
        "Use the function 'trending_songs' to 'Returns the trending songs on a Music site':\n"
        '{"name": "trending_songs", "description": "Returns the trending songs on a Music site", "parameters": '
    )
    assert "}}\n\nThink very carefully before calling functions.\n" in tag_prompt
    assert tag_prompt.endswith("- Put the entire function call reply on one line")


# ------------------------------------------------------------------------------------ ChatML


def render_jinja(template: str, messages: list[Message], add_generation_prompt: bool) -> str:
    """Independent rendering: plain jinja2, as transformers does it."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    roles = {"ipython": "tool"}
    msgs = [{"role": roles.get(m.role, m.role), "content": m.content} for m in messages]
    return env.from_string(template).render(messages=msgs, add_generation_prompt=add_generation_prompt)


CHATML_DIALOGS = {
    "user_only": [Message("user", "Hi")],
    "system_user": [Message("system", "You are a pirate."), Message("user", "Hello!")],
    "multi_turn": [
        Message("user", "What is 2+2?"),
        Message("assistant", "4"),
        Message("user", "\nAnd   3+3?  "),  # leading newline merges with the header's "\n"
        Message("assistant", " 6 \n"),
    ],
    "system_multi_turn_unicode": [
        Message("system", "Réponds en français 🧀"),
        Message("user", "日本語 — naïve 👋🏽"),
        Message("assistant", "D'accord ! ∑x² ≠ 0"),
        Message("user", "\n\nmerci\r\n"),
    ],
    "empty_content": [Message("user", ""), Message("assistant", "")],
}


@pytest.mark.parametrize("gen", [True, False])
@pytest.mark.parametrize("name", list(CHATML_DIALOGS))
def test_chatml_matches_jinja_template(chatml, smollm2_tokenizer, smollm2_meta, name, gen):
    messages = CHATML_DIALOGS[name]
    text = render_jinja(smollm2_meta["tokenizer.chat_template"], messages, gen)
    expected = smollm2_tokenizer.encode(text, allow_special=True)
    enc = chatml.encode_dialog(messages, add_generation_prompt=gen)
    assert enc.tokens == expected
    assert smollm2_tokenizer.decode(enc.tokens) == text
    # Masks: targets are each assistant content + <|im_end|>; format is the template's tokens:
    # <|im_start|>role\n, <|im_end|> and the newline after it (the injected default system prompt
    # included), plus the generation prompt. Where BPE merges the header's "\n" into the content's
    # first token (content starting with whitespace), that token counts as content.
    assistants = [m for m in messages if m.role == "assistant"]
    lead = {id(m): "\n" if header_absorbed(smollm2_tokenizer, m.role, m.content) else "" for m in messages}
    target_text = [smollm2_tokenizer.decode(r) for r in runs(enc, enc.target_mask)]
    assert target_text == [lead[id(m)] + m.content + "<|im_end|>" for m in assistants]
    dpo = [t and not f for t, f in zip(enc.target_mask, enc.format_mask)]
    dpo_text = [smollm2_tokenizer.decode(r) for r in runs(enc, dpo)]
    assert dpo_text == [lead[id(m)] + m.content for m in assistants if m.content]
    turns = ([("system", "")] if messages[0].role != "system" else []) + [(m.role, lead[id(m)]) for m in messages]
    want = "".join(f"<|im_start|>{r}{'' if lead else chr(10)}<|im_end|>\n" for r, lead in turns)
    format_text = smollm2_tokenizer.decode([t for t, f in zip(enc.tokens, enc.format_mask) if f])
    assert format_text == want + ("<|im_start|>assistant\n" if gen else "")


def header_absorbed(tokenizer: Tokenizer, role: str, content: str) -> bool:
    """True when no token boundary falls right after `role\n` (BPE merged it into the content)."""
    ids = tokenizer.encode(f"{role}\n{content}")
    return not any(tokenizer.decode(ids[:i]) == f"{role}\n" for i in range(len(ids) + 1))


def test_chatml_straddling_header_token(chatml, smollm2_tokenizer):
    """" 6" after "assistant\n" encodes as "\n " + "6": the merged token is a target, not format."""
    assert header_absorbed(smollm2_tokenizer, "assistant", " 6")
    enc = chatml.encode_dialog([Message("system", "s"), Message("assistant", " 6")], add_generation_prompt=False)
    merged = [i for i, t in enumerate(enc.tokens) if smollm2_tokenizer.decode([t]) == "\n "]
    assert len(merged) == 1 and enc.target_mask[merged[0]] and not enc.format_mask[merged[0]]


def test_chatml_matches_transformers_template_rendering(chatml, smollm2_tokenizer, smollm2_meta):
    """Cross-check with transformers' own chat-template renderer (sandboxed jinja, its settings).

    (transformers' GGUF tokenizer loader is not used: it builds SmolLM2 without the `smollm`
    pre-tokenizer's digit splitting, so its ids differ from llama.cpp's and the HF repo's.)
    """
    from transformers.utils import chat_template_utils  # the [test] extra: always there when tests run

    template = smollm2_meta["tokenizer.chat_template"]
    for messages in CHATML_DIALOGS.values():
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        for gen in (True, False):
            (text,), _ = chat_template_utils.render_jinja_template(
                [dicts], chat_template=template, add_generation_prompt=gen
            )
            tokens = chatml.encode_dialog(messages, add_generation_prompt=gen).tokens
            assert tokens == smollm2_tokenizer.encode(text, allow_special=True)


def test_chatml_default_system_prompt(chatml, smollm2_meta):
    assert chatml.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert default_system_prompt(None) is None
    plain = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}"
    assert default_system_prompt(plain) is None
    qwen_like = (
        "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}{%- endif %}"
        "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    )
    assert default_system_prompt(qwen_like) == "You are Qwen."
    broken = "{% if %}'<|im_start|>system\\nFallback text.<|im_end|>\\n'"  # does not render: read literally
    assert default_system_prompt(broken) == "Fallback text."


def test_chatml_tool_calls_round_trip(chatml, smollm2_tokenizer):
    calls = [ToolCall("get_weather", {"city": "Zürich", "days": [1, 2]}), ToolCall("get_time", {})]
    messages = [
        Message("user", "Weather?"),
        Message("assistant", "Checking.", calls),
        Message("tool", '{"temp": 21}'),
        Message("assistant", tool_calls=calls[:1]),
    ]
    enc = chatml.encode_dialog(messages, add_generation_prompt=False)
    text = smollm2_tokenizer.decode(enc.tokens)
    assert "<|im_start|>tool\n{\"temp\": 21}<|im_end|>\n" in text
    assert (
        '<|im_start|>assistant\nChecking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich", '
        '"days": [1, 2]}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><|im_end|>'
    ) in text
    for m, run in zip([m for m in messages if m.role == "assistant"], runs(enc, enc.target_mask)):
        parsed = chatml.parse_assistant(smollm2_tokenizer.decode(run))
        assert parsed.content == m.content
        assert_same_calls(parsed.tool_calls, m.tool_calls)
    # A malformed block stays text; a good one beside it is still a call; an unclosed final one counts.
    got = chatml.parse_assistant(
        'a <tool_call>\n{"name": broken}\n</tool_call> <tool_call>{"name": "f", "arguments": {}}'
    )
    assert got.content == 'a <tool_call>\n{"name": broken}\n</tool_call>'
    assert_same_calls(got.tool_calls, [ToolCall("f", {})])


# ------------------------------------------------------------------------------------ picking a format


def test_chat_format_for(llama3_tokenizer, smollm2_tokenizer, smollm2_meta):
    assert isinstance(chat_format_for(llama3_tokenizer), Llama3ChatFormat)
    fmt = chat_format_for(smollm2_tokenizer)  # BPETokenizer carries the GGUF's chat_template
    assert isinstance(fmt, ChatMLFormat) and fmt.default_system is not None
    fmt = chat_format_for(smollm2_tokenizer, smollm2_meta["tokenizer.chat_template"])
    assert isinstance(fmt, ChatMLFormat) and fmt.stop_ids >= {smollm2_tokenizer.special_id("<|im_end|>")}
    llama = chat_format_for(llama3_tokenizer)
    stops = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")
    assert llama.stop_ids == frozenset(llama3_tokenizer.special_tokens[t] for t in stops)

    class Bare(Tokenizer):
        name, vocab_size, bos_id, eos_id, pad_id = "bare", 1, None, None, None
        special_tokens: dict[str, int] = {}
        stop_ids = frozenset()

        def encode(self, text, *, bos=False, eos=False, allow_special=False):
            return []

        def decode(self, ids):
            return ""

        def token_bytes(self, token_id):
            return b""

    with pytest.raises(TokenizerError, match="Llama 3.*ChatML"):
        chat_format_for(Bare())
    with pytest.raises(TokenizerError, match="<\\|im_start\\|>"):  # a ChatML template needs ChatML tokens
        chat_format_for(Bare(), "{{ '<|im_start|>' }}")
