"""The one TOML recipe loader: file -> dictionary -> `--set` overrides -> typed dataclasses -> checks.

Every recipe kind (`herd pretrain`, `herd curate`, and the stages still to come) is a tree of plain
dataclasses whose fields carry defaults; `load_recipe(Kind, path, overrides)` builds one. A new kind
plugs in with its dataclasses and, where fields depend on each other, a `validate(self)` method that
raises ConfigError. Nothing else: no per-kind parser, no per-kind override syntax.

Why dataclasses and a small hand-written builder instead of a config library: the schema types are
few (bool, int, float, str, Any, lists, string-keyed tables, unions, nested sections), and every error
must name the file and the full key path, list the valid keys when one is unknown, and come *before*
any model or data is touched (a typo in a week-long run's recipe should cost a second, not a
GPU-hour). Values from `--set` arrive as text and are coerced once their declared type is known, so
`--set run.max_tokens=4e6` is an int and `--set data.mix={general=1}` a table.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe file or override is malformed, names an unknown key, or is inconsistent.

    A ValueError so the command line reports it as one line of user error; the message names the file
    (when there is one) and the key path.
    """


def internal(default: Any) -> Any:
    """A dataclass field that is state, not a recipe key (e.g. where the recipe came from): the loader
    rejects it as a key and `to_toml` leaves it out."""
    return dataclasses.field(default=default, metadata={"recipe": False})


def recipe_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("recipe", True)]


# ---------------------------------------------------------------------------------------------------
# TOML text in and out (the only place herd parses TOML)


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """A TOML document as a dictionary; a syntax error is a ConfigError naming `where`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return parse_toml(path.read_text(encoding="utf-8"), str(path))


def _toml_value(text: str) -> Any:
    """`text` as a TOML value (`3e-4`, `[1, 2]`, `{a = 1}`, `"x"`), or None when it is not one."""
    try:
        return parse_toml(f"v = {text}", "")["v"]
    except ConfigError:
        return None


def to_plain(obj: Any) -> dict[str, Any]:
    """A recipe as TOML-ready nested dictionaries: internal fields and None values left out (TOML has
    no null; a left-out key loads as its default, which is what None stands for)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in recipe_fields(type(obj))
                if getattr(obj, f.name) is not None}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if v is not None}
    raise TypeError(f"to_plain needs a dataclass instance or a dict, got {type(obj).__name__}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) or isinstance(value, dict):
        return to_plain(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def to_toml(obj: Any, header: str = "") -> str:
    """A recipe (or any dict of TOML values) as TOML text; `header` lines become leading comments."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + tomli_w.dumps(to_plain(obj))


def write_toml(path: str | Path, obj: Any, header: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(obj, header), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# `--set a.b=c`


class _Raw(str):
    """An override value still in text form; coerced once its target type is known."""


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` to a raw recipe dictionary (list items by index: `schedule.stages.1.seq_len=64`)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    path, value = assignment.split("=", 1)
    parts = path.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: empty key component")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_index(node, part, assignment, ".".join(parts[:i]))]
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, _Raw):  # an earlier --set gave this table as a literal: open it up
            parsed = _toml_value(child)
            if isinstance(parsed, (dict, list)):
                child = node[part] = parsed
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"--set {assignment!r}: {where} is a value, not a table")
        node = child
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, assignment, ".".join(parts[:-1]))] = _Raw(value.strip())
    else:
        node[last] = _Raw(value.strip())


def _index(node: list, part: str, assignment: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {assignment!r}: {where}: index {part} out of range (list has {len(node)} items)")
    return int(part)


# ---------------------------------------------------------------------------------------------------
# Dictionaries -> dataclasses, with type checks


def _type_name(tp: Any) -> str:
    return "none" if tp is type(None) else getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse_literal(value: _Raw, key: str) -> Any:
    parsed = _toml_value(value)
    if parsed is None:
        raise ConfigError(f"{key}: cannot parse {str(value)!r} as a TOML value")
    return parsed


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        if isinstance(value, _Raw):  # a TOML value, else the text (`time=1:00:00` stays a string, not a clock time)
            parsed = _toml_value(value)
            return parsed if isinstance(parsed, (bool, int, float, str, list, dict)) else str(value)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, _Raw):
            value = _parse_literal(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None  # an optional field left unset (a recipe dict round-tripped through asdict)
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if isinstance(value, _Raw):  # a table, list or quoted string as TOML; anything else stays raw text
            parsed = _toml_value(value)  # (each option then reads it: `true` for bool, `runs/x` for str)
            value = parsed if isinstance(parsed, (dict, list, str)) else value
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, _Raw):
            value = _parse_literal(value, key)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if isinstance(value, _Raw):
            value = _parse_literal(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        return _to_bool(value, key)
    if tp is int:
        return _to_int(value, key)
    if tp is float:
        if isinstance(value, _Raw):
            try:
                return float(value.replace("_", ""))
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {str(value)!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, _Raw) and value[:1] in ("'", '"') and isinstance(_toml_value(value), str):
            return _toml_value(value)  # --set run.out_dir='"runs/x"': the TOML string, unquoted
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # a programming error in the schema


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, _Raw):
        low = value.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, _Raw):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            try:
                as_float = float(value)
            except ValueError:
                as_float = float("nan")
            if as_float.is_integer():  # 4e6 is a fine way to write a token count
                return int(as_float)
            raise ConfigError(f"{key}: expected an integer, got {str(value)!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and not value.is_integer()
    ):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return int(value)


def build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass `cls` from a TOML-shaped table; unknown keys and wrong types are ConfigErrors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'the top level'}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = recipe_fields(cls)
    names = [f.name for f in fields]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            where = f"[{prefix}]" if prefix else "the top level"
            raise ConfigError(f"unknown config key {full!r}; valid keys in {where}: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    missing = [f.name for f in fields if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix or 'the top level'}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)  # type: ignore[call-arg]


# ---------------------------------------------------------------------------------------------------
# Recipes


def recipe_from_dict(cls: type[T], data: dict[str, Any], overrides: typing.Sequence[str] = (),
                     source: str | None = None) -> T:
    """Build a recipe of kind `cls` from a TOML-shaped dictionary plus `--set` overrides, and check it.

    `cls.validate(self)`, when the kind defines it, runs the cross-field checks (and may fill derived
    values). Every problem is a ConfigError; with `source` (the file) its message starts `source: `.
    """
    try:
        data = copy.deepcopy(data)  # overrides write into nested tables; never into the caller's dict
        for assignment in overrides:
            apply_override(data, assignment)
        recipe = build(cls, data)
        validate = getattr(recipe, "validate", None)
        if validate is not None:
            validate()
    except ConfigError as exc:
        if source is None:
            raise
        raise ConfigError(f"{source}: {exc}") from None
    return recipe


def load_recipe(cls: type[T], path: str | Path, overrides: typing.Sequence[str] = ()) -> T:
    """Read a TOML recipe file, apply `--set` overrides and check it; errors name the file and the key."""
    return recipe_from_dict(cls, read_toml(path), overrides, source=str(path))
