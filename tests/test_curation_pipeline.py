"""`herd curate` end to end on a small real corpus: outputs the tokenizer accepts, bad input, relaunch."""

from __future__ import annotations

import gzip
import json
import tomllib
from pathlib import Path

import pytest
from datatrove.data import Document

from herd.data.curation.config import config_from_dict
from herd.data.curation.corpus import MAN_ROOT, render_pydoc
from herd.data.curation.pipeline import run_curation
from herd.data.curation.steps import HerdStep

MODULES = ["textwrap", "heapq", "bisect", "fnmatch", "colorsys"]
BAD_REASONS = {"malformed_json": 2, "undecodable_bytes": 3, "empty_document": 2, "missing_html": 1}


def _write_corpus(root: Path) -> None:
    from herd.data.local_corpus import roff_to_text, stdlib_sources
    from herd.data.synthetic_math import word_problem
    import random

    html = root / "html"
    html.mkdir(parents=True)
    pages = {m: render_pydoc(m) for m in MODULES}
    for m, page in pages.items():
        (html / f"{m}.html").write_text(page, encoding="utf-8")
    # an exact copy of one page under another URL: MinHash's job (URL dedup cannot see it)
    (html / "mirror-of-heapq.html").write_text(pages["heapq"], encoding="utf-8")
    # bad HTML: bytes that are not text, and a page without content
    (html / "garbage.html").write_bytes(bytes(range(256)) * 8)
    (html / "blank.html").write_text("<html><head><title>t</title></head><body>  </body></html>")
    rng = random.Random(0)
    with open(root / "code.jsonl", "w") as fh:
        for p in stdlib_sources()[:200:67]:
            fh.write(json.dumps({"id": p.name, "text": p.read_text(encoding="utf-8")}) + "\n")
    with open(root / "math.jsonl", "w") as fh:
        for i in range(12):
            fh.write(json.dumps({"id": f"m{i}", "text": word_problem(rng)}) + "\n")
    man = []
    for lang in ("de", "fr"):
        for p in sorted((MAN_ROOT / lang).glob("man1/*.gz"))[:3]:
            man.append({"id": f"{lang}:{p.name}", "url": f"man://{lang}/{p.name}",
                        "text": roff_to_text(gzip.decompress(p.read_bytes()).decode("utf-8", "replace"))})
    with open(root / "man.jsonl", "w") as fh:
        for rec in man:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    # a later crawl of textwrap's page (same URL, newer timestamp) and bad records
    url = (html / "textwrap.html").resolve().as_uri()
    good = json.dumps({"id": "recrawl", "url": url, "timestamp": "2100-01-01", "html": pages["textwrap"]})
    lines = [good.encode(), b'{"html": "<p>unterminated', b"\xff\xfe\x00garbage bytes", b"[1, 2, 3]",
             json.dumps({"id": "empty", "html": ""}).encode(), json.dumps({"no_html": 1}).encode(),
             b'{"id": "latin-1", "html": "<p>caf\xe9</p>"}']
    (root / "crawl.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def _config(root: Path, out: Path) -> dict:
    return {
        "output_dir": str(out), "tasks": 2, "workers": 1,
        "inputs": [
            {"name": "pydoc", "path": str(root / "html"), "kind": "html"},
            {"name": "crawl", "path": str(root / "crawl.jsonl"), "kind": "jsonl", "text_key": "html",
             "content": "html"},
            {"name": "code", "path": str(root / "code.jsonl"), "domain": "code",
             "skip": ["filters", "pii", "line_dedup"]},
            {"name": "math", "path": str(root / "math.jsonl"), "domain": "math", "skip": ["filters", "line_dedup"]},
            {"name": "man", "path": str(root / "man.jsonl")},
        ],
        "steps": {"filters": ["gopher_quality", "dirty_words", "token_kl"], "kl_min_docs": 3},
        "line_dedup": {"bucket_docs": 1000},
        "quality": {"annotator": "heuristic", "sample": 8, "anneal_threshold": 0.5},
        "mix": {"tokenize": True},
        "examples_per_step": 3,
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    _write_corpus(root)
    out = tmp_path_factory.mktemp("curated")
    cfg = config_from_dict(_config(root, out))
    summary = run_curation(cfg)
    return root, out, summary


def _curated(out: Path) -> dict[str, dict]:
    docs = {}
    for path in sorted((out / "curated").glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            docs[rec["id"]] = rec | {"category_dir": path.parent.name}
    return docs


def test_end_to_end_output_feeds_the_pretraining_tokenizer(run):
    from herd.tokenizer import Llama3Tokenizer

    _, out, summary = run
    assert all(summary["stages_run"].values())
    docs = _curated(out)
    cats = {d["category_dir"] for d in docs.values()}
    assert {"code", "math"} <= cats
    assert all(d["metadata"]["category"] == d["category_dir"] for d in docs.values())
    tok = Llama3Tokenizer()
    total = 0
    for d in docs.values():
        ids = tok.encode(d["text"])
        assert ids and tok.decode(ids) == d["text"]
        total += len(ids)
    mix = tomllib.loads((out / "mix.toml").read_text())
    weights, sources = mix["data"]["mix"], mix["data"]["sources"]
    provenance = mix["provenance"]["pretrain"]["sources"]
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(s["tokens"] for s in provenance.values()) == total
    assert weights["math"] / weights["general"] == pytest.approx(0.5, rel=1e-4)
    assert set(mix["anneal"]["mix"]) <= set(sources) and set(weights) <= set(sources)
    # mix.tokenize = true: every source is a directory of token shards (relative to the mix file)
    from herd.data.shards import read_manifest

    for name, path in sources.items():
        assert not Path(path).is_absolute()
        manifest = read_manifest(out / path)
        assert manifest["source"] == name
    general = read_manifest(out / sources["general"])
    assert general["tokens"] == provenance["general"]["tokens"] + 2 * general["documents"]
    report = (out / "report.md").read_text()
    for needle in ("Kept and removed per step", "Examples of what each step removed", "Languages", "Final mix"):
        assert needle in report
    assert (out / "hist_tokens.png").stat().st_size > 1000 and (out / "languages.png").is_file()
    training = json.loads((out / "models" / "training.json").read_text())
    assert "en" in training["token_kl"] and (out / "models" / "token_kl-en.json").is_file()
    assert training["quality"]["annotated"] >= 2 and set(training["quality"]["labels"]) == {"high", "low"}


def test_pretrain_trains_on_the_curated_mix_file_unchanged(run, tmp_path, capsys):
    """curate -> pretrain with no edit: a recipe names the mix file; `herd pretrain` runs a few steps on it."""
    from herd.cli import main
    from herd.train.config import load_config

    _, out, _ = run
    mix = tomllib.loads((out / "mix.toml").read_text())
    recipe = tmp_path / "curated.toml"
    recipe.write_text((Path(__file__).parents[1] / "configs" / "pretrain" / "tiny-curated.toml").read_text()
                      .replace("runs/curate/smoke/mix.toml", str(out / "mix.toml")))
    # 6 steps of 2 x 64 tokens; the last two anneal on the mix file's `<category>_hq` sources
    sets = ["run.max_steps=6", "run.max_tokens=0", "eval.interval=0", "checkpoint.interval=0", f"run.out_dir={tmp_path / 'run'}",
            "log.tensorboard=false", "log.plot=false", "log.progress=false", "anneal.tokens=256", "anneal.start_tokens=512",
            "schedule.stages=[{after_tokens = 0, batch_size = 2, seq_len = 64}]", "run.device=cpu"]
    config = load_config(recipe, sets)
    assert config.data.mix == mix["data"]["mix"]
    assert config.anneal.mix == mix["anneal"]["mix"]
    assert {n: Path(p) for n, p in config.data.sources.items()} == {n: out / p for n, p in mix["data"]["sources"].items()}
    assert main(["pretrain", str(recipe), *[a for s in sets for a in ("--set", s)]]) == 0
    assert "done: step 6" in capsys.readouterr().out
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    phases = {r["step"]: r.get("phase") for r in records if "loss" in r}
    assert phases == {1: "main", 2: "main", 3: "main", 4: "main", 5: "anneal", 6: "anneal"}, phases


def test_injected_duplicates_removed_and_text_kept(run):
    _, out, _ = run
    docs = _curated(out)
    ids = set(docs)
    # the mirror or the original (not both) survives MinHash; the recrawl (newer) beats the old textwrap page
    assert len({"pydoc/heapq.html", "pydoc/mirror-of-heapq.html"} & ids) == 1
    assert "recrawl" in ids and "pydoc/textwrap.html" not in ids
    removed = [json.loads(x) for p in (out / "removed").glob("*/*.jsonl") for x in p.read_text().splitlines()]
    reasons = {r["reason"] for r in removed}
    assert {"near_duplicate", "older_copy_of_url"} <= reasons
    langs = {d["metadata"]["lang"] for d in docs.values()}
    assert {"de", "fr"} & langs and all(d["category_dir"] == "multilingual" for d in docs.values()
                                       if d["metadata"]["lang"] not in ("en",))


def test_bad_input_is_counted_and_rejected_with_reason(run):
    _, out, _ = run
    rejects = [json.loads(x) for p in (out / "rejects").glob("*.jsonl") for x in p.read_text().splitlines()]
    got: dict[str, int] = {}
    for r in rejects:
        got[r["reason"]] = got.get(r["reason"], 0) + 1
        assert r["source"] in ("pydoc", "crawl") and r["step"]
    assert got == BAD_REASONS
    assert "- undecodable_bytes: 3" in (out / "report.md").read_text()


def test_relaunch_skips_finished_tasks_and_changes_nothing(run, tmp_path):
    from herd.cli import main

    root, out, _ = run
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "curated").rglob("*.jsonl")}
    cfg_path = tmp_path / "c.toml"
    cfg = _config(root, out)
    lines = [f'output_dir = "{out}"', "tasks = 2", 'examples_per_step = 3']
    lines += ["[steps]", 'filters = ["gopher_quality", "dirty_words", "token_kl"]', "kl_min_docs = 3",
              "[line_dedup]", "bucket_docs = 1000",
              "[quality]", 'annotator = "heuristic"', "sample = 8", "anneal_threshold = 0.5",
              "[mix]", "tokenize = true"]
    for inp in cfg["inputs"]:
        lines.append("[[inputs]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in inp.items()]
    cfg_path.write_text("\n".join(lines) + "\n")
    assert main(["curate", str(cfg_path)]) == 0
    summary = json.loads((out / "run.json").read_text())
    assert not any(summary["stages_run"].values())
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "curated").rglob("*.jsonl")}
    assert after == before


def test_one_bad_record_never_kills_a_task(tmp_path):
    class Fragile(HerdStep):
        step_name = "fragile"

        def process(self, doc, rank):
            if "boom" in doc.text:
                raise RuntimeError("parser exploded")
            return doc

    docs = [Document(text=t, id=str(i), metadata={"source": "s"}) for i, t in enumerate(["ok", "boom", "fine"])]
    out = list(Fragile(tmp_path, stage="t").run(iter(docs), rank=0))
    assert [d.text for d in out] == ["ok", "fine"]
    rej = [json.loads(x) for x in (tmp_path / "rejects" / "t-fragile-00000.jsonl").read_text().splitlines()]
    assert rej[0]["reason"] == "fragile_error:RuntimeError" and rej[0]["id"] == "1"
    counts = json.loads((tmp_path / "counts" / "t" / "fragile" / "00000.json").read_text())
    assert counts == {"in": 3, "kept": 2, "rejected:fragile_error:RuntimeError": 1}


def test_llm_margin_parsing():
    from types import SimpleNamespace as NS

    from herd.data.curation.quality_model import _yes_no_margin

    lp = NS(token_id=1, token="Yes", logprob=-0.1, top=[(1, "Yes", -0.1), (2, " no", -2.4), (3, "yes", -3.0)])
    margin = _yes_no_margin(NS(logprobs=[lp], text="Yes"))
    assert margin == pytest.approx(-0.1 + __import__("math").log(1 + __import__("math").exp(-2.9)) + 2.4, abs=1e-6)
    assert _yes_no_margin(NS(logprobs=None, text=" No.")) == -1.0


@pytest.mark.slow
def test_llm_annotator_scores_with_smollm2():
    from herd.data.curation.quality_model import LLMAnnotator

    ann = LLMAnnotator("smollm2-135m-instruct", max_tokens=1, max_chars=300)
    scores = ann(["The mitochondrion is the organelle that produces most of the cell's energy supply.",
                  "click here click here buy now $$$ login menu home", "def f(x): return x"])
    assert len(scores) == 3 and all(-40 < s < 40 for s in scores)
    assert len(ann.answers) == 3


def test_slurm_executors_are_chained_stage_by_stage(tmp_path):
    from datatrove.executor import SlurmPipelineExecutor

    from herd.data.curation.config import CurationConfigError
    from herd.data.curation.pipeline import build_executors

    base = {"output_dir": str(tmp_path / "o"), "inputs": [{"name": "a", "path": str(tmp_path)}]}
    cfg = config_from_dict(base | {"executor": {"kind": "slurm", "options": {"partition": "cpu", "time": "1:00:00"}}})
    stages = build_executors(cfg)  # constructing submits nothing
    names = [n for n, _, _ in stages]
    assert names == ["1-filter", "2-url", "3-minhash-sig", "4-minhash-buckets", "5-minhash-cluster", "6-line-sig",
                     "7-line-merge", "8-train", "9-final"]
    assert all(isinstance(ex, SlurmPipelineExecutor) for _, ex, _ in stages)
    assert [ex.depends for _, ex, _ in stages[1:]] == [ex for _, ex, _ in stages[:-1]]
    assert dict((n, t) for n, _, t in stages)["4-minhash-buckets"] == 14
    with pytest.raises(CurationConfigError, match="partition"):
        config_from_dict(base | {"executor": {"kind": "slurm"}})


def _invariance_corpus(root: Path) -> None:
    """21 one-document text files under web/ and 4 one-record JSONL files under crawl/ (files are read
    round-robin over tasks) with boilerplate lines of known counts, an exact copy of a page under another
    URL, and one URL crawled twice at the same time; the copies are placed so that with 3 tasks the later-
    read copy lands on the lower task (task order and read order disagree)."""
    import random

    rng = random.Random(7)
    words = ("river valley farmers wheat spring autumn harvest market village bridge mill road stone field "
             "orchard school church winter summer rain").split()

    def body(i: int) -> list[str]:
        return [" ".join(rng.choice(words) for _ in range(14)).capitalize() + f" {i}." for _ in range(6)]

    (root / "web").mkdir(parents=True)
    (root / "crawl").mkdir()
    pages = {}
    for i in range(21):
        lines = body(i) if i != 18 else list(pages[17])  # doc18 copies doc17 (task 2 vs task 0 when tasks = 3)
        pages[i] = list(lines)
        if i < 7:  # 7 documents: files are read round-robin, so tasks = 3 sees 3 + 2 + 2 (tasks = 2: 4 + 3)
            lines.insert(2, "Subscribe to our newsletter for weekly updates.")
        if 10 <= i < 16:  # 6 documents: at the cap, kept everywhere
            lines.append("Share this page with your friends today.")
        (root / "web" / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # crawl files are the 22nd..25th input files: c and d go to tasks 2 and 0 when tasks = 3
    for name in "abcd":
        url = "https://example.com/same" if name in "cd" else f"https://example.com/{name}"
        rec = {"id": f"crawl-{name}", "url": url, "timestamp": "2024-01-01", "text": "\n".join(body(30))}
        (root / "crawl" / f"{name}.jsonl").write_text(json.dumps(rec) + "\n", encoding="utf-8")


def _curate_with_tasks(root: Path, out: Path, tasks: int, executor: dict | None = None,
                       extra: dict | None = None) -> dict[str, str]:
    cfg = {"output_dir": str(out), "tasks": tasks, "workers": 1,
           "inputs": [{"name": "web", "path": str(root / "web"), "kind": "text"},
                      {"name": "crawl", "path": str(root / "crawl"), "kind": "jsonl"}],
           "steps": {"filters": ["gopher_repetition", "dirty_words"]},
           "line_dedup": {"bucket_docs": 1000},
           "quality": {"annotator": "heuristic", "sample": 8}, "domain": {"category_cap": 1.0},
           "mix": {"tokenizer": "chars4"}}
    if executor:
        cfg["executor"] = executor
    cfg.update(extra or {})
    summary = run_curation(config_from_dict(cfg), report=False)
    assert not summary.get("pending")
    docs = {}
    for path in sorted((out / "curated").glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            docs[json.loads(line)["id"]] = f"{path.parent.name}\t{line}"
    return docs


def test_curated_output_does_not_depend_on_tasks(tmp_path):
    """Line counts are global per bucket (a line in 7 documents spread over 3 tasks is still removed), and
    which copy of a duplicate survives does not follow the task numbering."""
    _invariance_corpus(tmp_path / "corpus")
    one = _curate_with_tasks(tmp_path / "corpus", tmp_path / "t1", 1)
    three = _curate_with_tasks(tmp_path / "corpus", tmp_path / "t3", 3)
    assert len(one) == 21 + 4 - 2  # less one copy of doc17 (MinHash) and one of the twice-crawled URL
    assert ("web/doc17.txt" in one) != ("web/doc18.txt" in one)
    assert ("crawl-c" in one) != ("crawl-d" in one)
    assert "Subscribe to our newsletter" not in "".join(one.values())
    assert sum("Share this page" in v for v in one.values()) == 6
    as_bytes = {n: "\n".join(v for _, v in sorted(docs.items())).encode() for n, docs in (("1", one), ("3", three))}
    assert as_bytes["3"] == as_bytes["1"]


def test_ray_executor_curates_what_the_local_executor_curates(tmp_path):
    """`[executor] kind = "ray"` for real: a local Ray instance with 2 workers (started and stopped by
    `herd curate` itself) runs every stage and writes the same curated output as the local executor."""
    import faulthandler

    import ray

    import signal

    _invariance_corpus(tmp_path / "corpus")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    faulthandler.dump_traceback_later(600, exit=True)  # a wedged Ray must fail CI, not hang it
    try:
        # one MinHash band keeps the number of Ray tasks (one actor each, seconds to start) small; both runs use it
        common = {"minhash": {"bands": 1, "rows": 8}, "workers": 2}
        local = _curate_with_tasks(tmp_path / "corpus", tmp_path / "local", 2, extra=common)
        on_ray = _curate_with_tasks(tmp_path / "corpus", tmp_path / "ray", 2,
                                    executor={"kind": "ray", "options": {"time": 300}}, extra=common)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert not ray.is_initialized()  # the instance herd started is stopped again
    # and its signal handlers with it (a later training stage in this process must keep its own)
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert len(local) == 23 and "Subscribe to our newsletter" not in "".join(local.values())
    assert on_ray == local
    # the Ray run really ran on Ray: every stage's job description is the Ray executor's (Ray resources)
    for stage in ("1-filter", "7-line-merge", "9-final"):
        job = json.loads((tmp_path / "ray" / "logs" / stage / "executor.json").read_text())
        assert job["cpus_per_task"] == 1 and job["mem_per_cpu_gb"] > 0
