"""herd's one config system: TOML recipes -> typed dataclasses, for every command that reads a recipe.

    load_recipe(Kind, path, overrides) -> Kind      read, `--set`, build, Kind.validate(); ConfigError names file + key
    recipe_from_dict(Kind, data, overrides)         the same from a dictionary
    apply_override(data, "a.b.c=value")             the one `--set` syntax (TOML-typed values, list items by index)
    to_toml(recipe) / write_toml(path, recipe)      the resolved recipe as TOML (`--print-config`, files herd writes)
    add_recipe_arguments(parser) / print_recipe      the CONFIG, --set and --print-config arguments of a command
    add_set_argument(parser)                         just --set (commands whose recipe is not their first argument)
    MeshSizes, RunSection, ModelSection, ...         the sections shared by training-like recipes

A recipe kind is a dataclass of sections (plain dataclasses with defaults) and, when fields depend on
each other, a `validate(self)` that raises ConfigError: `herd pretrain` is herd.train.config.TrainConfig,
`herd curate` is herd.data.curation.config.CurateConfig. A new kind needs nothing more.
"""

from __future__ import annotations

import argparse
from typing import Any

from herd.config.loader import (
    ConfigError,
    apply_override,
    build,
    internal,
    load_recipe,
    parse_toml,
    read_toml,
    recipe_from_dict,
    to_plain,
    to_toml,
    write_toml,
)
from herd.config.sections import (
    MESH_DIMS,
    CheckpointSection,
    LogSection,
    MeshSizes,
    ModelSection,
    OptimSection,
    ParallelSection,
    RunSection,
    ScheduleSection,
    StageConfig,
)

__all__ = [
    "ConfigError", "apply_override", "build", "internal", "load_recipe", "parse_toml", "read_toml",
    "recipe_from_dict", "to_plain", "to_toml", "write_toml", "add_recipe_arguments", "add_set_argument", "print_recipe",
    "MESH_DIMS", "MeshSizes", "RunSection", "ModelSection", "OptimSection", "StageConfig", "ScheduleSection",
    "CheckpointSection", "LogSection", "ParallelSection",
]


def add_set_argument(parser: argparse.ArgumentParser, example: str = "optim.lr=1e-3") -> None:
    """`--set KEY=VALUE` (repeatable) into `args.overrides`, for apply_override / load_recipe."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a recipe value (a TOML value), e.g. --set {example} (repeatable)")


def add_recipe_arguments(parser: argparse.ArgumentParser, example: str = "optim.lr=1e-3") -> None:
    """CONFIG, `--set KEY=VALUE` (repeatable) and `--print-config`: the same three on every recipe command."""
    parser.add_argument("config", metavar="CONFIG.toml", help="TOML recipe")
    add_set_argument(parser, example)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved recipe (defaults and overrides applied) as TOML and exit")


def print_recipe(recipe: Any, source: str = "") -> None:
    """The resolved recipe as TOML on stdout: loading the printed text gives the same recipe."""
    header = f"resolved from {source}" if source else ""
    print(to_toml(recipe, header), end="")
