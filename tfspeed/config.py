"""`StageConfig`: the base of every stage's settings (fine-tuning, pruning, QAT, distillation, export, profiling).

A stage's config is a dataclass that checks itself when made, so the Python verbs, the `tfspeed` commands and
`optimize` recipes share one default and one check per setting:

- `__post_init__` calls `validate()`; errors name the argument, what was expected and echo what was received.
- `to_dict()` / `from_dict()` round-trip through JSON and TOML (enums as their values, tuples as lists); unknown keys
  are refused with the list of known ones.
- `add_arguments(parser)` adds one flag per field (`--batch-size` for `batch_size`), with the field's default, help
  and choices (built from its enum), and `from_args(args)` builds the config back from the parsed flags.
- `resolve(config, **overrides)` is what the verbs use for keyword shortcuts: `qat_fit(model, train, epochs=2)` is
  `qat_fit(model, train, config=QATConfig(epochs=2))`.

Example:

>>> import dataclasses
>>> from tfspeed.config import StageConfig, field, check_positive_int
>>> @dataclasses.dataclass
... class ToyConfig(StageConfig):
...     epochs: int = field(2, help="training epochs")
...     def validate(self):
...         check_positive_int("epochs", self.epochs)
>>> ToyConfig.from_dict({"epochs": 3}).to_dict()
{'epochs': 3}
>>> ToyConfig(epochs=0)
Traceback (most recent call last):
...
ValueError: Received an invalid value for `epochs`, expected a positive integer. Received: epochs=0
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import typing
from pathlib import Path
from typing import Optional

from tfspeed._checks import fraction as check_fraction
from tfspeed._checks import positive_int as check_positive_int

__all__ = ["StageConfig", "StrEnum", "field", "check_positive_int", "check_fraction", "check_choice", "check_range",
           "read_config_file"]


class StrEnum(str, enum.Enum):
    """An enum whose members are their string values (`Mode.DYNAMIC == "dynamic"`); CLI choices come from it."""

    def __str__(self):
        return self.value

    @classmethod
    def choices(cls) -> list:
        return [m.value for m in cls]

    @classmethod
    def expected(cls) -> str:
        """What a refused value's error says was expected; an enum may say more (e.g. another accepted type)."""
        return f"one of {cls.choices()}"

    @classmethod
    def parse(cls, name: str, value):
        """The member for `value` (a member or its string), or a ValueError naming `name` and the choices."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"Received an invalid value for `{name}`, expected {cls.expected()}. "
                             f"Received: {name}={value!r}") from None


def field(default=dataclasses.MISSING, *, help: str = "", flag: Optional[str] = None, choices=None, cli: bool = True,
          parse=None, metavar=None, default_factory=dataclasses.MISSING):
    """A dataclass field with what the CLI needs: its help text, flag name, choices and string parser.

    Args:
        default: the one default of the setting.
        help: one line for `--help` (the default is appended).
        flag: the flag name. Defaults to `--` + the field name with `-` for `_`.
        choices: a `StrEnum` class or a list of strings. Defaults to the enum of the field's type, if any.
        cli: `False` for settings that have no flag (Python objects such as callbacks).
        parse: a function from the flag's string to the value (e.g. `"2:4"` -> `(2, 4)`).
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "cli": cli, "parse": parse, "metavar": metavar}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"Received an invalid value for `{name}`, expected one of {list(choices)}. "
                         f"Received: {name}={value!r}")
    return value


def check_range(name: str, value, low=None, high=None, *, low_open=False, high_open=False, what=None, optional=False):
    """A number within [low, high] (open ends where asked); `optional=True` lets None through."""
    if value is None and optional:
        return value
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if what is None:
            lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
            hi = "" if high is None else f"{high}" + (")" if high_open else "]")
            what = f"a number in {lo or '(-inf, '}{hi or 'inf)'}"
        raise ValueError(f"Received an invalid value for `{name}`, expected {what}. Received: {name}={value!r}")
    return value


def _enum_of(tp):
    for t in (tp, *typing.get_args(tp)):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return t
    return None


def _to_plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, StageConfig):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass
class StageConfig:
    """Base class of the stage configs: validation, (de)serialization and CLI flags from the dataclass fields."""

    def __post_init__(self):
        hints = self._hints()
        for f in dataclasses.fields(self):  # strings -> enum members, lists -> tuples (JSON gives lists)
            value = getattr(self, f.name)
            enum_cls = _enum_of(hints.get(f.name))
            if enum_cls is not None and value is not None and not isinstance(value, enum_cls):
                if issubclass(enum_cls, StrEnum):
                    value = enum_cls.parse(f.name, value)
                elif hasattr(enum_cls, "parse"):  # e.g. export's Mode: parse(value, argument)
                    value = enum_cls.parse(value, f.name)
                else:
                    value = enum_cls(value)
                setattr(self, f.name, value)
            elif isinstance(value, list) and typing.get_origin(hints.get(f.name)) in (tuple, typing.Union, None):
                setattr(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Checks every setting; overridden by each config. Raises ValueError naming the argument."""

    # --- serialization -------------------------------------------------------------------------------------------
    @classmethod
    def _hints(cls) -> dict:
        try:
            return typing.get_type_hints(cls)
        except Exception:  # pragma: no cover - unresolvable annotation: fall back to no conversion
            return {}

    @classmethod
    def field_names(cls) -> list:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict:
        """The settings as JSON-ready values (enums as strings, tuples as lists, nested configs as dicts)."""
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.metadata.get("cli", True) or _is_plain(getattr(self, f.name))}

    @classmethod
    def from_dict(cls, d: dict):
        """A config from `to_dict()`'s output (or a JSON / TOML table); unknown keys are refused."""
        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"Expected a dict of {cls.__name__} settings. Received: {d!r}")
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} settings {unknown}. Expected keys among {cls.field_names()}.")
        hints = cls._hints()
        kwargs = {}
        for k, v in d.items():
            tp = hints.get(k)
            if isinstance(tp, type) and issubclass(tp, StageConfig) and isinstance(v, dict):
                v = tp.from_dict(v)
            kwargs[k] = v
        return cls(**kwargs)

    def replace(self, **changes):
        """A copy with `changes` applied (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, config=None, **overrides):
        """`config` (a config, a dict or None for the defaults) with keyword `overrides` applied."""
        if config is None:
            config = cls()
        elif isinstance(config, dict):
            config = cls.from_dict(config)
        elif not isinstance(config, cls):
            raise ValueError(f"Received an invalid value for `config`, expected a {cls.__name__}, a dict or None. "
                             f"Received: config={config!r}")
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"Unknown {cls.__name__} settings {unknown}. Expected keys among {cls.field_names()}.")
        return dataclasses.replace(config, **overrides) if overrides else config

    # --- command line --------------------------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser, exclude=(), only=None, defaults: Optional[dict] = None, group: Optional[str] = None):
        """Adds one flag per field (skipping `exclude`, or keeping `only`); `defaults` overrides the shown defaults."""
        target = parser.add_argument_group(group) if group else parser
        hints = cls._hints()
        defaults = defaults or {}
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if not meta.get("cli", True) or f.name in exclude or (only is not None and f.name not in only):
                continue
            default = defaults.get(f.name, _default_of(f))
            flag = meta.get("flag") or "--" + f.name.replace("_", "-")
            tp = hints.get(f.name)
            enum_cls = _enum_of(tp)
            choices = meta.get("choices")
            if isinstance(choices, type) and issubclass(choices, enum.Enum):
                choices = [m.value for m in choices]
            elif choices is None and enum_cls is not None:
                choices = [m.value for m in enum_cls]
            shown = _to_plain(default)
            if isinstance(shown, bool):
                shown = "on" if shown else "off"
            elif isinstance(shown, list):
                shown = ",".join(str(s) for s in shown)
            help_text = (meta.get("help") or "").rstrip()
            if shown in (None, "", []) and ("(default:" in help_text or "unset:" in help_text or "(none:" in help_text):
                pass  # the help says what an unset value means
            elif "(default:" not in help_text:
                help_text = f"{help_text} (default: {'none' if shown in (None, '', []) else shown})".strip()
            kwargs = dict(dest=f.name, default=default, help=help_text.replace("%", "%%"))
            base = _base_type(tp)
            if base is bool and meta.get("parse") is None:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = meta.get("parse") or (str if enum_cls is not None else _scalar_parser(base, f.name))
                if choices is not None:
                    kwargs["choices"] = choices
                if meta.get("metavar"):
                    kwargs["metavar"] = meta["metavar"]
            target.add_argument(flag, **kwargs)
        return parser

    @classmethod
    def from_args(cls, args, **extra):
        """The config from parsed flags (fields without a flag keep their defaults; `extra` overrides)."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
                  and f.metadata.get("cli", True)}
        values.update(extra)
        return cls(**values)


def _is_plain(value) -> bool:
    try:
        json.dumps(_to_plain(value))
        return True
    except TypeError:
        return False


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _base_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        return args[0]
    return tp


def _scalar_parser(tp, name):
    if tp in (int, float):
        def parse(text: str):
            if text.strip().lower() == "none":
                return None
            try:
                return tp(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {'an integer' if tp is int else 'a number'} for "
                                                 f"`{name}`, received {text!r}") from None
        parse.__name__ = tp.__name__
        return parse
    return str


def read_config_file(path, what: str = "`--config`") -> dict:
    """The settings of a `.json` or `.toml` file, as a dict (the caller's `from_dict` checks them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a config file for {what}. Received: {str(path)!r}, no such file.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError as e:  # Python 3.10
            raise ValueError("TOML config files need Python 3.11+; use a .json file.") from e
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML ({e}).") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    raise ValueError(f"Expected a .json or .toml file for {what}. Received: {str(path)!r}")

