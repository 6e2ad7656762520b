"""Command-line options derived from a function's signature, so table-driven commands need no per-kind code.

``irkit index build`` takes each index kind's build options and ``irkit search`` each
retriever's search options this way: a new kind's parameters appear on the command line
with nothing to add here. Parameters are typed from their hints (``int``, ``float``,
``str``, ``bool``, or optional ones); defaults stay the function's own.
"""

from __future__ import annotations

import argparse
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from irkit.errors import IrkitError


def _scalar(hint: Any) -> Any:
    """The command-line type of a hint (``int``, ``float``, ``str``, ``bool``; paths are strings), else None."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for t in (bool, int, float, str):
        if t in args:
            return t
    return str if Path in args else None


def signature_options(func: Callable[..., Any], skip: Iterable[str]) -> dict[str, tuple[Any, Any]]:
    """``name -> (type, default)`` of ``func``'s keyword parameters, minus ``skip``."""
    target = func.__init__ if inspect.isclass(func) else func  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # hints naming TYPE_CHECKING-only types: everything is a string then
        hints = {}
    out = {}
    for p in inspect.signature(func).parameters.values():
        if p.name in skip or p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = _scalar(hints.get(p.name, str))
        if kind is not None:  # a parameter no command line can express (e.g. a callable) is left out
            out[p.name] = (kind, p.default)
    return out


def add_options(
    parser: argparse.ArgumentParser, owners: dict[str, Callable[..., Any]], skip: Iterable[str], what: str
) -> dict[str, set[str]]:
    """Add every owner's options to ``parser`` (one group per owner); returns ``option -> owners``.

    Values the user does not give are absent from the parsed namespace, so each owner
    keeps its own defaults and options of another owner can be refused by name.
    """
    skip = set(skip)
    seen: dict[str, tuple[Any, set[str], argparse.Action]] = {}
    for owner, func in owners.items():
        group = parser.add_argument_group(f"{owner} {what}")
        for name, (kind, default) in signature_options(func, skip).items():
            shown = f"{owner}" + ("" if default is inspect.Parameter.empty else f" (default: {default})")
            if name in seen:  # shared with an earlier owner: listed there, with each owner's default
                if seen[name][0] is not kind:
                    raise IrkitError(f"option --{name} has different types across {what}")
                seen[name][1].add(owner)
                seen[name][2].help = f"{seen[name][2].help}; {shown}"
                continue
            flag = "--" + name.replace("_", "-")
            if kind is bool:
                action = group.add_argument(
                    flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=shown
                )
            else:
                action = group.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, help=shown)
            seen[name] = (kind, {owner}, action)
    return {name: owners_ for name, (_, owners_, _) in seen.items()}


def chosen(args: argparse.Namespace, option_owners: dict[str, set[str]], owner: str) -> dict[str, Any]:
    """The options the user gave, checked to belong to ``owner``."""
    given = {k: v for k, v in vars(args).items() if k in option_owners}
    wrong = sorted(k for k in given if owner not in option_owners[k])
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise IrkitError(f"{flags} do(es) not apply to {owner}")
    return given
