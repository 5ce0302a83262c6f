"""Topic classification of dialogs (paper section 4.2.3, "Topic classification").

The paper fine-tunes Llama 3 8B as a topic classifier into coarse buckets ("mathematical reasoning")
and fine ones ("geometry and trigonometry"), so the mix can be balanced per topic. Offline on a CPU
herd classifies with the same MiniLM sentence embedder that semantic dedup uses, nearest centroid:
each topic is a handful of typical requests (its centroid is their mean embedding), a dialog's user
turns are embedded, and the topic is the most similar centroid (below `min_score`: "other"). The
taxonomy is data: pass your own `{name: [example requests]}` JSON (coarse or fine) with `--topics`. `herd chatdata mix --by topic` then
weighs or caps each bucket.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.post.chatdata.dedup import Embedder
from herd.tokenizer.chat import Message

OTHER = "other"

# Coarse buckets of general chat data. Each topic is a few typical requests; its embedding is their
# normalized mean (a one-line description embeds too diffusely for MiniLM to separate the buckets).
DEFAULT_TOPICS: dict[str, list[str]] = {
    "math": ["What is 48 divided by 6 plus 9?", "Solve the equation 2x - 5 = 11 for x.",
             "A train travels 120 km in 2 hours. What is its average speed?",
             "What is the area of a circle with radius 3?", "Prove that the square root of 2 is irrational."],
    "code": ["Write a Python function that reverses a linked list.", "Why does my JavaScript code throw undefined?",
             "Fix this error in my program: IndexError list index out of range",
             "Write a SQL query to find duplicate rows.", "Explain what this C++ code does.",
             "Write a bash script that backs up a folder every night.",
             "How do I sort a dictionary by value in Python?", "Write a Java method that checks for palindromes."],
    "reasoning": ["If all cats are animals and some animals are black, are some cats black?",
                  "Solve this riddle: what has keys but can't open locks?",
                  "Three people each tell a lie or the truth; who is the liar?",
                  "Which number comes next in the sequence 2, 6, 12, 20?"],
    "writing": ["Write a short story about a dragon who loves books.", "Write a poem about the ocean at night.",
                "Write song lyrics about summer love.", "Write a persuasive essay on school uniforms.",
                "Write a heartfelt birthday letter to my grandmother."],
    "knowledge": ["Who was the first president of the United States?", "How does photosynthesis work?",
                  "What causes earthquakes?", "When did World War II end?",
                  "What is the capital of Australia?", "Explain how vaccines train the immune system."],
    "advice": ["How can I sleep better when I am stressed?", "Should I accept a job offer in another city?",
               "How do I make friends after moving?", "What should I pack for a week-long hiking trip?",
               "How can I stay motivated to exercise?"],
    "business": ["How should I price my product for a small online shop?", "Write a marketing plan for a new cafe.",
                 "What is a good strategy to grow sales for a startup?", "Should I invest in index funds or stocks?",
                 "How do I write a business plan?"],
    "editing": ["Summarize this article in three sentences.", "Proofread this paragraph and fix the grammar.",
                "Rewrite this email to sound more professional.", "Extract all the dates from the following text.",
                "Paraphrase the following sentence."],
    "translation": ["Translate 'good morning' into Spanish.", "How do you say thank you in Japanese?",
                    "Translate this paragraph from French to English.", "What does 'Guten Abend' mean in English?"],
    "chat": ["Hi! How are you today?", "Tell me a joke.", "Let's pretend you are a pirate captain.",
             "What is your favorite color?", "Good night, talk to you tomorrow!"],
}


@dataclass(frozen=True)
class TopicResult:
    topic: str
    score: float  # cosine similarity to the chosen topic's description
    margin: float  # over the second-best topic (how clear the call is)


def load_topics(path: str | Path | None) -> dict[str, list[str]]:
    """The taxonomy: DEFAULT_TOPICS, or a JSON object {name: example request(s)} from `path` (a string
    or a list of strings per topic)."""
    if path is None:
        return {k: list(v) for k, v in DEFAULT_TOPICS.items()}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--topics {path}: cannot read a JSON object of topic descriptions ({exc})") from None
    if not isinstance(data, dict) or len(data) < 2:
        raise ValueError(f"--topics {path}: expected a JSON object with at least two topics")
    topics: dict[str, list[str]] = {}
    for name, value in data.items():
        examples = [value] if isinstance(value, str) else value
        if not isinstance(examples, list) or not examples or not all(isinstance(x, str) and x.strip() for x in examples):
            raise ValueError(f"--topics {path}: topic {name!r} needs a non-empty string or list of strings")
        topics[str(name)] = examples
    if OTHER in topics:
        raise ValueError(f"--topics {path}: {OTHER!r} is reserved for dialogs below --min-score")
    return topics


def request_text(messages: Sequence[Message]) -> str:
    """What a dialog is about: its user turns (the assistant's answers would blur the request)."""
    user = [m.content for m in messages if m.role == "user"]
    return "\n".join(user) if user else "\n".join(m.content for m in messages)


def classify_topics(embedder: Embedder, dialogs: Sequence[Sequence[Message]], topics: Mapping[str, Sequence[str]],
                    min_score: float = 0.0) -> list[TopicResult]:
    """The nearest topic of each dialog's request: cosine to the normalized mean embedding of the topic's
    example requests (unit MiniLM embeddings)."""
    import torch

    if len(topics) < 2:
        raise ValueError("topic classification needs at least two topics")
    if not dialogs:
        return []
    names = list(topics)
    examples = [embedder(list(topics[n])) for n in names]
    centers = torch.nn.functional.normalize(torch.stack([e.mean(0) for e in examples]), dim=-1)
    requests = embedder([request_text(d) for d in dialogs])
    similarity = requests @ centers.T
    top = similarity.topk(2, dim=1)
    out = []
    for values, index in zip(top.values.tolist(), top.indices.tolist()):
        best = names[index[0]] if values[0] >= min_score else OTHER
        out.append(TopicResult(best, round(values[0], 4), round(values[0] - values[1], 4)))
    return out


def topic_report(results: Sequence[TopicResult]) -> dict[str, Any]:
    counts = Counter(r.topic for r in results)
    return {"topics": dict(counts.most_common()),
            "mean_margin": round(sum(r.margin for r in results) / len(results), 4) if results else None}
