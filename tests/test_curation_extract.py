"""HTML main-content extraction: code and math survive, boilerplate goes, bad input never raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from herd.data.curation.extract import ExtractResult, decode_html, extract_main_content, strip_markdown

LABELED = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "extract_labeled"

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Lazy files | DevNotes</title>
<script>var tracking = "should never appear";</script><style>body{color:red}</style></head><body>
<div id="cookie-consent" class="cookie-banner"><p>We use cookies to improve your experience.</p><button>Accept all</button></div>
<header class="site-header"><nav><ul><li><a href="/">Home</a></li><li><a href="/blog">Blog</a></li><li><a href="/about">About us</a></li></ul></nav></header>
<div class="wrapper has-sidebar"><main><article>
<h1>Reading files lazily</h1>
<p>Iterate over the file object so that only a small buffer lives in memory.</p>
<pre><code>with open("log.txt") as f:
    for line in f:
        print(line)
</code></pre>
<p>The cost is <math><semantics><mi>O</mi><annotation encoding="application/x-tex">O(1)</annotation></semantics></math> memory per line.</p>
<math display="block" alttext="\\sum_{i=1}^n i = \\frac{n(n+1)}{2}"><mrow><mo>&#x2211;</mo></mrow></math>
<p>Inline TeX like $a^2 + b^2 = c^2$ and \\(e^{i\\pi}\\) stays as written.</p>
<script type="math/tex">x_1 + x_2</script>
<img src="plot.png" alt="Memory use stays flat while the file grows">
<p>## Not a heading really, and **bold** words with `code` marks.</p>
</article></main>
<aside class="sidebar"><h3>Popular posts</h3><p>Ten tricks for faster loops</p></aside></div>
<footer class="site-footer"><p>Copyright 2024 DevNotes. All rights reserved.</p></footer>
<div class="comments"><p>Great post, thanks a lot!</p></div>
</body></html>"""


@pytest.fixture(scope="module")
def result() -> ExtractResult:
    return extract_main_content(PAGE)


def test_main_text_and_title(result: ExtractResult) -> None:
    assert result.error is None
    assert result.title == "Lazy files | DevNotes"
    assert result.text.splitlines()[0] == "Reading files lazily"
    assert "Iterate over the file object so that only a small buffer lives in memory." in result.text


def test_code_block_survives_verbatim(result: ExtractResult) -> None:
    assert 'with open("log.txt") as f:\n    for line in f:\n        print(line)' in result.text


def test_math_survives(result: ExtractResult) -> None:
    text = result.text
    assert "The cost is $O(1)$ memory per line." in text  # MathML -> its TeX annotation
    assert "$$\\sum_{i=1}^n i = \\frac{n(n+1)}{2}$$" in text  # display MathML -> alttext
    assert "$a^2 + b^2 = c^2$" in text and "\\(e^{i\\pi}\\)" in text  # TeX in the text is untouched
    assert "$x_1 + x_2$" in text  # MathJax script
    assert "Memory use stays flat while the file grows" in text  # image alt text


@pytest.mark.parametrize(
    "boiler",
    [
        "We use cookies",
        "Accept all",
        "Home",
        "About us",
        "Popular posts",
        "Ten tricks",
        "Copyright 2024",
        "Great post",
        "tracking",
        "color:red",
    ],
)
def test_boilerplate_dropped(result: ExtractResult, boiler: str) -> None:
    assert boiler not in result.text


def test_markdown_markers_removed(result: ExtractResult) -> None:
    assert "Not a heading really, and bold words with code marks." in result.text
    assert "##" not in result.text and "**" not in result.text and "`" not in result.text


def test_strip_markdown_leaves_dunders_and_numbers() -> None:
    assert strip_markdown("- item one") == "item one"
    assert strip_markdown("> quoted [link](https://x.org) and ![alt text](a.png)") == "quoted link and alt text"
    assert strip_markdown("__init__ and 2 * 3 * 4") == "__init__ and 2 * 3 * 4"
    assert strip_markdown("---") == ""


def test_katex_visual_duplicate_dropped() -> None:
    html = (
        '<p>Softmax <span class="katex"><span class="katex-mathml"><math><semantics><mi>p</mi>'
        '<annotation encoding="application/x-tex">p_i = e^{z_i}</annotation></semantics></math></span>'
        '<span class="katex-html" aria-hidden="true">p i = e z i</span></span> works.</p>'
    )
    assert extract_main_content(html).text == "Softmax $p_i = e^{z_i}$ works."


def test_no_main_element_falls_back_to_body_and_drops_link_lists() -> None:
    html = (
        "<body><div><a href='/a'>Alpha</a> <a href='/b'>Beta</a> <a href='/c'>Gamma</a></div>"
        "<div><p>Plain old page with the real content in a div.</p></div></body>"
    )
    assert extract_main_content(html).text == "Plain old page with the real content in a div."


def test_table_rows_are_lines() -> None:
    html = "<table><tr><th>Volume</th><td>40 litres</td></tr><tr><th>Weight</th><td>1.2 kg</td></tr></table>"
    assert extract_main_content(html).text == "Volume 40 litres\nWeight 1.2 kg"


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("", "empty_input"),
        (b"", "empty_input"),
        ("   \n\t ", "empty_input"),
        (b"<p>" + b"\x80\x81\xfa\xfb" * 200 + b"</p>", "undecodable_bytes"),
        ("<html><body><script>only()</script><nav><a href='/'>x</a></nav></body></html>", "no_content"),
        (None, "empty_input"),
    ],
)
def test_bad_input_gives_reason_not_exception(bad, reason: str) -> None:
    result = extract_main_content(bad)
    assert result.text == "" and result.error == reason


@pytest.mark.parametrize(
    "broken",
    [
        "<html><body><p>Unclosed <b>bold <i>and <div>nested</p></span></body>",
        "<<<>>><p>>>text after garbage</p><!-- unclosed comment",
        "<p>" + "<div>" * 5000 + "deep" + "</div>" * 10,
        "<p>null\x00bytes\x00inside</p>",
        "<svg><math><mi>x</mi></svg></math><p>tail</p>",
    ],
)
def test_broken_html_never_raises(broken: str) -> None:
    result = extract_main_content(broken)
    assert isinstance(result, ExtractResult)
    assert (result.error is None) == bool(result.text)


def test_non_utf8_bytes_use_meta_charset() -> None:
    html = '<html><head><meta charset="iso-8859-1"></head><body><p>Caf\xe9 cr\xe8me br\xfbl\xe9e</p></body></html>'
    result = extract_main_content(html.encode("latin-1"))
    assert result.error is None and result.text == "Café crème brûlée" and result.encoding == "iso8859-1"


def test_undeclared_bad_bytes_fall_back_with_replacement() -> None:
    data = "<p>Stra\xdfe und sehr viel normaler Text daneben, damit es lesbar bleibt.</p>".encode("latin-1")
    result = extract_main_content(data)
    assert result.error is None and result.replaced_chars == 1 and "Stra\ufffde" in result.text


def test_decode_html_bom_and_bogus_charset() -> None:
    assert decode_html(b"\xef\xbb\xbf<p>hi</p>")[:2] == ("<p>hi</p>", "utf-8")
    text, codec, replaced = decode_html(b'<meta charset="no-such-codec"><p>ok \xc3\xa9</p>')
    assert codec == "utf-8" and text.endswith("ok \xe9</p>") and replaced == 0


def test_labeled_set_recall_and_precision() -> None:
    """Our extractor on the hand-labeled pages: most gold lines found, little boilerplate kept."""
    import re

    def norm(s: str) -> str:
        return " " + " ".join(re.findall(r"\w+", s.lower().replace("_", " "))) + " "

    pages = sorted(LABELED.glob("*.html"))
    assert len(pages) >= 15
    found = total = precise = predicted = 0
    for page in pages:
        gold = [norm(x) for x in page.with_suffix(".gold.txt").read_text(encoding="utf-8").splitlines() if x.strip()]
        pred = [norm(x) for x in extract_main_content(page.read_bytes()).text.splitlines() if norm(x).strip()]
        pred_all, gold_all = " ".join(pred), " ".join(gold)
        found += sum(g in pred_all for g in gold)
        total += len(gold)
        precise += sum(p in gold_all for p in pred)
        predicted += len(pred)
    assert found / total > 0.95
    assert precise / predicted > 0.90


def test_mutated_pages_never_raise() -> None:
    """Truncated, byte-flipped and re-encoded copies of the labeled pages: always a result, never an exception."""
    import random

    rng = random.Random(1)
    pages = [p.read_bytes() for p in sorted(LABELED.glob("*.html"))]
    for raw in pages:
        cut = raw[: rng.randint(0, len(raw))]
        flipped = bytearray(raw)
        for _ in range(50):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        for variant in (cut, bytes(flipped), raw.decode("utf-8").encode("utf-16"), raw.replace(b">", b"")):
            result = extract_main_content(variant)
            assert isinstance(result, ExtractResult) and (result.error is None) == bool(result.text)


def test_parser_failure_becomes_a_reason(monkeypatch) -> None:
    import herd.data.curation.extract as extract

    def boom(_html: str) -> None:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(extract, "LexborHTMLParser", boom)
    result = extract.extract_main_content("<p>fine page</p>")
    assert result == ExtractResult("", error="parse_error:RuntimeError")


def test_code_inside_boilerplate_looking_wrapper_survives() -> None:
    html = (
        "<body><p>Install it first and then run the tool on your files.</p>"
        '<div class="code-toolbar"><pre class="language-bash"><code>pip install mytool\nmytool --help</code></pre>'
        '<div class="toolbar"><button>Copy</button></div></div></body>'
    )
    text = extract_main_content(html).text
    assert text.endswith("pip install mytool\nmytool --help") and "Copy" not in text


MI, MN, MO = (lambda t: f"<mi>{t}</mi>"), (lambda t: f"<mn>{t}</mn>"), (lambda t: f"<mo>{t}</mo>")


@pytest.mark.parametrize(
    ("mathml", "tex"),
    [
        # the reported case: every child of <math>, nested ones included
        (MI("E") + MO("=") + MI("m") + f"<msup>{MI('c')}{MN('2')}</msup>", "E = mc^2"),
        (f"<msup>{MI('e')}<mrow>{MI('i')}{MI('&#x3C0;')}</mrow></msup>", r"e^{i\pi}"),
        (f"<msub>{MI('x')}<mrow>{MI('i')}{MO('+')}{MN('1')}</mrow></msub>", "x_{i + 1}"),
        (f"<msubsup>{MI('a')}{MI('n')}{MN('2')}</msubsup>", "a_n^2"),
        (f"<mfrac><mrow>{MO('-')}{MI('b')}</mrow><mrow>{MN('2')}{MI('a')}</mrow></mfrac>", r"\frac{-b}{2a}"),
        (f"<msqrt>{MI('x')}{MO('+')}{MN('1')}</msqrt>", r"\sqrt{x + 1}"),
        (f"<mroot>{MI('x')}{MN('3')}</mroot>", r"\sqrt[3]{x}"),
        (f"<mover>{MI('x')}{MO('^')}</mover>", r"\hat{x}"),
        (f"<mover>{MI('v')}{MO('&#x2192;')}</mover>", r"\vec{v}"),
        (f"<mover>{MO('=')}{MI('def')}</mover>", r"\overset{\mathrm{def}}{=}"),
        (f"<munder><mo>lim</mo><mrow>{MI('n')}{MO('&#x2192;')}{MI('&#x221E;')}</mrow></munder>",
         r"\lim_{n \to \infty}"),
        (f"<munder>{MI('x')}{MO('_')}</munder>", r"\underline{x}"),
        (f"<munderover>{MO('&#x2211;')}<mrow>{MI('i')}{MO('=')}{MN('1')}</mrow>{MI('n')}</munderover>"
         f"<msub>{MI('x')}{MI('i')}</msub>", r"\sum_{i = 1}^n x_i"),
        (f"<mtable><mtr><mtd>{MN('1')}</mtd><mtd>{MN('0')}</mtd></mtr>"
         f"<mtr><mtd>{MN('0')}</mtd><mtd>{MN('1')}</mtd></mtr></mtable>",
         r"\begin{matrix} 1 & 0 \\ 0 & 1 \end{matrix}"),
        (f"<mfenced open='['><mtable><mtr><mtd>{MI('a')}</mtd></mtr><mtr><mtd>{MI('b')}</mtd></mtr></mtable></mfenced>",
         r"\begin{bmatrix} a \\ b \end{bmatrix}"),
        (MI("f") + MO("&#x2061;") + f"<mfenced>{MI('x')}{MI('y')}</mfenced>", "f(x, y)"),
        (f"<mfenced open='{{' close='}}' separators=';'>{MN('1')}{MN('2')}</mfenced>", r"\{1; 2\}"),
        (f"<mrow>{MI('sin')}{MO('&#x2061;')}{MI('&#x3B8;')}</mrow>{MO('&#x2264;')}{MN('1')}", r"\sin\theta \leq 1"),
        (MI("x") + MO("&#x2208;") + MI("&#x211D;") + "<mtext>for all</mtext>" + MI("y"),
         r"x \in \mathbb{R}\text{for all}y"),
        # semantics: the TeX annotation wins over the presentation markup (Wikipedia's MathML carries it)
        (f"<semantics><mrow>{MI('x')}</mrow><annotation encoding='application/x-tex'>\\displaystyle x^2</annotation>"
         "</semantics>", r"\displaystyle x^2"),
        (f"<semantics><mrow>{MI('x')}{MO('+')}{MI('y')}</mrow><annotation encoding='text/plain'>x plus y</annotation>"
         "</semantics>", "x + y"),
    ],
)
def test_mathml_becomes_tex(mathml: str, tex: str) -> None:
    result = extract_main_content(f"<html><body><p>Formula <math>{mathml}</math> here.</p></body></html>")
    assert result.text == f"Formula ${tex}$ here."


def test_mathml_nested_semantics_annotation_and_display_block() -> None:
    inner = (f"<mfrac><semantics>{MI('a')}<annotation encoding='application/x-tex'>\\alpha</annotation></semantics>"
             f"{MN('2')}</mfrac>")
    result = extract_main_content(f"<html><body><p>Half:</p><math display='block'>{inner}</math></body></html>")
    # a nested annotation is the TeX of its part only
    assert result.text.splitlines() == ["Half:", r"$$\frac{\alpha}{2}$$"]
