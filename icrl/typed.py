"""Typed dataclass configs read from YAML mappings and ``key.sub=value`` strings, strictly.

The machinery under :mod:`icrl.config`'s schema, with nothing of icrl's own in it: ``option``
declares a field with a doc line and checks; ``build`` turns a mapping into a dataclass, converting
every value to its field's type and raising :class:`ConfigError` with one line that names the key
(an unknown key with the closest valid one suggested, a wrong type, a value out of range);
``read_preset`` reads a YAML file that may extend a ``base:`` file; ``describe`` lists every field
for ``--help``.

Messages quote user text through :func:`brief` only: at most ~80 characters of any key or value,
so a file of the wrong kind (a credentials file, a binary) or a YAML alias bomb never turns into a
long message. A preset is at most ``MAX_PRESET_BYTES`` of UTF-8 text whose aliases expand to at most
``MAX_YAML_NODES`` values; anything else is refused in one line without quoting it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "option", "build", "suggest", "set_path", "read_preset", "describe", "brief"]

MAX_PRESET_BYTES = 1 << 20  # a preset is a few hundred bytes; a bigger file is not a config
MAX_YAML_NODES = 100_000  # values a preset may hold once its aliases are expanded
MAX_MESSAGE_CHARS = 1000  # backstop: no message is longer, whatever a caller put in it

_REPR = reprlib.Repr()  # bounded repr: never walks (or prints) more than a few items of a container
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 90, 90, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


class ConfigError(ValueError):
    """A bad config input; the message is one line that names the key."""

    def __init__(self, message: str) -> None:
        # keys and values come from user files: keep the message one line whatever they hold
        text = str(message).replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 3] + "...")


def brief(value: Any, limit: int = 80, *, quote: bool = True) -> str:
    """``value`` for an error message: its repr (or ``str`` when ``quote`` is False), one line, at
    most ``limit`` characters with an ellipsis. The repr is bounded (``reprlib``), so a huge or
    self-referencing value costs no more than a short one."""
    try:
        text = _REPR.repr(value) if quote else str(value)[: 4 * limit]
    except Exception:  # e.g. an int past Python's digit limit, a failing __repr__
        text = f"<{type(value).__name__}>"
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAX_INT = 2**53  # larger sizes in a stored file are garbage (and overflow numpy's int64 spaces)


def integer(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int in [low, 2**53]; a bool, a float such as 1.5 or a string is a ValueError
    naming ``name`` (for sizes read back from JSON, where ``int()`` would take 1.5 or true as 1)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {brief(value)}")
    if not low <= value <= MAX_INT:
        raise ValueError(f"{name} must be an integer in [{low}, 2**53], got {brief(value)}")
    return int(value)


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
        raise ConfigError(f"{key}: expected true or false, got {brief(value)}")
    if tp is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {brief(value)}")
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{key}: expected a finite number, got {brief(value)}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {brief(value)}")
    if tp is list or origin is list:
        if isinstance(value, str):  # override: comma-separated, or a YAML list
            value = _yaml_scalar(value) if value.startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {brief(value)}")
        (item_tp,) = typing.get_args(tp) or (None,)
        return [(_convert(v, item_tp, f"{key}.{i}") if item_tp else _yaml_scalar(v)) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, str) and value.strip().startswith("{"):  # override: a YAML mapping
            value = _yaml_scalar(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {brief(value)}")
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
        raise ConfigError(f"{key}: must be one of {meta['choices']}, got {brief(value)}")
    if value is None or isinstance(value, (bool, str, list, dict)):
        return
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key}: must be >= {meta['min']}, got {brief(value)}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{key}: must be <= {meta['max']}, got {brief(value)}")


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, naming ``prefix + key`` in every error."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {brief(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{brief(k, quote=False)}"
        if k not in fields:
            raise ConfigError(f"{key}: unknown key{suggest(prefix, brief(k, quote=False), fields)}")
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
            raise ConfigError(f"{brief('.'.join(path), quote=False)}: {brief(part, quote=False)} is not a section")
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
    extended, so a variant states only what it changes.

    Raises:
        ConfigError: one line that quotes none of the file: unreadable, too large, not UTF-8 text,
            not YAML, aliases expanding past ``MAX_YAML_NODES`` values, or a top level that is not
            a mapping.
    """
    if p.resolve() in chain:
        raise ConfigError(f"--config: {p} is its own base (through {' -> '.join(str(c) for c in chain)})")
    try:
        with open(p, "rb") as f:  # read a bounded amount: the path may be a device or a huge file
            raw = f.read(MAX_PRESET_BYTES + 1)
        if len(raw) > MAX_PRESET_BYTES:
            raise ConfigError(f"--config: {p} is not a config (larger than {MAX_PRESET_BYTES} bytes; a preset is "
                              "a small YAML file)")
        text = raw.decode("utf-8")
    except OSError as e:
        raise ConfigError(f"--config: cannot read {p}: {e.strerror or type(e).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config: {p} is not a config (not UTF-8 text: a binary file?)") from None
    data = _load_yaml(text, p)
    if data is None:  # an empty file: all defaults
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {p} is not a config (top level is not a mapping)")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"base: expected a YAML file name, got {brief(base)}")
    return _merge(read_preset(p.parent / base, (*chain, p.resolve())), data)


def _load_yaml(text: str, p: Path) -> Any:
    """``yaml.safe_load`` of a preset, refusing alias bombs (and recursive aliases) before they are
    expanded; YAML errors name the line and column, never the text."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, p)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        problem = brief(getattr(e, "problem", None) or str(e).splitlines()[0], quote=False)
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"--config: {p} is not valid YAML: {problem}{where}") from None
    except RecursionError:
        raise ConfigError(f"--config: {p} is not a config (nested too deeply)") from None
    except ConfigError:
        raise
    except ValueError as e:  # e.g. an integer past Python's digit limit
        raise ConfigError(f"--config: {p} holds a value Python cannot read: {brief(e, quote=False)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expansion(root: yaml.Node, p: Path) -> None:
    """Count the values a YAML node graph stands for once aliases are expanded (an alias is a
    shared node: n nested aliases to 9-item lists make 9**n values out of a few hundred bytes)."""
    size: dict[int, int] = {}  # values under a finished node, by id
    open_: set[int] = set()  # nodes on the current depth-first path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if finished:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] > MAX_YAML_NODES:
                raise ConfigError(f"--config: {p} is not a config (its aliases expand to more than "
                                  f"{MAX_YAML_NODES} values)")
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            raise ConfigError(f"--config: {p} is not a config (a YAML alias refers to itself)")
        open_.add(id(node))
        stack.append((node, True))
        stack += [(c, False) for c in children if id(c) not in size]


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
