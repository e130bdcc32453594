"""One settings source: a stage's settings are dataclass fields that carry default, help and unit once.

Declare a field with :func:`setting`; the command line (``probe/cli.py``) and experiment files
(``probe/experiment/spec.py``) read the same fields through :func:`options`, which flattens nested
specs (capture = ``ModelSpec`` inside ``VariantSpec`` inside ``CaptureSpec``) into one list of
:class:`Option`, each with a public name: the CLI flag (``--n-tokens``) and the experiment-file key
(``n_tokens``). Where two nested specs share a field name the inner one takes its owner's name as a
prefix (the capture store's ``dtype`` vs the model's ``model_dtype``). Tuples are comma-separated
text on the command line and lists in TOML. No third-party imports: every stage spec imports this.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from probe.errors import ProbeError

KEY = "probe.setting"
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()  # no command-line default declared
_SAME: Any = object()


@dataclass(frozen=True)
class Setting:
    """What a field means to a user (stored in the field's metadata under :data:`KEY`)."""

    help: str
    unit: str = ""
    name: str | None = None  # public name when it differs from the field's (ModelSpec.name → model)
    flag: str | None = None  # CLI flag declaration when not --public-name (e.g. "--symmetric/--asymmetric")
    aliases: tuple[str, ...] = ()  # further CLI flags (e.g. "-m")
    choices: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    default_text: str | None = None  # what the default means when the code computes it
    parse: Callable[[str], Any] | None = None  # CLI text → value (e.g. "all" → None for layers)
    cli_default: Any = UNSET  # what the command line assumes for a required field


def setting(default: Any = MISSING, help: str = "", *, unit: str = "", name: str | None = None,
            flag: str | None = None, aliases: tuple[str, ...] = (), choices: tuple[Any, ...] = (),
            min: float | None = None, max: float | None = None, default_text: str | None = None,
            parse: Callable[[str], Any] | None = None, cli_default: Any = UNSET) -> Any:
    """A dataclass field with its default, help text and unit (``default`` MISSING: required, then the
    command line uses ``cli_default``)."""
    meta = Setting(help, unit, name, flag, tuple(aliases), tuple(choices), min, max, default_text, parse,
                   cli_default)
    return dataclasses.field(default=default, metadata={KEY: meta})


def like(cls: type, field_name: str, default: Any = _SAME, **changes: Any) -> Any:
    """A field declared as ``cls.field_name`` is (same help, unit, flag), e.g. RecoverSpec.model = ModelSpec.name.

    ``default=MISSING`` makes it required; the command line then assumes the original's default.
    """
    field = _fields(cls)[field_name]
    meta = field.metadata[KEY]
    if default is MISSING and meta.cli_default is UNSET:
        changes.setdefault("cli_default", field.default)
    meta = dataclasses.replace(meta, **changes)
    return dataclasses.field(default=field.default if default is _SAME else default, metadata={KEY: meta})


@dataclass(frozen=True)
class Option:
    """One setting of a command or experiment table: a (possibly nested) field with its public name."""

    name: str  # python parameter and experiment key; the CLI flag is --name-with-dashes
    path: tuple[str, ...]  # field names from the root spec, e.g. ("variant", "model", "dtype")
    type: Any  # the field's resolved type
    default: Any  # MISSING when the field is required
    setting: Setting
    owner: type  # the dataclass that declares the field

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.setting.flag or "--" + self.name.replace("_", "-"), *self.setting.aliases)

    @property
    def flag(self) -> str:
        """The main flag as users read it in messages (``--symmetric/--asymmetric`` → ``--symmetric``)."""
        return self.flags[0].split("/")[0]

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def cli_default(self) -> Any:
        """The command line's default: the field's, or for a required field the declared ``cli_default``."""
        return self.setting.cli_default if self.required else self.default

    @property
    def item_type(self) -> Any:
        """The element type when the field is a tuple (``tuple[str, ...]`` → str), else None."""
        base = strip_optional(self.type)
        return typing.get_args(base)[0] if typing.get_origin(base) is tuple else None

    @property
    def describe(self) -> str:
        """Help text with the unit, the choices and a computed default's meaning."""
        s = self.setting
        text = s.help.rstrip(".") + (f" ({s.unit})" if s.unit else "") + "."
        if s.choices:
            text += " One of: " + ", ".join(map(str, s.choices)) + "."
        if s.default_text:
            text += f" Default: {s.default_text}."
        return text

    def text(self, value: Any) -> str:
        """How a value reads on the command line (tuples comma-separated)."""
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        return str(value)

    def from_text(self, value: Any) -> Any:
        """A CLI value (comma-separated text for tuples) → the field's value."""
        if self.setting.parse is not None and isinstance(value, str):
            if value == self.text(self.cli_default):  # the flag was left out: its default, unparsed
                return self.cli_default
            return self.setting.parse(value)
        item = self.item_type
        if item is None or not isinstance(value, str):
            return value
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            return tuple(item(p) for p in parts)
        except ValueError:
            raise ProbeError(f"bad {self.flag} {value!r}: give comma-separated {item.__name__} values") from None

    def check(self, value: Any, where: str) -> Any:
        """An experiment-file value checked against the field type (lists become tuples)."""
        base = strip_optional(self.type)
        item = self.item_type
        if item is not None:
            if not isinstance(value, list) or not all(_is(v, item) for v in value):
                raise ProbeError(f"{where} = {value!r} has the wrong type: expected a list of {item.__name__}, "
                                 f"e.g. {self.name} = {list(self.default or ()) or ['...']!r}")
            return tuple(float(v) if item is float else v for v in value)
        if not _is(value, base):
            raise ProbeError(f"{where} = {value!r} has the wrong type (expected {_type_name(base)})")
        return float(value) if base is float else value


def strip_optional(tp: Any) -> Any:
    """``X | None`` → ``X``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is(value: Any, tp: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def options(cls: type, *, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> list[Option]:
    """The settings of ``cls``, nested dataclass fields flattened (names as in the module docstring).

    ``skip``/``only`` filter by public name (after flattening, so ``skip=("model_dtype",)`` works).
    """
    found = list(_walk(cls, ()))
    shallowest: dict[str, int] = {}
    for o in found:
        shallowest[o.name] = min(shallowest.get(o.name, len(o.path)), len(o.path))
    found = [dataclasses.replace(o, name=f"{o.path[-2]}_{o.name}") if len(o.path) > shallowest[o.name] else o
             for o in found]
    clashes = {o.name for o in found if [p.name for p in found].count(o.name) > 1}
    if clashes:
        raise TypeError(f"{cls.__name__}: settings {sorted(clashes)} clash; give one a name=")
    return [o for o in found if o.name not in skip and (only is None or o.name in only)]


def _walk(cls: type, prefix: tuple[str, ...]):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _walk(tp, (*prefix, f.name))
        elif KEY in f.metadata:
            meta: Setting = f.metadata[KEY]
            default = f.default if f.default is not MISSING else MISSING
            yield Option(meta.name or f.name, (*prefix, f.name), tp, default, meta, cls)


def build(cls: type, values: Mapping[str, Any], **fields: Any) -> Any:
    """An instance of ``cls`` from values keyed by public name (nested specs built from their part);
    ``fields`` are given as they are (e.g. a whole ``variant=VariantSpec(...)``)."""
    by_name = {o.name: o for o in options(cls)}
    tree: dict[str, Any] = dict(fields)
    for name, value in values.items():
        if name not in by_name:
            raise TypeError(f"{cls.__name__} has no setting {name!r}")
        node = tree
        *head, last = by_name[name].path
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return _make(cls, tree)


def _make(cls: type, tree: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tree.get(f.name, {}), dict) and (
                f.name in tree or f.default is MISSING):
            kwargs[f.name] = _make(tp, tree.get(f.name, {}))
        elif f.name in tree:
            kwargs[f.name] = tree[f.name]
    return cls(**kwargs)


def field_default(cls: type, name: str) -> Any:
    """The declared default of a field (by field name)."""
    return _fields(cls)[name].default


def closest(key: str, known: list[str]) -> str:
    """``; did you mean X?`` for the nearest known name, or ``''``."""
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean {match[0]}?" if match else ""
