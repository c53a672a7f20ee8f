"""The fields of an experiment's config: one declaration gives the default, the help text, the UI label, the
CLI flag and how a value is read from text.

A config is a dataclass whose fields are made with `option(...)`. The CLI builder (`anatomy.cli`) turns each
field into a flag (`layer_count` -> `--layer-count`), the app's tab builder (`space.tab`) into an input, and
the report prints the same fields as its parameter table, so a default is written exactly once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import AnatomyError, shown


SEED_MAX = 2**32 - 1  # numpy's generators take seeds below 2^32


@dataclass(frozen=True)
class Codec:
    """How a value that is not a plain number, string or switch is typed as text (CLI flag, UI textbox)."""

    parse: Callable[[str, str], Any]  # (text, where) -> value; `where` names the flag or field in errors
    format: Callable[[Any], str]  # value -> text (defaults shown in --help and in the UI)


@dataclass(frozen=True)
class Option:
    """What the CLI and the UI need to know about one config field, beside its name and default."""

    help: str
    label: str | None = None  # UI label; the help text when absent
    flag: str | None = None  # CLI flag when it is not `--field-name` (`--no-field-name` for a True switch)
    aliases: tuple[str, ...] = ()  # further CLI spellings (`-k` beside `--ks`)
    choices: tuple[str, ...] | None = None  # a str picks one; with `multiple` a tuple picks several
    multiple: bool = False
    codec: Codec | None = None  # text form of tuples, layer selections and the like
    minimum: float | None = None  # numbers below are refused in one line before any work
    maximum: float | None = None  # numbers above are refused too (a step count of 10^9 would never end)
    public_maximum: float | None = None  # the tighter ceiling of a public app (default: `maximum`)
    max_items: int = 1024  # the most items a list field takes (each item is a forward or a fine-tune)
    cli: bool = True  # False: library and UI only (the app's cheaper latency settings, say)
    ui: bool = True  # False: CLI and library only
    cli_default: Any = None  # not None: when the CLI's default differs from the library's (stated in help)
    repeat: bool = False  # the CLI flag may be given several times (`--plan A --plan B`): one item each


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its documentation; mutable defaults (lists, dicts) are copied per instance."""
    meta = {"option": Option(help=help, **kwargs)}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Param:
    """One declared field of a config class: what the builders iterate over."""

    name: str
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        if self.option.flag:
            return self.option.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.is_switch and self.default is True else f"--{dashed}"

    @property
    def is_switch(self) -> bool:
        return isinstance(self.default, bool)

    @property
    def label(self) -> str:
        return self.option.label or self.option.help

    def text(self, value: Any) -> str:
        """A value as the user types it."""
        if self.option.codec is not None:
            return self.option.codec.format(value)
        if self.option.multiple:
            return ",".join(value)
        return "" if value is None else str(value)

    def ceiling(self, public: bool = False) -> float | None:
        """The largest number this field takes: the public ceiling on a public app, else the declared one."""
        opt = self.option
        return opt.public_maximum if public and opt.public_maximum is not None else opt.maximum

    def parse(self, value: Any, where: str | None = None, public: bool = False) -> Any:
        """A value from the CLI (text) or the UI (text, number, bool, list), checked and typed like the default,
        and within the field's declared range (`public`: a public app's tighter ceiling)."""
        where = where or self.flag
        opt = self.option
        if isinstance(value, str) and opt.codec is not None:
            return self._in_range(opt.codec.parse(value, where), where, public)
        if opt.multiple:
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value or ())
            unknown = [v for v in items if v not in (opt.choices or ())]
            if unknown:
                raise AnatomyError(f"{where} takes any of {', '.join(opt.choices or ())}, got {shown(unknown[0])}.")
            return tuple(items)
        if self.is_switch:
            return bool(value)
        if opt.choices is not None:
            if value not in opt.choices:
                raise AnatomyError(f"{where} takes one of {', '.join(opt.choices)}, got {shown(value)}.")
            return value
        if isinstance(self.default, (int, float)) or value is None:
            return self._in_range(self._number(value, where), where, public)
        return str(value)

    def _in_range(self, value: Any, where: str, public: bool) -> Any:
        """Refuse a number (or a list item) outside [minimum, ceiling], and a list longer than `max_items`:
        checked here, so the CLI, the app and the study refuse the same values before any work."""
        if isinstance(value, (tuple, list)):
            if len(value) > self.option.max_items:
                raise AnatomyError(f"{where} takes at most {self.option.max_items} values, got {len(value)}.")
            for item in value:
                self._in_range(item, where, public)
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        low, high = self.option.minimum, self.ceiling(public)
        if low is not None and value < low:
            raise AnatomyError(f"{where} must be >= {low:g}, got {shown(value)}.")
        if high is not None and value > high:
            here = " on this public app (run it locally for more)" if public and high != self.option.maximum else ""
            raise AnatomyError(f"{where} must be <= {high:g}{here}, got {shown(value)}.")
        return value

    def _number(self, value: Any, where: str) -> Any:
        if value is None:
            if self.default is None:
                return None
            raise AnatomyError(f"{where} needs a number (default {self.default}).")
        whole = isinstance(self.default, int)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise AnatomyError(f"{where} takes a number, got {shown(value)}.") from None
        if not math.isfinite(number) or (whole and not number.is_integer()):
            kind = "a whole number" if whole else "a finite number"
            raise AnatomyError(f"{where} takes {kind}, got {shown(value)}.")
        return int(number) if whole else number


def params(config_class: type) -> list[Param]:
    """The declared fields of a config class, in declaration order (fields without `option` are internal)."""
    out = []
    for f in dataclasses.fields(config_class):
        opt = f.metadata.get("option")
        if opt is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(Param(f.name, default, opt))
    return out


def build_config(config_class: type, values: dict[str, Any], where: Callable[[Param], str] | None = None,
                 public: bool = False) -> Any:
    """A config from raw values by field name (CLI strings, UI values); absent names keep their defaults.
    `public`: a public app's request, held to the fields' tighter public ceilings."""
    kwargs = {}
    for param in params(config_class):
        if param.name in values:
            kwargs[param.name] = param.parse(values[param.name], where(param) if where else None, public)
    config = config_class(**kwargs)
    if hasattr(config, "validate"):
        config.validate()
    return config


def parameter_table(config: object) -> list[tuple[str, str, str, str]]:
    """(field, CLI flag, value, meaning) for every declared field: the report's parameter table (an app-only
    field has no flag)."""
    return [(p.name, p.flag if p.option.cli else "", p.text(getattr(config, p.name)), p.option.help)
            for p in params(type(config))]


# ---- codecs shared by several experiments ----

def parse_floats(text: str, count: int | None, where: str) -> tuple[float, ...]:
    """Comma-separated finite numbers (`count` of them, if given); nan and inf are refused here, because
    every comparison with nan is False and would slip past the range checks of a config."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise AnatomyError(f"{where} takes comma-separated numbers, got {shown(text)}.") from None
    if not all(map(math.isfinite, values)):
        raise AnatomyError(f"{where} takes finite numbers, got {shown(text)}.")
    if count is not None and len(values) != count:
        raise AnatomyError(f"{where} takes {count} comma-separated numbers, got {shown(text)}.")
    return values


def parse_ints(text: str, where: str) -> tuple[int, ...]:
    """Comma-separated whole numbers in plain digits (a count of layers, a block size)."""
    tokens = [t.strip() for t in text.split(",")]
    if not all(t.isascii() and t.isdigit() and len(t) <= 6 for t in tokens):
        raise AnatomyError(f"{where} takes comma-separated whole numbers like 3,6, got {shown(text)}.")
    return tuple(int(t) for t in tokens)


def floats(count: int | None = None) -> Codec:
    """Comma-separated finite numbers, `count` of them when given (a range is `floats(2)`)."""
    return Codec(lambda text, where: parse_floats(text, count, where), lambda v: ",".join(f"{x:g}" for x in v))


INTS = Codec(lambda text, where: parse_ints(text, where) if text.strip() else (),
             lambda v: ",".join(map(str, v)))
"""Comma-separated whole numbers; empty: none."""


def _layers(text: str, where: str) -> str | None:
    from .layers import parse_layers
    text = text.strip()
    if text.lower() in {"", "all"}:
        return None
    try:
        parse_layers(text, 10**6)  # the syntax now; the range against the model once it is loaded
    except AnatomyError as err:  # named by the field on screen or the flag, where the visitor typed it
        raise AnatomyError(f"{where}: {err}") from None
    return text


LAYERS = Codec(_layers, lambda v: "all" if v is None else v if isinstance(v, str) else ",".join(map(str, v)))
"""A layer selection such as 0,3,5-8 (0-based) or all; checked against the model's depth when it runs."""


def optional_text(text: str, where: str) -> str | None:
    """Free text where empty means 'not given'."""
    return text.strip() or None


OPTIONAL_TEXT = Codec(optional_text, lambda v: v or "")


def lines(text: str, where: str) -> tuple[str, ...]:
    """One item per line or per ';' (plans typed into a textbox or given as repeated text)."""
    return tuple(item.strip() for item in text.replace(";", "\n").splitlines() if item.strip())


LINES = Codec(lines, lambda v: "; ".join(v))
