"""herd.config: the one recipe loader for every recipe kind (pretrain, curate, mix files)."""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from pathlib import Path

import pytest

import herd.config.loader as loader
from herd.config import ConfigError, MeshSizes, ParallelSection, load_recipe, to_toml
from herd.data.curation.config import CurateConfig
from herd.data.curation.config import load_config as load_curate
from herd.data.mixture import MixAnneal, MixData, MixFile, write_mix_file
from herd.train.config import StageConfig, TrainConfig
from herd.train.config import load_config as load_pretrain

ROOT = Path(__file__).resolve().parents[1]
HERD = ROOT / "herd"
TINY = ROOT / "configs" / "pretrain" / "tiny.toml"
PRETRAIN_RECIPES = sorted((ROOT / "configs" / "pretrain").glob("*.toml"))
CURATE_RECIPES = sorted((ROOT / "configs" / "curate").glob("*.toml"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ one loader


def _calls(attribute_names: set[str]) -> list[str]:
    """`module.attr(...)` call sites in herd/ whose attribute is one of `attribute_names`."""
    found = []
    for path in sorted(HERD.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "tomllib" \
                    and node.func.attr in attribute_names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_herd_parses_toml_in_exactly_one_place():
    sites = _calls({"load", "loads"})
    assert len(sites) == 1 and sites[0].startswith("herd/config/loader.py"), sites
    importers = []
    for path in sorted(HERD.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            if any(n in ("tomllib", "tomli", "toml") for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == ["herd/config/loader.py"]


def test_set_is_declared_once_for_every_command():
    declared = [str(p.relative_to(ROOT)) for p in HERD.rglob("*.py")
                if '"--set"' in p.read_text(encoding="utf-8")]
    assert declared == ["herd/config/__init__.py"]


def test_both_recipe_kinds_go_through_the_same_reader(monkeypatch):
    read: list[str] = []
    real = loader.read_toml

    def spy(path):
        read.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(loader, "read_toml", spy)
    assert isinstance(load_pretrain(TINY), TrainConfig)
    assert isinstance(load_curate(ROOT / "configs" / "curate" / "smoke.toml"), CurateConfig)
    assert read == ["tiny.toml", "smoke.toml"]


# ------------------------------------------------------------------------------------------ errors


def test_unknown_key_names_the_file_the_key_path_and_the_choices(tmp_path):
    pretrain = _write(tmp_path / "p.toml", TINY.read_text().replace("[optim]\n", "[optim]\nmomentum = 0.9\n"))
    with pytest.raises(ConfigError) as err:
        load_pretrain(pretrain)
    assert str(err.value).startswith(f"{pretrain}: unknown config key 'optim.momentum'; valid keys in [optim]: lr, ")
    curate = _write(tmp_path / "c.toml", '[[inputs]]\nname = "a"\npath = "x"\n[[inputs]]\nname = "b"\npth = "y"\n')
    with pytest.raises(ConfigError) as err:
        load_curate(curate)
    assert str(err.value).startswith(f"{curate}: unknown config key 'inputs[1].pth'; valid keys in [inputs[1]]: name, path,")
    with pytest.raises(ConfigError, match=r"c.toml: inputs\[0\]: missing required key\(s\) path"):
        load_curate(_write(curate, '[[inputs]]\nname = "a"\n'))
    with pytest.raises(ConfigError, match="c.toml: unknown config key 'source'"):  # internal state is not a key
        load_curate(_write(curate, 'source = "x"\n[[inputs]]\nname = "a"\npath = "x"\n'))


@pytest.mark.parametrize("override, needle", [
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("run.max_steps=[1]", "run.max_steps: expected an integer"),
    ("optim.betas=[0.9, true]", "optim.betas[1]: expected a number, got True"),
    ("data.mix={general=[1]}", "data.mix: expected str or dict"),
    ("schedule.stages.7.seq_len=1", "index 7 out of range (list has 3 items)"),
    ("run.out_dir.x=1", "run.out_dir is a value, not a table"),
    ("optim.lr", "expected KEY=VALUE"),
])
def test_bad_override_names_the_file_and_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_pretrain(TINY, [override])
    assert str(err.value).startswith(f"{TINY}: ") and needle in str(err.value), str(err.value)


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_curate(_write(tmp_path / "bad.toml", "output_dir = ["))
    with pytest.raises(ConfigError, match="config file .*nope.toml does not exist"):
        load_pretrain(tmp_path / "nope.toml")


# ------------------------------------------------------------------------------------------ --set


def test_set_values_are_typed_as_toml_including_tables_and_lists():
    cfg = load_pretrain(TINY, [
        "run.max_tokens=4e6", "run.compile=true", 'run.out_dir="runs/quoted"', "optim.betas=[0.8, 0.9]",
        "data.mix={general=1, code=3}", "data.mix.math=2",  # a table, then one key inside it
        "schedule.stages=[{after_tokens=0, batch_size=2, seq_len=32}, {after_tokens=64, batch_size=4, seq_len=64}]",
        "schedule.stages.1.micro_batch_size=2", "data.sources.math=/m", "data.sources.code=/c",
    ])
    assert cfg.run.max_tokens == 4_000_000 and type(cfg.run.max_tokens) is int
    assert cfg.run.compile is True and cfg.run.out_dir == "runs/quoted"
    assert cfg.optim.betas == [0.8, 0.9]
    assert cfg.data.mix == {"general": 1.0, "code": 3.0, "math": 2.0}
    assert all(type(w) is float for w in cfg.data.mix.values())
    assert cfg.schedule.stages == [StageConfig(0, 32, 2), StageConfig(64, 64, 4, micro_batch_size=2)]
    curate = load_curate(ROOT / "configs" / "curate" / "smoke.toml", [
        "inputs=[{name='a', path='x', skip=['pii']}]", "inputs.0.limit=5", "steps.filters=['c4']",
        "executor.options={partition='cpu', nodes=2}", "executor.options.time=1:00:00", "mix.target.code=0.5",
    ])
    assert curate.inputs[0].limit == 5 and curate.inputs[0].skip == ["pii"] and curate.inputs[0].glob is None
    assert curate.steps.filters == ["c4"] and curate.executor.options == {"partition": "cpu", "nodes": 2, "time": "1:00:00"}
    assert curate.mix.target == {"code": 0.5}  # a table the recipe does not give starts empty, not from the default


# ------------------------------------------------------------------------------------------ --print-config


@pytest.mark.parametrize("path", PRETRAIN_RECIPES + CURATE_RECIPES, ids=lambda p: p.name)
def test_printed_recipe_loads_back_to_the_same_recipe(path, tmp_path):
    kind = TrainConfig if path.parent.name == "pretrain" else CurateConfig
    if path.name == "tiny-curated.toml":  # its mix file comes from `herd curate`: stand one in
        _mix_file(tmp_path / "mix.toml")
        first = load_recipe(kind, path, [f"data.mix_file={tmp_path / 'mix.toml'}"])
    else:
        first = load_recipe(kind, path, ["optim.lr=1e-3" if kind is TrainConfig else "tasks=3"])
    again = load_recipe(kind, _write(tmp_path / "printed.toml", to_toml(first)))
    if kind is CurateConfig:
        again.source = first.source
    assert again == first


def test_cli_print_config_is_toml_for_both_kinds(tmp_path, capsys):
    from herd.cli import main

    never = tmp_path / "never"  # --print-config prints and exits: nothing is curated or trained
    for argv, kind in ((["pretrain", str(TINY), "--set", "schedule.stages.0.seq_len=32", "--set", f"run.out_dir={never}"],
                        TrainConfig),
                       (["curate", str(ROOT / "configs/curate/smoke.toml"), "--set", "quality.sample=7", "--set",
                         f"output_dir={never}", "--set", f"generate.dir={never}"], CurateConfig)):
        assert main([*argv, "--print-config"]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith("# resolved from ")
        recipe = load_recipe(kind, _write(tmp_path / "p.toml", printed))
        assert recipe.schedule.stages[0].seq_len == 32 if kind is TrainConfig else recipe.quality.sample == 7
    assert not never.exists()


# ------------------------------------------------------------------------------------------ mix files


def _mix_file(path: Path, tokenized: bool = True) -> Path:
    return write_mix_file(path, MixFile(
        data=MixData(sources={"general": "tokens/general", "code": "/abs/code"}, mix={"general": 0.75, "code": 0.25}),
        anneal=MixAnneal(mix={"code": 1.0}), tokenized=tokenized, provenance={"pretrain": {"budget_tokens": 10}},
    ), header="test mix")


def test_mix_file_feeds_the_pretrain_recipe(tmp_path):
    mix = _mix_file(tmp_path / "cur" / "mix.toml")
    assert tomllib.loads(mix.read_text())["provenance"]["pretrain"]["budget_tokens"] == 10
    cfg = load_pretrain(TINY, ["data.sources={}", f"data.mix_file={mix}", "data.mix=''"])
    assert cfg.data.sources == {"general": str(tmp_path / "cur" / "tokens" / "general"), "code": "/abs/code"}
    assert cfg.data.mix == {"general": 0.75, "code": 0.25} and cfg.anneal.mix == {"code": 1.0}
    # sources named in the recipe are added; a mix given in the recipe wins over the file's
    cfg = load_pretrain(TINY, ["data.sources={extra='/x'}", f"data.mix_file={mix}", "data.mix={extra=1}"])
    assert set(cfg.data.sources) == {"general", "code", "extra"} and cfg.data.mix == {"extra": 1.0}
    with pytest.raises(ConfigError, match=r"data.sources \['code', 'general'\] are also sources of data.mix_file"):
        load_pretrain(TINY, [f"data.mix_file={mix}"])  # tiny.toml's own general/code directories
    with pytest.raises(ConfigError, match="not token shards; rerun `herd curate` with --set mix.tokenize=true"):
        load_pretrain(TINY, ["data.sources={}", f"data.mix_file={_mix_file(tmp_path / 'raw.toml', False)}"])
    _write(mix, mix.read_text().replace("[anneal.mix]", "[anneal]\nweights = 1\n\n[anneal.mix]"))
    with pytest.raises(ConfigError, match=r"tiny.toml: data.mix_file: .*mix.toml: unknown config key 'anneal.weights'"):
        load_pretrain(TINY, ["data.sources={}", f"data.mix_file={mix}"])


# ------------------------------------------------------------------------------------------ mesh sizes


def test_one_mesh_size_type_for_recipe_runtime_and_planner():
    from herd.train.parallel import layout, planner

    assert layout.MeshSizes is MeshSizes and issubclass(planner.Layout, MeshSizes)
    sizes = ParallelSection(tp=2, pp=2).mesh_sizes(8)
    assert sizes == MeshSizes(dp_shard=2, pp=2, tp=2) and sizes.shape == (1, 2, 2, 1, 2)
    plan = planner.Layout(dp_shard=2, pp=2, tp=2, n_microbatches=4)
    assert plan.sizes() == sizes and plan.world_size == sizes.world_size == 8 and plan.dp == 2
    assert [f.name for f in dataclasses.fields(MeshSizes)] == list(layout.MESH_DIMS)
    with pytest.raises(ConfigError, match="not divisible by dp_replicate\\*pp\\*cp\\*tp = 3"):
        ParallelSection(tp=3).mesh_sizes(8)
