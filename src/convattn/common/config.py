"""Configs as data: one frozen dataclass per command, presets as instances, flags generated.

A config class subclasses `Config` and declares every knob with `option(...)`:

    @dataclass(frozen=True)
    class ClassifyConfig(Config):
        epochs: int = option(15, "training epochs per learning rate")
        threads: int = option(1, "CPU threads", speed=True)

        def check(self):                  # called by __post_init__, on every instance
            require(self.epochs >= 1, self, "epochs", "must be >= 1")

`add_flags(parser, Class, presets)` turns each field into a flag whose help lists every
preset's value, and `from_args(args, presets)` builds the config of `--preset` with the
flags that were given; the instance validates itself (a field with `choices` must hold
one of them, then `check()`), so code that builds configs directly (reproduce, tests) gets
the same checks and the same messages as the CLI.
`run_key()` is the config minus its speed-only fields: two runs with the same key
compute the same numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field, fields

from convattn.common.errors import UserError


def option(default, help: str, *, flag: str | None = None, choices=None, speed: bool = False,
           key: bool | str = True):
    """A config field. `flag`: its command-line name (default --field-name); `speed`: it
    changes how fast the work runs, never its numbers; `key=False`: not part of the run key
    for another reason (what is reported, not what is trained); `key="unless_default"`: in
    the run key only when set to another value than its default (a knob added after runs
    were stored, whose default computes what they computed: they stay valid)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices,
                                            "key": False if speed else key})


def flag_of(cls_or_config, name: str) -> str:
    meta = {f.name: f.metadata for f in fields(cls_or_config)}[name]
    return meta.get("flag") or "--" + name.replace("_", "-")


def require(ok: bool, config, name: str, why: str) -> None:
    """Raise `--flag: why` (a UserError) unless ok."""
    if not ok:
        value = getattr(config, name)   # a switch is named alone: "--nesterov: ..."
        shown = "" if isinstance(value, bool) else " " + _show(value)
        raise UserError(f"{flag_of(config, name)}{shown}: {why}")


@dataclass(frozen=True)
class Config:
    """Base of every command's config: validation, dict round trip, run key."""

    def __post_init__(self):
        for f in fields(self):
            if choices := f.metadata.get("choices"):
                value = getattr(self, f.name)   # a tuple field: each element, as argparse does
                values = value if isinstance(value, tuple) else (value,)
                require(all(v in choices for v in values), self, f.name,
                        f"expected one of {', '.join(map(str, choices))}")
        self.check()

    def check(self) -> None:
        """Raise a UserError naming the flag of the first invalid field."""

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict):
        """The inverse of to_dict; keys this version does not know are ignored."""
        known = {f.name: f for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v
                      for k, v in d.items() if k in known})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def run_key(self) -> dict:
        """The fields a run's numbers depend on (speed-only and report-only fields dropped)."""
        d = self.to_dict()
        return {f.name: d[f.name] for f in fields(self)
                if f.metadata.get("key", True) is True
                or (f.metadata.get("key") == "unless_default" and getattr(self, f.name) != f.default)}


# ------------------------------------------------------------------------ flags

def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _element_type(hint):
    """tuple[float, ...] -> float; int | None -> int; a plain type -> itself."""
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    return _element_type(args[0]) if args else hint


def add_flags(parser: argparse.ArgumentParser, cls, presets: dict, title: str,
              skip: tuple = ()) -> None:
    """One flag per field of `cls` (default None: the preset's value applies); the help
    shows each preset's value."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        meta, hint = f.metadata, hints[f.name]
        kwargs = {"dest": f.name, "default": None,
                  "help": f"{meta.get('help', '')} ({_preset_values(presets, f.name)})"}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _element_type(hint)
            if typing.get_origin(hint) is tuple:
                kwargs.update(nargs="+", metavar=f.name.upper().rstrip("S") or "X")
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        group.add_argument(flag_of(cls, f.name), **kwargs)


def _preset_values(presets: dict, name: str) -> str:
    """Each preset's value of a field, "unset" for None; one value when all agree:
    "homework 8; fast 128; smoke 8", "every preset: unset"."""
    shown = {p: "unset" if getattr(c, name) is None else _show(getattr(c, name))
             for p, c in presets.items()}
    if len(set(shown.values())) == 1:
        return f"every preset: {next(iter(shown.values()))}"
    return "; ".join(f"{p} {v}" for p, v in shown.items())


def from_args(args: argparse.Namespace, presets: dict):
    """The config of args.preset with every flag that was given applied (then validated)."""
    base = presets[args.preset]
    changes = {f.name: getattr(args, f.name) for f in fields(base)
               if getattr(args, f.name, None) is not None}
    return base.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})
