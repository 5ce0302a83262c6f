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
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(s["tokens"] for s in mix["curate"]["pretrain"].values()) == total
    assert weights["math"] / weights["general"] == pytest.approx(0.5, rel=1e-4)
    assert set(mix["anneal"]["mix"]) <= set(sources) and set(weights) <= set(sources)
    # mix.tokenize = true: every source is a directory of token shards that herd's reader verifies
    from herd.data.shards import read_manifest

    for name, path in sources.items():
        manifest = read_manifest(path)
        assert manifest["source"] == name
    general = read_manifest(sources["general"])
    assert general["tokens"] == mix["curate"]["pretrain"]["general"]["tokens"] + 2 * general["documents"]
    # the fragment is what `herd pretrain` reads: merged into the tiny recipe, its config validates
    from herd.train import config as train_config

    recipe = tomllib.loads((Path(__file__).parents[1] / "configs" / "pretrain" / "tiny.toml").read_text())
    recipe["data"].update(mix["data"])
    recipe["anneal"].update({"mix": mix["anneal"]["mix"], "tokens": 4096, "start_tokens": 8192})
    assert train_config.config_from_dict(recipe).data.mix == weights
    report = (out / "report.md").read_text()
    for needle in ("Kept and removed per step", "Examples of what each step removed", "Languages", "Final mix"):
        assert needle in report
    assert (out / "hist_tokens.png").stat().st_size > 1000 and (out / "languages.png").is_file()
    training = json.loads((out / "models" / "training.json").read_text())
    assert "en" in training["token_kl"] and (out / "models" / "token_kl-en.json").is_file()
    assert training["quality"]["annotated"] >= 2 and set(training["quality"]["labels"]) == {"high", "low"}


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
    assert names == ["1-filter", "2-url", "3-minhash-sig", "4-minhash-buckets", "5-minhash-cluster", "6-train",
                     "7-final"]
    assert all(isinstance(ex, SlurmPipelineExecutor) for _, ex, _ in stages)
    assert [ex.depends for _, ex, _ in stages[1:]] == [ex for _, ex, _ in stages[:-1]]
    assert dict((n, t) for n, _, t in stages)["4-minhash-buckets"] == 14
    with pytest.raises(CurationConfigError, match="partition"):
        config_from_dict(base | {"executor": {"kind": "slurm"}})
