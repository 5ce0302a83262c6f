"""Heuristic filters on small documents with known answers."""

from __future__ import annotations

import random
import string

import pytest

from herd.data.curation.filters import (
    C4QualityFilter,
    DirtyWordsFilter,
    FilterResult,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    TokenDistributionKLFilter,
    load_wordlist,
    wordlist_languages,
)

NORMAL = """The river town grew slowly during the nineteenth century, as merchants moved goods between the farms in the valley and the port on the coast.

Most of the early houses were built of timber, and a fire in 1852 destroyed nearly half of them. The council then required brick for every new building on the main street, which is why the centre looks so uniform today.

A railway line reached the town in 1871. It made travel to the capital possible in a single day, and the population doubled within twenty years. Schools, a library and a small hospital followed, paid for partly by local families.

In the twentieth century the port lost its importance to larger harbours further south. The town turned to tourism instead, and the old warehouses by the water now hold cafes, a museum of local history and a market that opens every Saturday morning."""

SPAM_PARAGRAPH = "Buy the best cheap watches online today with free shipping and great prices for everyone."


def test_gopher_repetition_keeps_normal_text() -> None:
    result = GopherRepetitionFilter()(NORMAL)
    assert result.keep and result.reason is None
    assert result.stats["dup_para_frac"] == 0.0


def test_gopher_repetition_catches_repeated_paragraphs() -> None:
    doc = "\n\n".join([NORMAL.split("\n\n")[0]] + [SPAM_PARAGRAPH] * 5)
    result = GopherRepetitionFilter()(doc)
    assert not result.keep and result.reason == "gopher_dup_para_frac"
    assert result.stats["dup_para_frac"] == pytest.approx(4 / 6)


def test_gopher_repetition_ngram_rules() -> None:
    # one paragraph, no duplicate lines, but one phrase repeated over and over
    doc = " ".join(["click here to win a prize now"] * 12 + NORMAL.split()[:40])
    result = GopherRepetitionFilter()(doc)
    assert not result.keep and result.reason.startswith(("gopher_top_", "gopher_dup_"))


def test_gopher_repetition_cjk_uses_characters() -> None:
    doc = "今天天气很好我们去公园散步" * 20
    assert not GopherRepetitionFilter()(doc, lang="zh").keep


def test_gopher_quality_keeps_normal_english() -> None:
    result = GopherQualityFilter()(NORMAL)
    assert result.keep, result
    assert 3 <= result.stats["avg_word_len"] <= 10 and result.stats["stop_words"] >= 2


@pytest.mark.parametrize(
    "doc, reason",
    [
        ("Too short to be a document.", "gopher_too_few_words"),
        (" ".join(["supercalifragilisticexpialidocious"] * 60), "gopher_avg_word_len"),
        (" ".join(["#tag word"] * 60), "gopher_hash_ratio"),
        ("\n".join(["- item with a few words here"] * 20), "gopher_bullet_lines"),
        (
            "\n".join(["and then the story went on and on..."] * 5 + ["The end came later than expected."] * 2) * 3,
            "gopher_ellipsis_lines",
        ),
        (" ".join(["Well\u2026 maybe\u2026 later\u2026"] * 30), "gopher_ellipsis_ratio"),
        (" ".join(["12345 67890 ++ -- 42 7 99"] * 15), "gopher_alpha_words"),
        (" ".join(["Quick brown foxes jump over lazy dogs near rivers."] * 10), "gopher_stop_words"),
    ],
)
def test_gopher_quality_known_cases(doc: str, reason: str) -> None:
    result = GopherQualityFilter()(doc)
    assert not result.keep and result.reason == reason


def test_gopher_quality_stop_words_only_for_english() -> None:
    german = " ".join(["Der schnelle Fuchs springt heute über einen müden Hund im Garten."] * 8)
    assert GopherQualityFilter()(german, lang="de").keep


def test_c4_cleans_lines_and_keeps_page() -> None:
    doc = (
        NORMAL
        + "\nHome\nThis site uses cookies to give you a better experience.\nPlease enable JavaScript to view the comments.\nSee the figure[1] for details of the old harbour."
    )
    result = C4QualityFilter()(doc)
    assert result.keep
    assert "Home" not in result.text and "cookies" not in result.text and "JavaScript" not in result.text
    assert "See the figure for details of the old harbour." in result.text
    assert result.stats.get("lines_removed_short_line", 0) + result.stats["lines_removed_no_terminal_punct"] >= 1
    assert result.stats["lines_removed_policy"] == 1 and result.stats["lines_removed_javascript"] == 1


@pytest.mark.parametrize(
    "doc, reason",
    [
        (NORMAL + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "c4_lorem_ipsum"),
        (NORMAL + '\nWrite the table as the literal {"a": 1, "b": 2} in your config file.', "c4_curly_bracket"),
        ("One sentence here with enough words.\nAnother good sentence that ends well.", "c4_too_few_sentences"),
        ("menu\nhome\nabout us\ncontact", "c4_too_few_sentences"),
    ],
)
def test_c4_known_cases(doc: str, reason: str) -> None:
    result = C4QualityFilter()(doc)
    assert not result.keep and result.reason == reason


def test_c4_curly_bracket_rule_can_be_switched_off_for_code() -> None:
    line = '\nWrite the table as the literal {"a": 1, "b": 2} in your config file.'
    assert C4QualityFilter(filter_curly_bracket=False)(NORMAL + line).keep
    assert C4QualityFilter()(NORMAL + "\nfunction f() { return 1; }").keep  # like C4: that line is dropped first


def test_fineweb_keeps_normal_text() -> None:
    assert FineWebQualityFilter()(NORMAL).keep


@pytest.mark.parametrize(
    "doc, reason",
    [
        (
            "\n".join(f"Item number {i} of the catalogue with a longer name" for i in range(20)),
            "fineweb_line_punct_ratio",
        ),
        (
            "\n".join(
                [
                    "Short line.",
                    "Another one.",
                    "Yes.",
                    "A much longer line that goes on for quite a while, ending well.",
                ]
                * 4
            ),
            "fineweb_short_line_ratio",
        ),
        (
            NORMAL + "\n" + "\n".join(["Subscribe to our newsletter for weekly updates and offers."] * 3),
            "fineweb_char_dup_ratio",
        ),
    ],
)
def test_fineweb_known_cases(doc: str, reason: str) -> None:
    result = FineWebQualityFilter()(doc)
    assert not result.keep and result.reason == reason


def test_filters_never_raise_on_odd_input() -> None:
    filters = [
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(),
        FineWebQualityFilter(),
        DirtyWordsFilter(),
    ]
    for doc in ["", " ", "\n\n\n", "x", "\x00\x01\x02", "🙂" * 100, "a" * 10_000]:
        for f in filters:
            assert isinstance(f(doc), FilterResult)


def test_wordlists_shipped_for_required_languages() -> None:
    assert {"en", "de", "fr", "es", "zh", "ja"} <= set(wordlist_languages())
    assert "blocked_domains" not in wordlist_languages()
    for lang in ("en", "de", "fr", "es"):
        assert len(load_wordlist(lang)) >= 50


def test_dirty_words_counts_whole_words_per_language() -> None:
    f = DirtyWordsFilter()
    assert f.count("This analysis of the class assessment is fine.", "en")[0] == 0  # no substring hits
    assert f.count("anal anal", "en")[0] == 2
    assert f.count("Das war echt scheiße und noch mehr scheiße.", "de")[0] >= 2
    assert f.count("scheiße", "en")[0] == 0  # the English list does not know it
    assert f.count("c'est de la merde, vraiment de la merde", "fr")[0] >= 2


def test_dirty_words_filter_decision() -> None:
    f = DirtyWordsFilter()
    dirty = NORMAL + " " + " ".join(["porn"] * 5)
    result = f(dirty)
    assert not result.keep and result.reason == "dirty_words" and result.stats["dirty_hits"] == 5
    assert f(NORMAL).keep
    one_hit = NORMAL + " The museum has a poster about drug addiction."
    assert DirtyWordsFilter()(one_hit).keep  # a single hit in a long page is not an adult site
    assert not DirtyWordsFilter(min_hits=1, max_ratio=0.0)(NORMAL + " porn").keep  # C4's strict rule
    assert f("Unknown language text porn porn porn", lang="xx").keep  # no list -> keep


def test_dirty_words_cjk_ignores_single_characters() -> None:
    f = DirtyWordsFilter()
    assert f.count("我们交换了礼物，然后进入房间。", "zh")[0] == 0  # 交 and 入 alone are ordinary words


def _corpus() -> list[str]:
    from pydoc_data.topics import topics

    return list(topics.values())


def test_kl_flags_random_tokens_and_keeps_normal_text() -> None:
    texts = _corpus()
    f = TokenDistributionKLFilter()
    f.fit(TokenDistributionKLFilter.count_tokens(texts))
    threshold = f.calibrate(texts, quantile=0.99)
    assert threshold > 0
    rng = random.Random(0)
    junk = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(200))
    normal = (
        "The object is created when the class is called, and the method returns a new list of "
        "values for each item in the sequence. If the argument is not given, the default value is used "
        "and an exception is raised when the name is not found in the module."
    )
    bad, good = f(junk), f(normal)
    assert not bad.keep and bad.reason == "token_kl_outlier"
    assert good.keep and good.stats["kl"] < bad.stats["kl"]
    assert f("too short").keep  # unscored


def test_kl_save_load_roundtrip(tmp_path) -> None:
    f = TokenDistributionKLFilter(threshold=3.0).fit({"the": 10, "cat": 2, "sat": 1})
    f.save(tmp_path / "kl.json")
    g = TokenDistributionKLFilter.load(tmp_path / "kl.json")
    text = "the cat sat " * 10
    assert g.score(text) == pytest.approx(f.score(text)) and g.threshold == 3.0
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        TokenDistributionKLFilter.load(tmp_path / "bad.json")


def test_kl_matches_direct_formula() -> None:
    f = TokenDistributionKLFilter(alpha=1.0, min_tokens=1).fit({"a": 3, "b": 1})
    # q(a) = 4/7, q(b) = 2/7, unseen = 1/7; doc "a a c c": p(a) = p(c) = 1/2
    import math

    expected = 0.5 * math.log(0.5 / (4 / 7)) + 0.5 * math.log(0.5 / (1 / 7))
    assert f.score("a a c c") == pytest.approx(expected)
    with pytest.raises(ValueError):
        TokenDistributionKLFilter().fit({})


def test_decisions_agree_with_datatrove(monkeypatch) -> None:
    """Independent implementation: datatrove's Gopher/C4/FineWeb filters (the code that built
    FineWeb), with its spaCy word tokenizer swapped for whitespace words (Gopher's definition;
    spaCy is not installed) and a regex sentence splitter for C4."""
    import re

    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        c4_filters,
        fineweb_quality_filter,
        gopher_quality_filter,
        gopher_repetition_filter,
    )

    def split_words(text, language="en"):
        return text.split()

    def split_sentences(text, language="en"):
        return [x for x in re.split(r"(?<=[.!?])\s+", text) if x.strip()]

    for module in (gopher_repetition_filter, gopher_quality_filter, fineweb_quality_filter):
        monkeypatch.setattr(module, "split_into_words", split_words)
    monkeypatch.setattr(c4_filters, "split_into_sentences", split_sentences)

    docs = _corpus()
    rng = random.Random(0)
    for _ in range(40):  # documents with repeated paragraphs
        paras = rng.choice(docs).split("\n\n")
        docs.append("\n\n".join(paras + [rng.choice(paras)] * rng.randint(1, 4)))
    pairs = [
        (GopherRepetitionFilter(), gopher_repetition_filter.GopherRepetitionFilter()),
        (GopherQualityFilter(), gopher_quality_filter.GopherQualityFilter()),
        (C4QualityFilter(), c4_filters.C4QualityFilter(min_words_per_line=5, min_num_sentences=3)),
        (FineWebQualityFilter(), fineweb_quality_filter.FineWebQualityFilter()),
    ]
    for ours, theirs in pairs:
        agree = 0
        for text in docs:
            verdict = theirs.filter(Document(text=text, id="d"))
            agree += ours(text).keep == (verdict if isinstance(verdict, bool) else verdict[0])
        assert agree / len(docs) >= 0.95, (ours.name, agree, len(docs))
