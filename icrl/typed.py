"""Typed dataclass configs read from YAML mappings and ``key.sub=value`` strings, strictly.

The machinery under :mod:`icrl.config`'s schema, with nothing of icrl's own in it: ``option``
declares a field with a doc line and checks; ``build`` turns a mapping into a dataclass, converting
every value to its field's type and raising :class:`ConfigError` with one line that names the key
(an unknown key with the closest valid one suggested, a wrong type, a value out of range);
``read_preset`` reads a YAML file that may extend a ``base:`` file; ``describe`` lists every field
for ``--help``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "option", "build", "suggest", "set_path", "read_preset", "describe"]


class ConfigError(ValueError):
    """A bad config input; the message is one line that names the key."""

    def __init__(self, message: str) -> None:
        # keys and values come from user files: keep the message one line whatever they hold
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def option(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field with a doc line and optional checks (``min``, ``max``, ``choices``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value (or an override string) to the field type ``tp``, strictly."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or value == "null":
            return None
        return _convert(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is list or origin is list:
        if isinstance(value, str):  # override: comma-separated, or a YAML list
            value = _yaml_scalar(value) if value.startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (None,)
        return [(_convert(v, item_tp, f"{key}.{i}") if item_tp else _yaml_scalar(v)) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, str) and value.strip().startswith("{"):  # override: a YAML mapping
            value = _yaml_scalar(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): (_yaml_scalar(v) if isinstance(v, str) else v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".")
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _yaml_scalar(text: Any) -> Any:
    """Parse an override value of a free-form field: numbers, booleans, lists, else the string."""
    if not isinstance(text, str):
        return text
    try:
        return float(text) if _looks_float(text) else yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _looks_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return not text.lstrip("+-").isdigit() and text.lower() not in ("nan", "inf", "-inf", "infinity")


def _check(value: Any, meta: dict, key: str) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: must be one of {meta['choices']}, got {value!r}")
    if value is None or isinstance(value, (bool, str, list, dict)):
        return
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key}: must be >= {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{key}: must be <= {meta['max']}, got {value!r}")


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, naming ``prefix + key`` in every error."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in fields:
            raise ConfigError(f"{key}: unknown key{suggest(prefix, str(k), fields)}")
        value = _convert(v, hints[k], key)
        _check(value, fields[k].metadata, key)
        kwargs[k] = value
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def suggest(prefix: str, key: str, names: Any) -> str:
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.5)
    return f" (did you mean {prefix}{close[0]}?)" if close else f" (valid: {', '.join(sorted(names))})"


def set_path(data: dict, path: list[str], value: str) -> None:
    for part in path[:-1]:
        nxt = data.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a section")
        data = nxt
    data[path[-1]] = value


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_preset(p: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A YAML preset as a mapping; ``base: other.yaml`` (relative to the preset) is read first and
    extended, so a variant states only what it changes."""
    if p.resolve() in chain:
        raise ConfigError(f"--config: {p} is its own base (through {' -> '.join(str(c) for c in chain)})")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"--config: cannot read {p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config: {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {p} must hold a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"base: expected a YAML file name, got {base!r}")
    return _merge(read_preset(p.parent / base, (*chain, p.resolve())), data)


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per field: ``key (type, default): doc`` — the body of ``--help``."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"[{prefix}{f.name}] {f.metadata.get('help', '')}")
            lines += describe(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = ""
        if "choices" in f.metadata:
            extra = f"; one of {f.metadata['choices']}"
        elif "min" in f.metadata or "max" in f.metadata:
            extra = f"; range [{f.metadata.get('min', '-inf')}, {f.metadata.get('max', 'inf')}]"
        lines.append(f"  {prefix}{f.name} ({_type_name(tp)}, default {default!r}{extra}): {f.metadata.get('help', '')}")
    return lines
