"""Presentation MathML -> TeX, for pages whose `<math>` carries neither a TeX annotation nor alttext.

Why: the extractor must keep mathematics as the model will read and write it (Llama 3 paper, section
3.1.1); taking only the direct text of `<math>` loses every nested element (`E = mc^2` came out as
`E = m`). The conversion is structural and small: tokens (`mi`, `mn`, `mo`, `mtext`) map to TeX symbols,
layout elements (`msup`, `msub`, `msubsup`, `mfrac`, `msqrt`, `mroot`, `mover`, `munder`, `munderover`,
`mfenced`, `mtable`/`mtr`/`mtd`, `mrow`) to their TeX constructs, and `semantics` to its TeX annotation
when it has one (Wikipedia's MathML always does) or else to its first child. Unknown elements contribute
their children, so a new tag degrades to its text rather than disappearing.

The node type is selectolax's (`LexborNode`); only `.tag`, `.attributes`, `.text()` and `.iter()` are used.
"""

from __future__ import annotations

import re
from typing import Any

# Unicode in <mi>/<mo> -> TeX. Invisible operators (function application, invisible times/separator) vanish.
SYMBOLS = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\varepsilon", "ϵ": r"\epsilon",
    "ζ": r"\zeta", "η": r"\eta", "θ": r"\theta", "ϑ": r"\vartheta", "ι": r"\iota", "κ": r"\kappa",
    "λ": r"\lambda", "μ": r"\mu", "ν": r"\nu", "ξ": r"\xi", "π": r"\pi", "ρ": r"\rho", "σ": r"\sigma",
    "τ": r"\tau", "υ": r"\upsilon", "φ": r"\varphi", "ϕ": r"\phi", "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega",
    "Γ": r"\Gamma", "Δ": r"\Delta", "Θ": r"\Theta", "Λ": r"\Lambda", "Ξ": r"\Xi", "Π": r"\Pi",
    "Σ": r"\Sigma", "Φ": r"\Phi", "Ψ": r"\Psi", "Ω": r"\Omega",
    "∑": r"\sum", "∏": r"\prod", "∐": r"\coprod", "∫": r"\int", "∬": r"\iint", "∮": r"\oint",
    "⋃": r"\bigcup", "⋂": r"\bigcap", "±": r"\pm", "∓": r"\mp", "×": r"\times", "÷": r"\div",
    "·": r"\cdot", "⋅": r"\cdot", "∘": r"\circ", "∗": "*", "−": "-", "≤": r"\leq", "≥": r"\geq",
    "≠": r"\neq", "≈": r"\approx", "≡": r"\equiv", "∼": r"\sim", "≃": r"\simeq", "∝": r"\propto",
    "→": r"\to", "←": r"\leftarrow", "↔": r"\leftrightarrow", "⇒": r"\Rightarrow", "⇐": r"\Leftarrow",
    "⇔": r"\Leftrightarrow", "↦": r"\mapsto", "∈": r"\in", "∉": r"\notin", "∋": r"\ni", "⊂": r"\subset",
    "⊆": r"\subseteq", "⊃": r"\supset", "⊇": r"\supseteq", "∪": r"\cup", "∩": r"\cap", "∅": r"\emptyset",
    "∀": r"\forall", "∃": r"\exists", "¬": r"\neg", "∧": r"\wedge", "∨": r"\vee", "∞": r"\infty",
    "∂": r"\partial", "∇": r"\nabla", "ℝ": r"\mathbb{R}", "ℕ": r"\mathbb{N}", "ℤ": r"\mathbb{Z}",
    "ℚ": r"\mathbb{Q}", "ℂ": r"\mathbb{C}", "ℓ": r"\ell", "ℏ": r"\hbar", "…": r"\ldots", "⋯": r"\cdots",
    "⋮": r"\vdots", "⋱": r"\ddots", "′": "'", "″": "''", "⟨": r"\langle", "⟩": r"\rangle", "‖": r"\|",
    "⌊": r"\lfloor", "⌋": r"\rfloor", "⌈": r"\lceil", "⌉": r"\rceil", "°": r"^\circ",
    "\u2061": "", "\u2062": "", "\u2063": "", "\u2064": "",
}
# multi-letter identifiers TeX has as operators; others become \mathrm{...}
FUNCTIONS = {"sin", "cos", "tan", "cot", "sec", "csc", "sinh", "cosh", "tanh", "arcsin", "arccos", "arctan",
             "log", "ln", "lg", "exp", "lim", "liminf", "limsup", "max", "min", "sup", "inf", "det", "dim",
             "ker", "deg", "gcd", "arg", "Pr", "hom"}
# operators whose limits go below/above (munder/mover/munderover write them as sub/superscripts)
BIG_OPERATORS = {r"\sum", r"\prod", r"\coprod", r"\int", r"\iint", r"\oint", r"\bigcup", r"\bigcap", r"\lim",
                 r"\max", r"\min", r"\sup", r"\inf", r"\liminf", r"\limsup", r"\det", r"\Pr", r"\gcd"}
# an <mo> over/under a base that is an accent, not a limit
ACCENTS_OVER = {"^": r"\hat", "ˆ": r"\hat", "̂": r"\hat", "~": r"\tilde", "˜": r"\tilde", "̃": r"\tilde",
                "¯": r"\bar", "‾": r"\overline", "̅": r"\overline", "→": r"\vec", "⃗": r"\vec", "˙": r"\dot",
                "¨": r"\ddot", "⏞": r"\overbrace", "︷": r"\overbrace"}
ACCENTS_UNDER = {"_": r"\underline", "̲": r"\underline", "‾": r"\underline", "⏟": r"\underbrace",
                 "︸": r"\underbrace"}
_FENCES = set("()[]{}|") | {r"\langle", r"\rangle", r"\|", r"\lfloor", r"\rfloor", r"\lceil", r"\rceil"}
_PUNCT = {",", ";", ".", "!", "'", "''", ":"}
_SIGNS = {"-", "+", r"\pm", r"\mp"}
_MATRIX = {"(": "pmatrix", "[": "bmatrix", "|": "vmatrix", "{": "Bmatrix", r"\|": "Vmatrix"}
_ATOM = re.compile(r"[A-Za-z0-9]|\\[A-Za-z]+|\d+(?:\.\d+)?|\{.*\}")
_SKIP = {"annotation", "annotation-xml", "none", "mprescripts", "-comment"}
_TEX_ENCODINGS = ("application/x-tex", "tex", "latex")


def _elements(node: Any) -> list[Any]:
    """Element children (text nodes between elements are whitespace in well-formed MathML)."""
    return [c for c in node.iter(include_text=False) if isinstance(c.tag, str) and c.tag not in _SKIP]


def _text(node: Any) -> str:
    return " ".join((node.text(deep=True) or "").split())


def _symbol(text: str) -> str:
    return "".join(SYMBOLS.get(ch, _escape(ch)) for ch in text)


def _escape(ch: str) -> str:
    return {"{": r"\{", "}": r"\}", "%": r"\%", "#": r"\#", "&": r"\&", "$": r"\$"}.get(ch, ch)


def _group(tex: str) -> str:
    """`tex` as one TeX argument: braces unless it already is a single atom (x, 2, 10, \\alpha, {...})."""
    if _ATOM.fullmatch(tex) and not (tex.startswith("{") and not _balanced_group(tex)):
        return tex
    return "{" + tex + "}"


def _balanced_group(tex: str) -> bool:
    """True when `tex` is one {...} group (not `{a}+{b}`)."""
    depth = 0
    for i, ch in enumerate(tex):
        if ch == "{" and (i == 0 or tex[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and tex[i - 1] != "\\":
            depth -= 1
            if depth == 0 and i != len(tex) - 1:
                return False
    return depth == 0


def _join(parts: list[str]) -> str:
    """Concatenate converted siblings: a space only where TeX needs one (after a control word before a
    letter) or where it reads better (around binary operators and relations, after punctuation)."""
    out = ""
    for part in parts:
        if not part:
            continue
        if part.strip() in _SIGNS and (not out.strip() or out.endswith(" ") or out.rstrip()[-1] in "([{"):
            part = part.strip()  # a sign, not a binary operator: -b, (-1), a = -b
        if out and re.search(r"\\[A-Za-z]+$", out) and re.match(r"[A-Za-z]", part):
            out += " "  # \alpha x, not \alphax
        elif re.search(r"[_^][A-Za-z0-9]$", out) and re.match(r"[A-Za-z0-9\\]", part):
            out += " "  # \sum_i^n x_i, not \sum_i^nx_i (same TeX, but readable)
        out += part
    return re.sub(r" {2,}", " ", out).strip()


def _mo(node: Any) -> str:
    raw = _text(node)
    tex = _symbol(raw)
    if raw in FUNCTIONS:  # <mo>lim</mo> and friends
        return "\\" + raw
    if not tex or tex in _FENCES or tex in BIG_OPERATORS or node.attributes.get("fence") == "true":
        return tex
    if tex in _PUNCT:
        return tex + " "
    if tex.startswith("^") or tex in ("'", "''"):
        return tex
    return f" {tex} "


def _mi(node: Any) -> str:
    raw = _text(node)
    if len(raw) > 1:
        if raw in FUNCTIONS:
            return "\\" + raw
        if all(ch in SYMBOLS for ch in raw):
            return _symbol(raw)
        return r"\mathrm{" + raw + "}"
    return _symbol(raw)


def _tex_annotation(node: Any) -> str | None:
    for child in node.iter(include_text=False):
        if child.tag == "annotation" and (child.attributes.get("encoding") or "").lower() in _TEX_ENCODINGS:
            tex = (child.text(deep=True) or "").strip()
            if tex:
                return tex
    return None


def _big(tex: str) -> bool:
    return tex.strip() in BIG_OPERATORS


def convert(node: Any) -> str:
    """TeX for one MathML element (recursively)."""
    tag = node.tag
    kids = _elements(node)
    conv = [convert(k) for k in kids]
    if tag == "mi":
        return _mi(node)
    if tag == "mn":
        return _text(node)
    if tag == "mo":
        return _mo(node)
    if tag in ("mtext", "ms"):
        text = _text(node)
        return r"\text{" + "".join(_escape(c) for c in text) + "}" if text else " "
    if tag == "mspace":
        return " "
    if tag == "semantics":
        tex = _tex_annotation(node)
        return tex if tex is not None else (conv[0] if conv else "")
    arg = [c.strip() for c in conv]
    if tag == "msup" and len(arg) >= 2:
        return f"{_group(arg[0])}^{_group(arg[1])}"
    if tag == "msub" and len(arg) >= 2:
        return f"{_group(arg[0])}_{_group(arg[1])}"
    if tag == "msubsup" and len(arg) >= 3:
        return f"{_group(arg[0])}_{_group(arg[1])}^{_group(arg[2])}"
    if tag == "mfrac" and len(arg) >= 2:
        return rf"\frac{{{arg[0]}}}{{{arg[1]}}}"
    if tag == "msqrt":
        return rf"\sqrt{{{_join(conv)}}}"
    if tag == "mroot" and len(arg) >= 2:
        return rf"\sqrt[{arg[1]}]{{{arg[0]}}}"
    if tag == "mover" and len(arg) >= 2:
        accent = ACCENTS_OVER.get(_text(kids[1])) if kids[1].tag == "mo" else None
        if accent:
            return f"{accent}{{{arg[0]}}}"
        return f"{arg[0]}^{_group(arg[1])}" if _big(arg[0]) else rf"\overset{{{arg[1]}}}{{{arg[0]}}}"
    if tag == "munder" and len(arg) >= 2:
        accent = ACCENTS_UNDER.get(_text(kids[1])) if kids[1].tag == "mo" else None
        if accent:
            return f"{accent}{{{arg[0]}}}"
        return f"{arg[0]}_{_group(arg[1])}" if _big(arg[0]) else rf"\underset{{{arg[1]}}}{{{arg[0]}}}"
    if tag == "munderover" and len(arg) >= 3:
        if _big(arg[0]):
            return f"{arg[0]}_{_group(arg[1])}^{_group(arg[2])}"
        return rf"\overset{{{arg[2]}}}{{\underset{{{arg[1]}}}{{{arg[0]}}}}}"
    if tag == "mfenced":
        attrs = node.attributes
        opening, closing = attrs.get("open"), attrs.get("close")
        separators = (attrs.get("separators") if attrs.get("separators") is not None else ",").replace(" ", "")
        body = ""
        for i, part in enumerate(arg):
            if i:
                body += (separators[min(i - 1, len(separators) - 1)] + " ") if separators else " "
            body += part
        opening = _symbol("(" if opening is None else opening)
        closing = _symbol(")" if closing is None else closing)
        if len(kids) == 1 and kids[0].tag == "mtable" and opening in _MATRIX:  # a matrix in brackets
            return body.replace("{matrix}", "{" + _MATRIX[opening] + "}")
        return opening + body + closing
    if tag == "mtable":
        rows = [r for r in arg if r]
        return r"\begin{matrix} " + r" \\ ".join(rows) + r" \end{matrix}"
    if tag in ("mtr", "mlabeledtr"):
        cells = arg[1:] if tag == "mlabeledtr" else arg
        return " & ".join(cells)
    if tag == "menclose" and "box" in (node.attributes.get("notation") or ""):
        return rf"\boxed{{{_join(conv)}}}"
    if tag == "mphantom":
        return ""
    if not kids:  # an unknown leaf keeps its text
        return _symbol(_text(node))
    return _join(conv)  # math, mrow, mstyle, mpadded, mtd, merror, menclose and unknown containers


def tex_annotation(math: Any) -> str | None:
    """The TeX annotation of the whole formula (`<math><semantics>...<annotation encoding="application/x-tex">`),
    or None; an annotation of a part (a nested `semantics`) is not the whole formula's."""
    kids = _elements(math)
    if len(kids) == 1 and kids[0].tag == "semantics":
        return _tex_annotation(kids[0])
    return _tex_annotation(math)


def mathml_to_tex(math: Any) -> str:
    """TeX of a `<math>` element converted from its elements (nested TeX annotations used where present)."""
    return _join([convert(k) for k in _elements(math)])
