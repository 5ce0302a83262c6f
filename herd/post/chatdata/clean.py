"""Rule-based cleaning of assistant turns (paper section 4.2.3, "Data cleaning").

The paper removes or rewrites responses with an undesirable tone: overused emojis, excessive exclamation
marks, and "overly-apologetic tonal issues" ("I'm sorry", "I apologize"). Each rule here counts the
offending marks in an assistant turn's prose (code blocks and inline code are not prose: `!=` or an
emoji in a string literal is content, not tone) and flags the turn when the count passes its threshold.
A flagged dialog is dropped (`mode="drop"`, the default) or the offending marks are stripped
(`mode="strip"`): emojis removed, runs of `!` turned into one `.`, apologetic sentences removed; a turn
left empty by stripping drops its dialog.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from herd.post.records import Dialog, RecordError
from herd.tokenizer.chat import Message

# Phrases of the "tonal apology" rule, matched case-insensitively as whole words, with curly apostrophes
# read as straight ones. Apologies and AI-disclaimer boilerplate: the paper's examples ("I'm sorry",
# "I apologize") and the "As an AI language model" family of ChatGPT-era data.
APOLOGY_PHRASES: tuple[str, ...] = (
    "i'm sorry", "i am sorry", "i'm so sorry", "i'm really sorry", "i'm very sorry", "sorry for the confusion",
    "sorry, but", "i apologize", "i apologise", "i do apologize", "my apologies", "apologies for",
    "please accept my apologies", "i regret to inform you", "as an ai language model", "as a language model",
    "as an ai model", "as an ai assistant", "as an ai", "as a large language model", "i'm just an ai",
    "i am just an ai", "i'm only an ai", "i'm an ai language model", "i am an ai language model",
)
RULES = ("emoji", "exclamation", "apology")
MODES = ("drop", "strip")

# Emoji code points: pictographs, emoticons, transport/map, supplemental symbols, dingbats, flags,
# miscellaneous symbols; joiners and variation selectors are stripped with them but not counted.
EMOJI = re.compile(
    "[\U0001F300-\U0001F5FF\U0001F600-\U0001F64F\U0001F680-\U0001F6FF\U0001F700-\U0001F77F"
    "\U0001F780-\U0001F7FF\U0001F800-\U0001F8FF\U0001F900-\U0001F9FF\U0001FA00-\U0001FAFF"
    "\U0001F1E6-\U0001F1FF\u2600-\u26FF\u2700-\u27BF\u2B50\u2B55\u2B06\u2B07\u2B05\u2934\u2935]"
)
EMOJI_GLUE = re.compile("[\u200d\ufe0f\ufe0e\U0001F3FB-\U0001F3FF]")
CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
EXCLAMATIONS = re.compile(r"!+")
SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
_APOLOGY = re.compile(r"(?<![\w'])(?:" + "|".join(re.escape(p) for p in APOLOGY_PHRASES) + r")(?![\w'])",
                      re.IGNORECASE)


@dataclass(frozen=True)
class CleanConfig:
    """Thresholds per assistant turn: a turn is flagged when a count is above its maximum."""

    max_emojis: int = 2
    max_exclamations: int = 2
    max_apologies: int = 0
    mode: str = "drop"
    rules: tuple[str, ...] = RULES

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        unknown = set(self.rules) - set(RULES)
        if unknown:
            raise ValueError(f"unknown cleaning rules {sorted(unknown)}; known: {', '.join(RULES)}")
        for name in ("max_emojis", "max_exclamations", "max_apologies"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _normalize(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def prose(text: str) -> str:
    """The text without code blocks and inline code."""
    return CODE.sub(" ", text)


def _on_prose(text: str, edit: Callable[[str], str]) -> str:
    """Apply `edit` to the prose between code spans, leaving the code untouched."""
    parts, last = [], 0
    for match in CODE.finditer(text):
        parts += [edit(text[last:match.start()]), match.group(0)]
        last = match.end()
    parts.append(edit(text[last:]))
    return "".join(parts)


def count_emojis(text: str) -> int:
    return len(EMOJI.findall(prose(text)))


def count_exclamations(text: str) -> int:
    """Exclamation marks in prose ("Great!!!" counts 3)."""
    return prose(text).count("!")


def count_apologies(text: str) -> int:
    return len(_APOLOGY.findall(_normalize(prose(text))))


def violations(text: str, config: CleanConfig) -> list[str]:
    """The rules an assistant turn breaks, in RULES order."""
    broken = []
    if "emoji" in config.rules and count_emojis(text) > config.max_emojis:
        broken.append("emoji")
    if "exclamation" in config.rules and count_exclamations(text) > config.max_exclamations:
        broken.append("exclamation")
    if "apology" in config.rules and count_apologies(text) > config.max_apologies:
        broken.append("apology")
    return broken


def strip_emojis(text: str) -> str:
    return _on_prose(text, lambda s: re.sub(r"[ \t]{2,}", " ", EMOJI_GLUE.sub("", EMOJI.sub("", s))))


def strip_exclamations(text: str) -> str:
    return _on_prose(text, lambda s: EXCLAMATIONS.sub(".", s))


def strip_apologies(text: str) -> str:
    """Remove every sentence holding an apology phrase."""
    def edit(s: str) -> str:
        kept = [m.group(0) for m in SENTENCE.finditer(s) if not _APOLOGY.search(_normalize(m.group(0)))]
        return re.sub(r"^[ \t]+", "", "".join(kept), flags=re.MULTILINE)

    return _on_prose(text, edit)


STRIPPERS: dict[str, Callable[[str], str]] = {"emoji": strip_emojis, "exclamation": strip_exclamations,
                                               "apology": strip_apologies}


@dataclass
class CleanResult:
    """A dialog's fate: kept as is, stripped (the new dialog), or dropped (`reason`), and the rules it broke."""

    dialog: Dialog | None
    broken: list[str]
    action: str  # "kept", "stripped" or "dropped"
    reason: str = ""


def clean_dialog(dialog: Dialog, config: CleanConfig) -> CleanResult:
    """Check every assistant turn; drop the dialog or strip the flagged turns per `config.mode`."""
    broken: list[str] = []
    flagged: dict[int, list[str]] = {}
    for i, message in enumerate(dialog.messages):
        if message.role != "assistant":
            continue
        rules = violations(message.content, config)
        if rules:
            flagged[i] = rules
            broken += [r for r in rules if r not in broken]
    if not flagged:
        return CleanResult(dialog, [], "kept")
    if config.mode == "drop":
        return CleanResult(None, broken, "dropped", "+".join(broken))
    messages: list[Message] = list(dialog.messages)
    for i, rules in flagged.items():
        text = messages[i].content
        for rule in rules:
            text = STRIPPERS[rule](text)
        messages[i] = replace(messages[i], content=text.strip())
    try:
        return CleanResult(Dialog(tuple(messages)), broken, "stripped")
    except RecordError:
        return CleanResult(None, broken, "dropped", "empty after stripping")


def clean_dialogs(dialogs: Sequence[Dialog], config: CleanConfig, progress: bool = False
                  ) -> tuple[list[CleanResult], dict[str, object]]:
    """Clean each dialog; the report counts dialogs per rule broken, per action and per drop reason."""
    from herd.post.chatdata.rows import progress as bar

    results = [clean_dialog(d, config) for d in bar(dialogs, len(dialogs), "cleaning", progress)]
    per_rule: Counter[str] = Counter(rule for r in results for rule in r.broken)
    actions: Counter[str] = Counter(r.action for r in results)
    reasons: Counter[str] = Counter(r.reason for r in results if r.action == "dropped")
    report = {"dialogs": len(results), "kept": actions["kept"], "stripped": actions["stripped"],
              "dropped": actions["dropped"], "flagged_per_rule": {rule: per_rule[rule] for rule in config.rules},
              "dropped_by_reason": dict(reasons.most_common()), "mode": config.mode,
              "thresholds": {"max_emojis": config.max_emojis, "max_exclamations": config.max_exclamations,
                             "max_apologies": config.max_apologies}}
    return results, report
