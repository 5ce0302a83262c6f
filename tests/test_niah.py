"""Needle in a haystack: exact case construction, scoring, and a real model that retrieves."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import herd
from herd.eval import build_case, evaluate_niah, score_response, training_documents
from herd.eval.niah import needle_sentence
from herd.infer import EngineConfig, LLMEngine
from herd.tokenizer import Llama3Tokenizer


@pytest.fixture(scope="module")
def tok() -> Llama3Tokenizer:
    return Llama3Tokenizer()


@pytest.mark.parametrize("length", [128, 300, 1000])
def test_case_has_exact_length_and_needles_where_asked(tok, length) -> None:
    depths = [0.0, 0.5, 1.0]
    case = build_case(tok, length, depths, seed=3)
    assert case.length == length == max(len(q) for q in case.queries)
    assert case.haystack[0] == tok.bos_id
    assert len({n.key for n in case.needles}) == 3
    positions = [n.position for n in case.needles]
    assert positions == sorted(positions)
    for needle in case.needles:
        ids = tok.encode(needle_sentence(needle.key, needle.value))
        assert case.haystack[needle.position:needle.position + len(ids)] == ids
        assert abs(needle.position / len(case.haystack) - needle.depth) < 0.25
    for needle, query in zip(case.needles, case.queries):
        assert query[: len(case.haystack)] == case.haystack
        assert tok.decode(query[len(case.haystack):]).endswith(f"magic number for {needle.key} is")


def test_bad_arguments_are_refused(tok) -> None:
    with pytest.raises(ValueError, match="depths"):
        build_case(tok, 200, [1.5])
    with pytest.raises(ValueError, match="longer length"):
        build_case(tok, 30, [0.5])
    with pytest.raises(ValueError, match="at least one"):
        build_case(tok, 200, [])


def test_scoring() -> None:
    assert score_response(" 123456.", "123456")
    assert not score_response(" 1234567.", "123456")
    assert not score_response(" I do not know", "123456")
    assert not score_response(" 99 then 123456", "123456")


class ScriptedEngine:
    """Answers correctly only for needles near the start of the context: known accuracy per cell."""

    def generate(self, prompts, params):
        outs = []
        for prompt in prompts:
            text = self.tok.decode(prompt)
            key = text.rsplit("magic number for ", 1)[1].split(" ", 1)[0]
            value = text.split(f"magic number for {key} is ", 1)[1].split(".", 1)[0]
            early = text.index(f"for {key} is") < len(text) * 0.3
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(text=f" {value if early else '0'}.")]))
        return outs

    def __init__(self, tok) -> None:
        self.tok = tok


def test_report_cells_follow_the_answers(tok, tmp_path) -> None:
    report = evaluate_niah(ScriptedEngine(tok), tok, [200, 400], depths=(0.0, 1.0), cases_per_cell=2)
    assert report.cells[(200, 0.0)] == [True, True] and report.cells[(400, 1.0)] == [False, False]
    assert report.accuracy == 0.5 and report.accuracy_at(200) == 0.5
    assert "| 200 | 1.00 | 0.00 | 0.50 |" in report.table()
    assert report.plot(tmp_path / "niah.png").stat().st_size > 1000


def test_smollm2_retrieves_a_single_needle_and_a_random_model_does_not() -> None:
    smol = herd.load_model()
    report = evaluate_niah(LLMEngine(smol, EngineConfig(num_blocks=256)), smol.tokenizer, [384],
                           depths=(0.0, 0.5, 1.0))
    assert report.accuracy == 1.0, report.examples
    rand = herd.load_model("random:llama3-tiny")
    report = evaluate_niah(LLMEngine(rand, EngineConfig(num_blocks=256)), rand.tokenizer, [384],
                           depths=(0.0, 0.5, 1.0))
    assert report.accuracy == 0.0


def test_training_documents_contain_the_answer(tok) -> None:
    docs = training_documents(tok, 3, 256, num_needles=2, seed=1)
    assert len(docs) == 3 and len(set(docs)) == 3
    for doc in docs:
        key = doc.rsplit("magic number for ", 1)[1].split(" ", 1)[0]
        answer = doc.rsplit(" is ", 1)[1].rstrip(".")
        assert f"for {key} is {answer}." in doc.rsplit("\nWhat is", 1)[0]
        assert abs(len(tok.encode(doc)) - 256) <= 8
