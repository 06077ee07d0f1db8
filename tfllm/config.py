"""Plain dataclass configs loaded from YAML files, with `section.key=value` overrides.

Every stage keeps its options in small dataclasses next to the code that uses them, and
composes them into one config per CLI stage (`tfllm.data.stages.PretrainDataConfig`,
`tfllm.finetune.train.FinetuneConfig`, ...). This module knows no stage: it only loads,
YAML -> nested dict -> `--set` overrides -> type-checked dataclasses. Unknown keys are
errors that name the closest valid key.

Example:

>>> from tfllm.config import load_config
>>> from tfllm.data.pretraining import ExampleOptions
>>> cfg = load_config(ExampleOptions, None, ["seq_len=64", "nsp=false"])
>>> cfg.seq_len, cfg.nsp
(64, False)
>>> load_config(ExampleOptions, None, ["seq_lne=64"])
Traceback (most recent call last):
...
tfllm.config.ConfigError: unknown config key 'seq_lne' (did you mean 'seq_len'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tfllm.errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """A config file or override that does not fit the config's dataclasses."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _unknown_key(cls: type, key: str, where: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(names)})"
    return ConfigError(f"unknown config key '{where}{key}'{hint}")


def _from_dict(cls: type[T], data: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(cls, str(key), prefix)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def apply_override(data: dict, assignment: str, cls: type) -> None:
    """Apply one `a.b.c=value` assignment (value parsed as YAML) to a nested dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML ({err})") from err
    node, node_cls = data, cls
    for depth, key in enumerate(keys):
        fields_by_name = {f.name: f for f in dataclasses.fields(node_cls)}
        if key not in fields_by_name:
            raise _unknown_key(node_cls, key, ".".join(keys[:depth]) + ("." if depth else ""))
        if depth == len(keys) - 1:
            node[key] = value
            return
        sub_tp = typing.get_type_hints(node_cls)[key]
        if not dataclasses.is_dataclass(sub_tp):
            raise ConfigError(f"--set {dotted}: '{key}' is a value, not a section")
        node = node.setdefault(key, {})
        node_cls = sub_tp


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | tuple = ()) -> T:
    """Build `cls` from a YAML file (or defaults when `path` is None) plus overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for assignment in overrides:
        apply_override(data, assignment, cls)
    try:
        return _from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with `load_config`)."""
    Path(path).write_text(
        yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
