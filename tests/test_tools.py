"""herd.tools: function schemas and argument checks, the code interpreter, the math engine, the agent loop."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Literal

import pytest

from herd.tokenizer.chat import Message, ToolCall
from herd.tools import CodeInterpreter, MathEngine, Toolbox, run_agent, tool
from herd.tools.function import ToolSchemaError, parse_docstring


# ---- function calling ------------------------------------------------------------------------------------
@tool
def get_weather(city: str, days: int = 1, unit: Literal["celsius", "fahrenheit"] = "celsius",
                scale: float | None = None, tags: list[str] | None = None) -> dict:
    """Weather forecast for a city.

    Args:
        city: The city name, e.g. Paris.
        days: How many days ahead
            (1 to 7).
        unit: Temperature unit.
    """
    return {"city": city, "days": days, "unit": unit, "scale": scale, "tags": tags}


def test_tool_schema_from_signature_and_docstring() -> None:
    assert get_weather.name == "get_weather" and get_weather.description == "Weather forecast for a city."
    p = get_weather.parameters
    assert p["required"] == ["city"]
    assert p["properties"]["city"] == {"type": "string", "description": "The city name, e.g. Paris."}
    assert p["properties"]["days"] == {"type": "integer", "description": "How many days ahead (1 to 7).", "default": 1}
    assert p["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert p["properties"]["scale"] == {"type": "number"}
    assert p["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert get_weather.definition.parameters is p
    assert parse_docstring(None) == ("", {})

    with pytest.raises(ToolSchemaError, match="args"):
        @tool
        def spread(*args: int) -> int:
            return 0


def test_arguments_are_checked_and_errors_go_back_as_text() -> None:
    assert '"city": "Oslo"' in get_weather.call({"city": "Oslo", "scale": 2})  # an int is a number
    assert get_weather.call('{"city": "Oslo", "days": 3}').count('"days": 3') == 1
    missing = get_weather.call({})
    assert missing.startswith("Error calling get_weather") and "missing required argument 'city'" in missing
    assert "must be an integer, got str" in get_weather.call({"city": "Oslo", "days": "3"})
    assert "must be one of ['celsius', 'fahrenheit']" in get_weather.call({"city": "Oslo", "unit": "kelvin"})
    assert "unknown argument 'country'" in get_weather.call({"city": "Oslo", "country": "NO"})
    assert "argument 'tags'[1] must be a string" in get_weather.call({"city": "Oslo", "tags": ["a", 2]})
    assert "not valid JSON" in get_weather.call("{city: Oslo")

    @tool(name="divide")
    def div(a: float, b: float) -> float:
        """Divide a by b."""
        return a / b

    assert div.call({"a": 1, "b": 0}) == "Error: divide raised ZeroDivisionError: division by zero"
    assert div.call({"a": 1, "b": 4}) == "0.25"


# ---- code interpreter ------------------------------------------------------------------------------------
def test_code_interpreter_keeps_the_working_directory_between_calls() -> None:
    interpreter = CodeInterpreter(timeout_s=10)
    interpreter.upload("data.csv", "x\n1\n2\n3\n")
    first = interpreter.run("rows = open('data.csv').read().split()[1:]\nopen('sum.txt', 'w').write(str(sum(map(int, rows))))")
    assert first.status == "ok" and any(f.startswith("sum.txt") for f in first.new_files)
    second = interpreter("print(open('sum.txt').read())")
    assert second.startswith("completed") and "[stdout]\n6\n[/stdout]" in second
    failing = interpreter.run("1 / 0")
    assert failing.status == "error" and failing.error_type == "ZeroDivisionError"
    assert interpreter("1 / 0").startswith("error: ZeroDivisionError")


def test_code_interpreter_timeout_is_a_result_and_output_is_capped() -> None:
    interpreter = CodeInterpreter(timeout_s=1, max_output_chars=200)
    start = time.perf_counter()
    assert interpreter("while True: pass").startswith("timeout")
    assert time.perf_counter() - start < 10
    long = interpreter.run("print('y' * 5000)")
    assert len(long.stdout) < 400 and "characters cut" in long.stdout


# ---- math engine -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def math_engine() -> MathEngine:
    return MathEngine(timeout_s=3)


def test_math_engine_answers_in_sections(math_engine: MathEngine) -> None:
    integral = math_engine("integrate x^2 sin x from 0 to pi")
    assert "Result:\n-4 + pi**2" in integral and "Decimal approximation:\n5.8696044010893" in integral
    assert "Result:\n[2, 3]" in math_engine("solve x^2 - 5x + 6")
    assert "Result:\n1267650600228229401496703205376" in math_engine("2^100")
    assert "Result:\n3*x**2 + 2" in math_engine("derivative of x^3 + 2x")
    assert "127 * 9721" in math_engine("factor 1234567")


def test_math_engine_times_out_and_runs_queries_only_in_the_sandbox(math_engine: MathEngine, tmp_path: Path) -> None:
    start = time.perf_counter()
    hard = math_engine("factor " + "1000000000000000000000000000000000000000000000000000000000000000000000000000007*"
                       "1000000000000000000000000000000000000000000000000000000000000000000000000000000000009")
    assert hard.startswith("Error: the computation did not finish") and time.perf_counter() - start < 10
    marker = Path("/tmp") / f"herd-math-{uuid.uuid4().hex}"
    answer = math_engine(f"__import__('os').system('touch {marker}')")
    assert not marker.exists() and isinstance(answer, str)
    assert not os.path.exists(marker)


# ---- agent loop ------------------------------------------------------------------------------------------
class Scripted:
    """Replies with the given raw texts, parsed by the real Llama 3 chat format."""

    def __init__(self, fmt, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
        self.fmt, self.texts, self.seen = fmt, list(texts), []

    def respond(self, messages):  # type: ignore[no-untyped-def]
        self.seen.append(list(messages))
        text = self.texts.pop(0) if len(self.texts) > 1 else self.texts[0]
        return self.fmt.parse_assistant(text)


@pytest.fixture(scope="module")
def fmt(llama3_tokenizer):  # type: ignore[no-untyped-def]
    from herd.tokenizer.llama3_chat import Llama3ChatFormat

    return Llama3ChatFormat(llama3_tokenizer)


def test_agent_runs_code_then_answers(fmt) -> None:  # type: ignore[no-untyped-def]
    model = Scripted(fmt, ["<|python_tag|>print(6*7)<|eom_id|>", "The answer is 42.<|eot_id|>"])
    result = run_agent(model, [{"role": "user", "content": "What is 6 times 7? Use Python."}],
                       Toolbox(["code_interpreter"]))
    assert result.stop_reason == "eot" and len(result.messages) == 4
    user, call, tool_result, answer = result.messages
    assert call.tool_calls[0].name == "code_interpreter" and call.end_of_message
    assert tool_result.role == "ipython" and "42" in tool_result.content
    assert answer.content == "The answer is 42." and result.answer == "The answer is 42."
    assert [s.kind for s in result.steps] == ["model", "tool", "model"]


def test_agent_stops_at_max_steps_and_reports_bad_calls(fmt) -> None:  # type: ignore[no-untyped-def]
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    forever = Scripted(fmt, ['{"name": "add", "parameters": {"a": 1, "b": "two"}}<|eom_id|>'])
    result = run_agent(forever, [Message("user", "add")], Toolbox(custom=[add]), max_steps=3)
    assert result.stop_reason == "max_steps" and len(forever.seen) == 3
    results = [m.content for m in result.messages if m.role == "ipython"]
    assert len(results) == 3 and all("argument 'b' must be an integer" in r for r in results)
    toolbox = Toolbox(custom=[add])
    assert toolbox.run(ToolCall("nope", {})).startswith("Error: there is no tool named 'nope'")
    assert toolbox.run(ToolCall("add", {"a": 2, "b": 3})) == "5"
    refused = run_agent(Scripted(fmt, ['{"name": "add", "parameters": {"a": 1, "b": 2}}<|eom_id|>']),
                        [Message("user", "add")], toolbox, guards=[lambda call: "no adding today"])
    assert refused.stop_reason == "guard" and "no adding today" in refused.messages[-1].content
    with pytest.raises(ValueError, match="unknown built-in"):
        Toolbox(["brave_search_v9"])


def test_engine_agent_model_offers_the_tools_and_parses_the_reply() -> None:
    from herd.loading import load_model
    from herd.tools.agent import EngineAgentModel

    loaded = load_model("random:llama3-tiny", seed=0)
    model = EngineAgentModel(loaded, Toolbox(["code_interpreter", "wolfram_alpha"], custom=[get_weather]),
                             max_tokens=4)
    prompt = model.prompt([Message("user", "hi")])
    assert prompt[0].role == "system" and prompt[0].content.startswith("Environment: ipython")
    assert "Tools: wolfram_alpha" in prompt[0].content and '"name": "get_weather"' in prompt[1].content
    reply = model.respond([Message("user", "hi")])
    assert reply.role == "assistant"


def test_agent_command_reads_a_tool_module_and_checks_its_flags(tmp_path: Path) -> None:
    from herd.cli import main
    from herd.tools.cli import load_tool_module

    module = tmp_path / "my_tools.py"
    module.write_text("from herd.tools import tool\n\n@tool\ndef shout(text: str) -> str:\n"
                      "    \"\"\"Upper-case a text.\"\"\"\n    return text.upper()\n")
    (loaded,) = load_tool_module(str(module))
    assert loaded.name == "shout" and loaded.call({"text": "hi"}) == "HI"
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="no @herd.tools.tool"):
        load_tool_module(str(tmp_path / "empty.py"))
    assert main(["agent", "--tools", "web", "--prompt", "hi"]) == 2
    assert main(["agent", "--tool-module", str(tmp_path / "missing.py"), "--prompt", "hi"]) != 0


# ---- search ----------------------------------------------------------------------------------------------
def test_search_finds_the_json_docs_in_the_standard_library_index(tmp_path: Path) -> None:
    import json

    from herd.tools.search import default_index

    start = time.perf_counter()
    index = default_index(tmp_path)
    built = time.perf_counter() - start
    assert len(index.documents) > 2000 and list((tmp_path / "search").glob("*.pkl"))
    results = index.search("serialize python object to JSON string with indentation", k=3)
    assert any(r["title"].startswith("json") for r in results), results
    assert set(results[0]) == {"title", "url", "description"} and results[0]["url"].startswith("https://docs.python.org/")
    assert any(r["title"] == "list.sort" for r in index.search("sort a list in place", k=3))
    again = default_index(tmp_path)  # read back from the cache
    assert [d.title for d in again.documents[:50]] == [d.title for d in index.documents[:50]] and built > 0
    box = Toolbox(["brave_search"], search_index=index)
    answer = json.loads(box.run(ToolCall("brave_search", {"query": "csv reader"})))
    assert answer and answer[0]["title"].startswith("csv")


LS_PAGE = r""".\" a page as Debian ships it (gzipped roff)
.TH LS "1" "April 2024" "GNU coreutils 9.4" "User Commands"
.SH NAME
ls \- list directory contents
.SH SYNOPSIS
.B ls
[\fI\,OPTION\/\fR]... [\fI\,FILE\/\fR]...
.SH DESCRIPTION
.\" Add any additional description here
.PP
List information about the FILEs (the current directory by default).
Sort entries alphabetically if none of \fB\-cftuvSUX\fR nor \fB\-\-sort\fR is specified.
.PP
Mandatory arguments to long options are mandatory for short options too.
.TP
\fB\-a\fR, \fB\-\-all\fR
do not ignore entries starting with .
"""


def test_man_pages_become_search_documents(tmp_path: Path) -> None:
    import gzip

    from herd.tools.man_pages import man_documents, roff_text
    from herd.tools.search import SearchIndex

    (tmp_path / "man1").mkdir()
    (tmp_path / "man1" / "ls.1.gz").write_bytes(gzip.compress(LS_PAGE.encode()))
    (tmp_path / "man1" / "dir.1.gz").write_bytes(gzip.compress(b".so man1/ls.1\n"))  # a pointer: skipped
    (tmp_path / "man1" / "broken.1.gz").write_bytes(b"not gzip")
    (doc,) = man_documents(tmp_path, ("1", "8"))
    assert doc.title == "ls(1)" and doc.url == "man:ls(1)"
    assert doc.text.startswith("ls - list directory contents\nList information about the FILEs")
    assert "-cftuvSUX nor --sort is specified." in doc.text and "Mandatory" not in doc.text  # first paragraph
    assert "\\f" not in doc.text and ".PP" not in doc.text
    assert roff_text(".B grep\n\\fIpattern\\fR \\(em text") == "grep\npattern text"
    index = SearchIndex.build([doc])
    assert index.search("list the contents of a directory")[0]["title"] == "ls(1)"


@pytest.mark.skipif(not Path("/usr/share/man/man1/ls.1.gz").is_file(), reason="this system ships no man pages")
def test_the_local_index_finds_shell_commands_in_the_man_pages(tmp_path: Path) -> None:
    from herd.tools.search import default_index

    index = default_index(tmp_path, man=True)
    assert "ls(1)" in [r["title"] for r in index.search("list directory contents", k=3)]
    assert any(r["title"].startswith("json") for r in index.search(
        "serialize python object to JSON string with indentation", k=3))


def test_search_over_your_own_documents() -> None:
    from herd.tools import Document, SearchIndex
    from herd.tools.search import stem

    index = SearchIndex.build([Document("Oven manual", "file:///oven", "Preheat the oven to 200 degrees before baking."),
                               Document("Bike manual", "file:///bike", "Inflate the tyres and oil the chain."),
                               Document("Bread", "file:///bread", "Knead the dough, let it rise, then bake it.")])
    assert [r["title"] for r in index.search("baking bread in the oven", k=2)] == ["Oven manual", "Bread"] or \
        [r["title"] for r in index.search("baking bread in the oven", k=2)] == ["Bread", "Oven manual"]
    assert index.search("quantum chromodynamics") == []
    assert stem("indentation") == "indent" and stem("serialized") == stem("serialize") and stem("strings") == "str"


def test_the_code_shield_screens_code_interpreter_calls() -> None:
    from herd.safety.code_shield import Policy

    blocking = Toolbox(["code_interpreter"], code_shield=Policy.from_mode("block"))
    marker = f"/tmp/herd-shield-{uuid.uuid4().hex}"
    code = f"import os\ncommand = 'touch ' + {marker!r}\nos.system(command)"  # a shell command built at run time
    result = blocking.run(ToolCall("code_interpreter", {"code": code}))
    assert result.startswith("Error: the code shield blocked this code: CWE-78") and "line 3" in result
    assert not os.path.exists(marker)
    warning = Toolbox(["code_interpreter"], code_shield=Policy.from_mode("warn"))
    result = warning.run(ToolCall("code_interpreter", {"code": "import hashlib\nprint(hashlib.md5(b'x').hexdigest()[:6])"}))
    assert result.startswith("warning: insecure code: CWE-") and "9dd4e4" in result
    clean = blocking.run(ToolCall("code_interpreter", {"code": "print(6 * 7)"}))
    assert clean.startswith("completed") and "42" in clean
