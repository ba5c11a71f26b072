"""Strict configs: YAML or dicts mapped onto nested dataclasses, plus `key=value` overrides.

Every problem (unknown key, wrong type, missing required field, missing data path) is a `ConfigError`
with one line that names the key path, e.g. `optim.lr: expected float, got 'abc'`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from avflow.errors import ConfigError, MissingPathError

T = TypeVar("T")

_NO_DEFAULT = dataclasses.MISSING


class CliValue(str):
    """A value given as `key=value` on the command line: parsed later by the type of its field."""


def data_path(default: Any = _NO_DEFAULT, kind: Literal["file", "dir", "any"] = "any") -> Any:
    """A dataclass field holding a path that must exist when the config is loaded (None is allowed if typed so)."""
    if default is _NO_DEFAULT:
        return dataclasses.field(metadata={"must_exist": kind})
    return dataclasses.field(default=default, metadata={"must_exist": kind})


# A key given twice in one mapping is an error (PyYAML keeps the last silently, so a second `optim:` section would
# replace the first).
class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` (its keys may be given again: overrides)
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
                )
            if isinstance(key, Hashable):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        """YAML 1.2 integers: decimal (a leading zero too: `0123` is 123), `0o` octal, `0x` hex (and `0b` binary)."""
        text = str(self.construct_scalar(node)).replace("_", "")
        digits = text.lstrip("+-")
        base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2].lower(), 10)
        try:
            number = int(digits[2:] if base != 10 else digits, base)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"not an integer: {text!r}", node.start_mark) from None
        return -number if text.startswith("-") else number


# PyYAML reads ints and floats by YAML 1.1, which changes some values silently: `0123` is octal (83), `1:30` is
# sexagesimal (90); and `1e-4` is a string. Ints and floats are read by YAML 1.2 here instead (`1:30` is a string).
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YAML12_INT = re.compile(r"^(?:[-+]?0b[01_]+|[-+]?0o[0-7_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?[0-9][0-9_]*)$")
_Loader.add_implicit_resolver(_INT, _YAML12_INT, list("-+0123456789"))
_Loader.add_constructor(_INT, _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


# Writes what `_Loader` reads back unchanged, and what YAML 1.1 readers do too: a string `0o17` is quoted.
class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_implicit_resolver(_INT, _YAML12_INT, list("-+0123456789"))


def parse_yaml(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else _type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _got(value: Any) -> str:
    text = "null" if value is None else repr(str(value) if isinstance(value, CliValue) else value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text + (" (from the command line)" if isinstance(value, CliValue) else "")


def _fail(path: str, tp: Any, value: Any) -> typing.NoReturn:
    raise ConfigError(f"{path or '<root>'}: expected {_type_name(tp)}, got {_got(value)}")


def _accepts_str(tp: Any) -> bool:
    if tp in (str, Path, Any):
        return True
    if typing.get_origin(tp) is Literal:
        return any(isinstance(a, str) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(_accepts_str(a) for a in typing.get_args(tp) if a is not type(None))
    return False


def convert(value: Any, tp: Any, path: str = "") -> Any:
    """Check `value` against the type `tp` (converting int -> float, str -> Path, lists -> tuples)."""
    if tp is Any:
        return _untyped(value, path)
    if isinstance(value, CliValue):
        text = str(value)
        if text.lower() in ("null", "none", "~") and _accepts_none(tp):
            return None
        if not _accepts_str(tp):
            parsed = parse_yaml(text, f"{path}={text}")
            if isinstance(parsed, str):
                _fail(path, tp, value)
            try:
                return convert(parsed, tp, path)
            except ConfigError as exc:
                raise type(exc)(f"{exc} (from the command line)") from None
        value = text
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            _fail(path, tp, value)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, path)
            except ConfigError:
                pass
        _fail(path, tp, value)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        _fail(path, tp, value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            _fail(path, tp, value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            _fail(path, tp, value)
        key_tp, val_tp = args if args else (Any, Any)
        return {convert(k, key_tp, path): convert(v, val_tp, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _fail(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        _fail(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return str(value)
        _fail(path, tp, value)
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        _fail(path, tp, value)
    raise TypeError(f"{path}: unsupported config field type {tp!r}")


_YAML_NULLS = ("null", "Null", "NULL", "~")


def _untyped(value: Any, path: str) -> Any:
    """A command-line value for a field of no declared type (`Any`, a bare `dict`'s values) read as YAML, as it
    would be in a file (`true` a bool, `1` an int, `{a: 1}` a mapping) instead of kept as text. Text (`abc`, `none`,
    an empty value, invalid YAML) stays a CliValue, so a typed check later still reads it as from the command line."""
    if isinstance(value, dict):
        return {k: _untyped(v, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_untyped(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, CliValue):
        return value
    text = str(value)
    try:
        parsed = parse_yaml(text, f"{path}={text}")
    except ConfigError:
        return value
    if isinstance(parsed, str) or parsed is None and text.strip() not in _YAML_NULLS:
        return value
    return parsed


def _accepts_none(tp: Any) -> bool:
    return tp is Any or typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _check_exists(value: Any, kind: str, path: str) -> None:
    if value is None:
        return
    p = Path(value)
    if kind == "file" and not p.is_file() or kind == "dir" and not p.is_dir() or not p.exists():
        what = {"file": "no such file", "dir": "no such folder"}.get(kind, "no such file or folder")
        raise MissingPathError(f"{path}: {what}: {str(value)!r}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from a mapping, strictly: unknown keys, wrong types and missing fields are errors."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):  # null too: `optim=null` must not put back the defaults silently
        raise ConfigError(f"{path or '<root>'}: expected a mapping ({cls.__name__}), got {_got(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{_join(path, str(key))}: unknown key (expected one of: {known})")
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in data:
            kwargs[name] = convert(data[name], hints[name], key_path)
            if "must_exist" in f.metadata:
                _check_exists(kwargs[name], f.metadata["must_exist"], key_path)
        elif f.default is _NO_DEFAULT and f.default_factory is _NO_DEFAULT:
            raise ConfigError(f"{key_path}: missing required field")
        elif "must_exist" in f.metadata and f.default is not _NO_DEFAULT:
            _check_exists(f.default, f.metadata["must_exist"], key_path)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise type(exc)(_join(path, str(exc))) from None  # a subclass (MissingPathError) stays one
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or '<root>'}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Plain YAML-safe values (dicts, lists, str, numbers) from dataclasses, paths and tuples."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, (Path, CliValue)):
        return str(obj)
    return obj


def apply_overrides(data: Mapping | None, overrides: list[str]) -> dict:
    """Set dotted `a.b.c=value` overrides into a copy of a raw config dict (values typed later by their field).
    A key given again, or a section after a key inside it (`train.steps=1` then `train={...}`), replaces the earlier
    value, said in a note (scripts/train_default_v2.py layers a cycle's own data file over the shared one on
    purpose); a key inside a section given before (`train={...}` then `train.steps=1`) is a ConfigError."""
    import warnings

    from avflow.errors import Note

    result = _deep_copy(data or {})
    given: dict[tuple[str, ...], str] = {}  # the keys set so far -> their values
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected key=value with a dotted key such as optim.lr=1e-4")
        node = result
        parts = key.split(".")
        for other, before in list(given.items()):
            if other[: len(parts)] == tuple(parts):  # the same key, or one inside this section
                what = "given twice" if len(other) == len(parts) else f"given after {'.'.join(other)}"
                warnings.warn(Note(f"{key} {what} ({before}, then {value}): the last is used"), stacklevel=2)
                del given[other]
            elif tuple(parts[: len(other)]) == other:
                section = ".".join(other)
                raise ConfigError(f"{section} and {key} both given ({section}=... sets all of {section}): give one")
        given[tuple(parts)] = value
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: cannot set {key!r}, this key is not a mapping")
            node = child
        node[parts[-1]] = CliValue(value)
    return result


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (a YAML config is expected)") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


RUN_CONFIG = "config.yaml"  # what `avflow train` writes into a run's out_dir


def read_run_config(folder: str | Path, model: str) -> dict:
    """The config of a training run folder (`avflow train`'s out_dir) whose model is `model`; a folder without one,
    or a run of another model, is a one-line ConfigError that names it."""
    folder = Path(folder)
    if not (folder / RUN_CONFIG).is_file():
        raise ConfigError(f"{folder}: a folder without {RUN_CONFIG}, not the out_dir of an `avflow train` run")
    data = read_yaml(folder / RUN_CONFIG)
    section = data.get("model")
    name = section.get("name") if isinstance(section, dict) else None
    if name != model:
        raise ConfigError(f"{folder}: a training run of the {name!r} model, not of the {model!r} model")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Dataclass `cls` from an optional YAML file plus `key=value` overrides."""
    raw = read_yaml(path) if path is not None else {}
    try:
        return from_dict(cls, apply_overrides(raw, list(overrides)))
    except ConfigError as exc:
        raise type(exc)(f"{path}: {exc}" if path is not None else str(exc)) from None


def dump_yaml(obj: Any) -> str:
    return yaml.dump(to_dict(obj), Dumper=_Dumper, sort_keys=False)
